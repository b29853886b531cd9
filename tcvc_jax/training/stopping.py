"""Stopping a training run cleanly: a user's request (Ctrl-C, SIGTERM) or a preemption notice.

`RunControl` takes a stop request from any thread (train.py's signal handler); `Preemption` tells
the training loop when to save a checkpoint and return. On one host that is at the next step. In a
multi-host job every process must stop at the same step, or the ones still training wait forever
on the others' collectives: JAX's preemption service agrees on that step (a SIGTERM to any process
is announced to all of them, and `CheckpointManager.reached_preemption` turns true at one step
everywhere), so a request made on one process is handed to that service as a SIGTERM to itself.
"""

import os
import signal
import threading

from absl import logging
import jax


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

  def joined_job(self) -> None:
    """Says that this run is one process of a multi-host job."""
    self._in_job.set()

  def on_started_loop(self, fn) -> None:
    """Calls `fn()` when the loop starts (after the first step)."""
    self._on_loop.append(fn)

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
