"""Timing the forms of a convolution (`conv_forms`) fairly: in a child process.

Timed in the process that traces a large program, the forms are not timed fairly. Measured on an
AMD EPYC: once the process had compiled the training state's init program, Winograd's kernel
gradient of 128 -> 128 at 256x256 timed 100-150 ms against 72-81 ms in a fresh process (the nine
products: ~155 ms in both), and four of the training step's eight kernel gradients were given the
nine products although Winograd ran them 1.4-2x faster inside the step itself. So `measure` sends
each request to a child process (started on the first one, closed once idle); where the child
cannot be started, the forms are timed in this process.
"""

import atexit
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax import allocator

MEASURE_IN_CHILD = True  # False: time the forms in this process (tests that fake the timing)
_LOCK = threading.Lock()  # the child's state: a measurement and the idle timer


def time_forms(fns, args, rounds=5):
  """Best wall time of each jitted fn over `rounds` interleaved calls, after a warm-up each.

  Interleaving makes a change in the machine's speed while measuring (a busy neighbour) touch every
  form alike; the best of five rounds (three until forms version 4) lets slow rounds pass.
  """
  fns = {name: jax.jit(fn) for name, fn in fns.items()}
  for f in fns.values():
    jax.block_until_ready(f(*args))
  best = dict.fromkeys(fns, float("inf"))
  for _ in range(rounds):
    for name, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(*args))
      best[name] = min(best[name], time.perf_counter() - t0)
  return best


def _outside_trace(fn, *args):
  """fn(*args) in a fresh thread: JAX's trace state is per thread, so the jitted calls inside run
  for real instead of being staged into the program being traced (which calls this)."""
  result = {}

  def target():
    try:
      result["value"] = fn(*args)
    except BaseException as e:  # pylint: disable=broad-except
      result["error"] = e

  thread = threading.Thread(target=target, name="tcvc-conv-forms")
  thread.start()
  thread.join()
  if "error" in result:
    raise result["error"]
  return result["value"]


def _operands(shapes, dtype):
  """Operands to time the forms on (any values: the speed does not depend on them)."""
  rs = np.random.RandomState(0)
  return tuple(rs.standard_normal(shape).astype(dtype) for shape in shapes)


def _write_message(f, obj):
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  f.write(struct.pack("<Q", len(data)))
  f.write(data)
  f.flush()


def _read_message(f):
  head = f.read(8)
  if len(head) < 8:
    raise EOFError("the measuring process closed its pipe")
  (size,) = struct.unpack("<Q", head)
  data = f.read(size)
  if len(data) < size:
    raise EOFError("the measuring process closed its pipe")
  return pickle.loads(data)  # our own child's reply


class _MeasuringProcess:
  """A child process that times forms in a fresh heap.

  Requests and replies are pickles over its stdin / stdout. It ignores SIGINT (a Ctrl-C is this
  process's to handle) and exits as soon as this process does: it watches a pipe whose write end
  only this process holds. `measure` closes it once no request came for CHILD_IDLE_S seconds.
  """

  def __init__(self):
    alive_r, alive_w = os.pipe()
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # the forms are XLA:CPU's
    # This copy of tcvc_jax first, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    # The replies go to a copy of its stdout; fd 1 then points at stderr, so that nothing else
    # (a library printing while it is imported) can reach the pipe.
    code = ("import os, sys; replies = os.fdopen(os.dup(1), 'wb'); os.dup2(2, 1); "
            "from tcvc_jax.models import form_timing; "
            "form_timing._child_main(int(sys.argv[1]), replies)")
    try:
      self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, "-c", code, str(alive_r)], stdin=subprocess.PIPE,
          stdout=subprocess.PIPE, env=env, pass_fds=(alive_r,))
    finally:
      os.close(alive_r)
    self.alive_w = alive_w

  def time(self, fns, shapes, dtype):
    _write_message(self.proc.stdin, (fns, shapes, jnp.dtype(dtype).name))
    status, value = _read_message(self.proc.stdout)
    if status != "ok":
      raise RuntimeError(f"the measuring process failed: {value}")
    return value

  def close(self):
    try:
      self.proc.stdin.close()
      os.close(self.alive_w)
      self.proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
      self.proc.kill()


def _child_main(alive_fd, replies):
  """The measuring process: times the forms of each request until its parent is gone."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)

  def watch():
    while os.read(alive_fd, 1):
      pass
    os._exit(0)  # the parent has exited (its end of the pipe is closed)

  threading.Thread(target=watch, daemon=True).start()
  allocator.keep_freed_memory()  # as the tools run: a call's buffers are reused, not faulted in
  stdin = sys.stdin.buffer
  while True:
    try:
      fns, shapes, dtype = _read_message(stdin)
    except EOFError:
      return
    try:
      reply = ("ok", time_forms(fns, _operands(shapes, jnp.dtype(dtype))))
    except Exception as e:  # pylint: disable=broad-except
      reply = ("error", f"{type(e).__name__}: {e}")
    _write_message(replies, reply)


# The measuring process of this process: {"process": _MeasuringProcess, "timer": its idle timer,
# "failed": True once it could not run}. Used under _LOCK.
_CHILD = {}
# A trace measures its new shapes in a burst, seconds apart; the child (~0.5-2 GB resident with
# its operands) is then closed, and a later trace starts a new one (~2 s).
CHILD_IDLE_S = 20.0


def _cancel_timer():
  timer = _CHILD.pop("timer", None)
  if timer is not None:
    timer.cancel()


def close_child():
  """Closes the measuring process, if one runs (call it under _LOCK)."""
  _cancel_timer()
  child = _CHILD.pop("process", None)
  if child is not None:
    child.close()


def _close_child_when_idle(child):
  with _LOCK:
    if _CHILD.get("process") is child:
      close_child()


def _measure_in_child(fns, shapes, dtype):
  with _LOCK:
    _cancel_timer()
    if "process" not in _CHILD:
      if not _CHILD.get("atexit"):
        atexit.register(lambda: _CHILD.get("process") and close_child())
        _CHILD["atexit"] = True
      _CHILD["process"] = _MeasuringProcess()
    child = _CHILD["process"]
    try:
      times = child.time(fns, shapes, dtype)
    except BaseException:
      close_child()
      raise
    timer = threading.Timer(CHILD_IDLE_S, _close_child_when_idle, (child,))
    timer.daemon = True
    timer.start()
    _CHILD["timer"] = timer
    return times


def measure(fns, shapes, dtype):
  """Best times of the jitted `fns` on operands of `shapes`: in the measuring child process, or
  in this process where it cannot run."""
  if MEASURE_IN_CHILD and not _CHILD.get("failed"):
    try:
      return _measure_in_child(fns, shapes, dtype)
    except (OSError, EOFError, RuntimeError, pickle.PicklingError) as e:
      _CHILD["failed"] = True
      logging.warning("timing convolution forms in this process (the measuring process: %s)", e)
  return _outside_trace(time_forms, fns, _operands(shapes, dtype))
