"""Stopping a training run cleanly: a user's request (Ctrl-C, SIGTERM) or a preemption notice.

`RunControl` takes a stop request from any thread (train.py's signal handler); `Preemption` tells
the training loop when to save a checkpoint and return. On one host that is at the next step. In a
multi-host job every process must stop at the same step, or the ones still training wait forever
on the others' collectives: JAX's preemption service agrees on that step (a SIGTERM to any process
is announced to all of them, and `CheckpointManager.reached_preemption` turns true at one step
everywhere), so a request made on one process is handed to that service as a SIGTERM to itself.
A process that fails alone tells the others through the job's key-value store (`FailureWatch`):
they would wait for it in their next collective until the job's shutdown timed out (5 minutes).
"""

import itertools
import os
import signal
import threading
import time

from absl import logging
import jax

from tcvc_jax import cli
from tcvc_jax.training import sharding


class RunControl:
  """Lets a signal handler stop training: `request_stop()` from any thread.

  Once the loop runs, a stop request makes it save a checkpoint after the current step and return;
  before that (data, init, XLA compilation) there is nothing to save, and `request_stop` returns
  False so that the caller ends the process at once. Not in a multi-host job: a process that ends
  alone leaves the others waiting for it, so there the request is taken at the first step (every
  process saves it and returns), and `request_stop` returns True.
  """

  def __init__(self):
    self._stop = threading.Event()
    self._looping = threading.Event()
    self._in_job = threading.Event()
    self._on_loop = []
    self._on_end = []

  def joined_job(self) -> None:
    """Says that this run is one process of a multi-host job."""
    self._in_job.set()

  def on_started_loop(self, fn) -> None:
    """Calls `fn()` when the loop starts (after the first step)."""
    self._on_loop.append(fn)

  def on_end_at_once(self, fn) -> None:
    """Calls `fn()` when the process is about to end at once (a second signal)."""
    self._on_end.append(fn)

  def ending_at_once(self) -> None:
    """The process ends now, without saving (from the signal path: `fn`s must be quick)."""
    for fn in self._on_end:
      try:
        fn()
      except Exception:  # pylint: disable=broad-except  # ending anyway
        logging.info("a callback before ending at once failed", exc_info=True)

  def request_stop(self) -> bool:
    self._stop.set()
    return self._looping.is_set() or self._in_job.is_set()

  def started_loop(self) -> None:
    for fn in self._on_loop:
      fn()
    self._looping.set()

  @property
  def stop_requested(self) -> bool:
    return self._stop.is_set()


class Preemption:
  """Tells the loop to save and stop: a RunControl request, SIGTERM, or a JAX preemption notice."""

  def __init__(self, mngr, control):
    self._mngr = mngr
    self._control = control
    self._signalled = False
    self._previous = None
    self._announced = False
    self._multihost = jax.process_count() > 1
    in_main = threading.current_thread() is threading.main_thread()
    if not self._multihost and in_main:  # multi-host jobs use JAX's preemption service
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame):
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    if not self._multihost:
      return (self._signalled or self._control.stop_requested
              or self._mngr.reached_preemption(step))
    if self._control.stop_requested and not self._announced:
      self._announced = True
      if jax.config.jax_enable_preemption_service:
        logging.info("stop requested on process %d: announced to the job as a preemption",
                     jax.process_index())
        os.kill(os.getpid(), signal.SIGTERM)  # JAX's handler: every process learns of it
      else:
        logging.warning("stop requested, but JAX's preemption service is off "
                        "(jax_enable_preemption_service): the other processes are not told")
    return self._mngr.reached_preemption(step)

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


_FAILURE_KEY = "tcvc_run_failure/{}"
_LEFT = "left"  # the third field of a report by a process that has gone (report_leaving)
_RUNS = itertools.count()  # runs in this process (the same count on every process of a job)


class FailureWatch:
  """A multi-host run's failure on one process, told to every process of the job.

  A process whose run fails (an error its host alone sees: a file it cannot read, a disk of its
  own, memory) writes it into the job's key-value store, `report`. The others, which wait for it
  in their next collective, are ended by a thread that watches that key: with one line naming the
  process and its error, exit 1, after they leave the job's shutdown barrier together with it.
  Errors every process raises by itself (e.g. the same non-finite loss, or a `sharding.JobError`)
  end them the usual way: a process that reports or ends its run within `grace_s` of another's
  report is left to it. Single-process runs (and a JAX without the store) watch nothing.
  """

  def __init__(self, grace_s: float = 5.0, poll_s: float = 1.0):
    self._key = _FAILURE_KEY.format(next(_RUNS))
    self._client = _distributed_client() if jax.process_count() > 1 else None
    self._ended = threading.Event()  # this process's run returned or failed
    self._grace_s, self._poll_s = grace_s, poll_s
    self._thread = None
    if self._client is not None:
      self._thread = threading.Thread(target=self._watch, name="tcvc-failure-watch", daemon=True)
      self._thread.start()

  def report(self, error: BaseException) -> None:
    """This process's run failed with `error` (and ends the usual way)."""
    self._ended.set()
    if self._client is None or isinstance(error, sharding.JobError):
      return
    try:
      self._client.key_value_set(self._key, f"{jax.process_index()}\t{cli.one_line(error)}")
    except Exception:  # pylint: disable=broad-except  # another process reported first
      logging.info("another process of the job reported its failure first")

  def report_leaving(self, why: str) -> None:
    """This process ends now, outside the job's order (`why`, e.g. "was stopped at once by a second
    signal"): the others end at once too, instead of waiting for it until JAX's heartbeat timeout
    and aborting. Returns within ~2 s, having given the others time to read it."""
    self._ended.set()
    if self._client is None:
      return
    value = f"{jax.process_index()}\t{why}\t{_LEFT}"
    done = threading.Event()

    def tell():
      try:
        self._client.key_value_set(self._key, value)
      except Exception:  # pylint: disable=broad-except  # another process reported first
        logging.info("another process of the job reported first")
      done.set()

    threading.Thread(target=tell, daemon=True).start()
    if done.wait(1.5) and jax.process_index() == 0:
      time.sleep(0.5)  # the others read it (they wait on the key) before the store, served by
      # process 0, is gone

  def close(self) -> None:
    """This process's run ended: the watch ends within `poll_s` (a thread still waiting in the
    store's client when the interpreter exits aborts the process)."""
    self._ended.set()
    if self._thread is not None and self._thread is not threading.current_thread():
      self._thread.join(self._poll_s + 5)

  def _watch(self):
    while not self._ended.is_set():
      t0 = time.monotonic()
      try:
        value = self._client.blocking_key_value_get(self._key, int(self._poll_s * 1000))
        break
      except Exception:  # pylint: disable=broad-except  # timed out (or the job is ending)
        if time.monotonic() - t0 < self._poll_s / 2:
          self._ended.wait(self._poll_s)
    else:
      return
    process, message, *left = value.split("\t")
    if left and not self._ended.is_set():  # it has gone: nothing to wait for, nor a shutdown
      if jax.process_index() == 0:
        time.sleep(1.0)  # it ends first: without the job's store, served here, it would abort
      cli.fail_now(f"process {process} of this job {message}; this process stops too (the "
                   "checkpoints saved stay)")
    if self._ended.wait(self._grace_s):
      return  # this process is ending by itself
    text = (f"process {process} of this job failed: {message}; this process stops too (the "
            "checkpoints saved stay)")
    logging.error("%s", text)
    shutdown = threading.Thread(target=_shutdown_quietly, daemon=True)
    shutdown.start()  # the failed process waits for every process in the job's shutdown barrier
    shutdown.join(30)
    cli.fail_now(text)


def _distributed_client():
  """The job's coordination-service client (JAX has no public handle; Orbax uses the same)."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    return distributed.global_state.client
  except (ImportError, AttributeError):
    logging.warning("this JAX has no distributed client: a process failing alone leaves the "
                    "others waiting for the job's shutdown timeout")
    return None


def _shutdown_quietly():
  try:
    jax.distributed.shutdown()
  except Exception:  # pylint: disable=broad-except  # ending anyway
    logging.info("jax.distributed.shutdown failed", exc_info=True)
