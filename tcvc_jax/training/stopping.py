"""Stopping a training run cleanly: a user's request (Ctrl-C, SIGTERM) or a preemption notice.

`RunControl` takes a stop request from any thread (train.py's signal handler); `Preemption` tells
the training loop when to save a checkpoint and return. On one host that is at the next step. In a
multi-host job every process must stop at the same step, or the ones still training wait forever
on the others' collectives: JAX's preemption service agrees on that step (a SIGTERM to any process
is announced to all of them, and `CheckpointManager.reached_preemption` turns true at one step
everywhere), so a request made on one process is handed to that service as a SIGTERM to itself.
A process that fails alone tells the others through the job's key-value store (`FailureWatch`):
they would wait for it in their next collective until the job's shutdown timed out (5 minutes).
A process gone without a word (kill -9, the out-of-memory killer, its host down) is found there too
(its count in the store stands still, or a collective fails for want of it): the others say so and
end at once, not in the job's shutdown barrier, which would wait for it until JAX's heartbeat
timeout and abort.
"""

import itertools
import os
import re
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
_ALIVE_KEY = "tcvc_run_alive/{}/{}"  # run, process: its count (FailureWatch's ring)
_ENDED = "ended"  # the count of a process whose run has ended by itself
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

  A process gone without a word (kill -9, the out-of-memory killer, its host down) is found by the
  next one in the job's order (a ring: each process watches one other, so the store's load does
  not grow with the job's size squared): every process counts up a key of its own in the store
  every `beat_s`; one whose count has stood still for `lost_after_s` is reported as gone, and every
  process ends at once (they waited for it until JAX's heartbeat timeout, ~100 s, and aborted with
  C++ traces). The count runs in a thread of its own, which XLA's compiles and the devices' work
  leave running.
  """

  def __init__(self, grace_s: float = 5.0, poll_s: float = 1.0, beat_s: float = 3.0,
               lost_after_s: float | None = None):
    if lost_after_s is None:
      lost_after_s = sharding.lost_process_timeout()
    run = next(_RUNS)
    self._key = _FAILURE_KEY.format(run)
    self._client = _distributed_client() if jax.process_count() > 1 else None
    self._ended = threading.Event()  # this process's run returned or failed
    self._grace_s, self._poll_s = grace_s, poll_s
    self._beat_s, self._lost_after_s = beat_s, lost_after_s
    index = jax.process_index()
    self._alive_key = _ALIVE_KEY.format(run, index)
    self._watched = (index + 1) % jax.process_count()
    self._watched_key = _ALIVE_KEY.format(run, self._watched)
    self._thread = None
    if self._client is not None:
      self._thread = threading.Thread(target=self._watch, name="tcvc-failure-watch", daemon=True)
      self._thread.start()

  def report(self, error: BaseException) -> None:
    """This process's run failed with `error` (and ends the usual way, unless `error` says that
    another process is gone: then it ends here, see `lost_a_process`)."""
    self._ended.set()
    if self._client is None:
      return
    self._say_ended()
    if isinstance(error, sharding.JobError):
      return
    if lost_a_process(error):
      self._end_after_lost_process(error)
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

  def _end_after_lost_process(self, error):
    """Ends this process at once: a collective failed because another process is gone. One that
    failed or left in order has said so in the store (its word is taken, the watch's message);
    else it went without a word. Not through the job's shutdown barrier: that would wait for the
    lost process until JAX's heartbeat timeout (~100 s) and abort with C++ traces."""
    try:
      value = self._client.blocking_key_value_get(self._key, 2000)
    except Exception:  # pylint: disable=broad-except  # no word from any process
      value = None
    if value is not None:
      text, _ = _told(value)
    else:
      text = ("another process of this job is gone without a word (killed, e.g. by the "
              "out-of-memory killer, or its host is down): a collective of this one failed: "
              f"{cli.one_line(error)}; this process stops too (the checkpoints saved stay)")
    _end_before_the_store(text)

  def close(self) -> None:
    """This process's run ended: the watch ends within `poll_s` (a thread still waiting in the
    store's client when the interpreter exits aborts the process)."""
    self._ended.set()
    if self._client is not None:
      self._say_ended()
    if self._thread is not None and self._thread is not threading.current_thread():
      self._thread.join(self._poll_s + 5)

  def _say_ended(self):
    """This process's run ends by itself: its count stops, and it is not gone."""
    try:
      self._client.key_value_set(self._alive_key, _ENDED, allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except  # the job's store is gone: so is the job
      logging.info("could not tell the job's store that this run ended", exc_info=True)

  def _check_watched(self, beats, seen):
    """Counts this process's key up; reports the watched process as gone when its count has
    stood still for `lost_after_s`. `seen`: [its last count, when it changed (monotonic)]."""
    try:
      self._client.key_value_set(self._alive_key, str(next(beats)), allow_overwrite=True)
      count = self._client.key_value_try_get(self._watched_key)
    except Exception:  # pylint: disable=broad-except  # not counting yet, or the store is gone
      return
    now = time.monotonic()
    if count != seen[0] or count == _ENDED:
      seen[:] = [count, now]
    elif now - seen[1] > self._lost_after_s:
      why = (f"stopped answering {now - seen[1]:.0f} s ago (killed, e.g. by the out-of-memory "
             "killer, or its host is down)")
      logging.error("process %d of this job %s", self._watched, why)
      try:  # every process reads it (this one too): the job ends as when a process leaves
        self._client.key_value_set(self._key, f"{self._watched}\t{why}\t{_LEFT}")
      except Exception:  # pylint: disable=broad-except  # another process reported first
        logging.info("another process of the job reported first")

  def _watch(self):
    beats, seen, next_beat = itertools.count(), [None, 0.0], 0.0
    while not self._ended.is_set():
      t0 = time.monotonic()
      if t0 >= next_beat:
        self._check_watched(beats, seen)
        next_beat = t0 + self._beat_s
      try:
        value = self._client.blocking_key_value_get(self._key, int(self._poll_s * 1000))
        break
      except Exception:  # pylint: disable=broad-except  # timed out (or the job is ending)
        if time.monotonic() - t0 < self._poll_s / 2:
          self._ended.wait(self._poll_s)
    else:
      return
    text, left = _told(value)
    if left and not self._ended.is_set():  # it has gone: nothing to wait for, nor a shutdown
      _end_before_the_store(text)
    if self._ended.wait(self._grace_s):
      return  # this process is ending by itself
    logging.error("%s", text)
    shutdown = threading.Thread(target=_shutdown_quietly, daemon=True)
    shutdown.start()  # the failed process waits for every process in the job's shutdown barrier
    shutdown.join(30)
    cli.fail_now(text)


def _end_before_the_store(text):
  """`cli.fail_now(text)` without the job's shutdown barrier (a process is gone); process 0, which
  serves the job's store, waits a second first, so the others read what they need from it before
  it goes (without it, JAX aborts them)."""
  if jax.process_index() == 0:
    time.sleep(1.0)
  cli.fail_now(text)


def _told(value):
  """(this process's error line, whether the process has left) for a report in the store."""
  process, message, *left = value.split("\t")
  what = message if left else f"failed: {message}"
  return (f"process {process} of this job {what}; this process stops too (the checkpoints saved "
          "stay)"), bool(left)


# What a collective says when a process of the job has gone away (Gloo on CPU, NCCL on GPU).
_LOST_PROCESS = re.compile(
    r"\b(Gloo|NCCL|MPI)\b.*(Connection (reset|closed|refused)|Broken pipe|Socket closed|"
    r"remote process exited|network error)", re.IGNORECASE | re.DOTALL)


def lost_a_process(error: BaseException) -> bool:
  """Whether `error` is a collective's failure because another process of the job is gone."""
  return bool(_LOST_PROCESS.search(str(error)))


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
