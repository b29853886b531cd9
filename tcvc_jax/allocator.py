"""Keep freed memory in the process, so that XLA:CPU's per-call buffers do not fault in every call.

XLA:CPU allocates each execution's temporaries as one block (12 GB for the full-size training
step, ~2.3 GB for a 19-frame 256x256 window) from one of its worker threads and frees it at the
end. glibc serves a block that large with a fresh mmap and returns it with munmap, so every call
touches all of it anew: 3.8 million page faults and ~17 s of kernel time per training step on a
2-vCPU machine (~15 % of its CPU time), 580 thousand per window.

`keep_freed_memory()` asks glibc (`mallopt`) to serve every thread from the main arena, never to
use mmap for large blocks and never to give freed memory back; the block is then reused by the
next call without a fault (measured: 0 faults per step or window, kernel time 17 s -> 1 s per
step). The price: the process keeps its peak memory until it exits, which suits the tools (one
job per process), and every thread shares the one arena. XLA's threads then wait on each other's
mallocs: compiles take ~10-40 % longer, and calls on small shapes, whose few faults cost less than
that, run slower too (the CPU demo's training step 0.088 s against 0.071 s, its whole run 236 s
against 191 s; 2026-12-05, AMD EPYC). So under `TCVC_MALLOC=auto` (the default) a tool that
knows its calls are small (`pixels_per_call` below `SMALL_CALL_PIXELS`) leaves glibc as it is;
`TCVC_MALLOC=reuse` or `system` forces either way. The command-line tools and the benchmarks call
it first; a library user may call it before the first computation. `release_freed_memory()`
gives the free pages back to the system (e.g. before starting another large process: a benchmark
that ran the 12 GB training step and then started the original's 14 GB one was killed for memory
on a 24 GB machine). It does nothing where the C library is not glibc.
"""

import contextlib
import ctypes
import os
import platform
import threading

# mallopt parameters (glibc <malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_M_PERTURB = -6

_state = {"applied": None, "filling": 0}
_FILL_LOCK = threading.Lock()


def _glibc_function(name):
  """The C library's function `name` where the C library is glibc on Linux, else None."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  try:
    return getattr(ctypes.CDLL(None), name)
  except (OSError, AttributeError):
    return None


# Calls on fewer input pixels (frames x height x width over the batch) than this run as fast or
# faster with glibc's default allocator. Measured on the CPU demo's training step (batch 4, 4
# frames; 2026-12-05, AMD EPYC): 32x32 crops (16 k pixels) 0.071 against 0.088 s per step kept,
# 64x64 (65 k) 0.31 against 0.34 s, 128x128 (262 k) 1.42 against 1.31 s.
SMALL_CALL_PIXELS = 2**17

MODES = ("auto", "reuse", "system")


def keep_freed_memory(pixels_per_call: int | None = None) -> bool:
  """Configures glibc malloc as described above; returns whether it was applied (idempotent).

  Call it before the first JAX computation: XLA's threads pick their malloc arena at their first
  allocation, and a thread that already has its own arena keeps it.

  Args:
    pixels_per_call: the input pixels of the job's largest compiled call (frames x height x width,
      summed over the batch), where the caller knows them; None: unknown (treated as large).
      Under TCVC_MALLOC=auto, a job below `SMALL_CALL_PIXELS` keeps glibc's default.

  Raises:
    ValueError: TCVC_MALLOC is not one of `MODES`.
  """
  if _state["applied"] is not None:
    return _state["applied"]
  mode = os.environ.get("TCVC_MALLOC", "auto").strip().lower() or "auto"
  if mode not in MODES:
    raise ValueError("TCVC_MALLOC must be " + ", ".join(f"'{m}'" for m in MODES[:-1])
                     + f" or '{MODES[-1]}', got {mode!r}")
  _state["applied"] = False
  if mode == "auto":
    small = pixels_per_call is not None and pixels_per_call < SMALL_CALL_PIXELS
    mode = "system" if small else "reuse"
  mallopt = _glibc_function("mallopt") if mode == "reuse" else None
  if mallopt is None:
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  # Every mallopt returns 1 on success. -1 as the trim threshold switches trimming off.
  ok = (mallopt(_M_ARENA_MAX, 1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
        and mallopt(_M_TRIM_THRESHOLD, -1) == 1)
  _state["applied"] = ok
  return ok


def release_freed_memory() -> bool:
  """Returns the process's free heap pages to the system (glibc `malloc_trim`).

  Frees nothing that is in use: arrays still referenced stay, and the next large call faults its
  buffers in again. Returns whether any memory was released (False where the C library is not
  glibc).
  """
  trim = _glibc_function("malloc_trim")
  if trim is None:
    return False
  trim.argtypes = (ctypes.c_size_t,)
  trim.restype = ctypes.c_int
  return trim(0) == 1


def resident_bytes() -> int:
  """This process's resident memory now, in bytes (0 where /proc is missing)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return 0


@contextlib.contextmanager
def filled_allocations(byte: int = 0xA5):
  """While it runs, glibc fills every block it hands out (and every block freed) with fixed bytes.

  For encoders that read memory they never wrote: libx264 as PyAV's FFmpeg runs it (its lookahead
  with B-frames and macroblock-tree rate control) made different videos of the same frames, from
  whatever earlier allocations had left in its buffers (measured 2026-12-06: 3-5 different files in
  5 encodes of one 320x240 clip; with the blocks filled, one). Each allocation and free inside
  costs one write of its block. Does nothing where the C library is not glibc, or where
  MALLOC_PERTURB_ or the glibc.malloc.perturb tunable already fills blocks (left as set).
  """
  mallopt = None
  if not (os.environ.get("MALLOC_PERTURB_")
          or "glibc.malloc.perturb" in os.environ.get("GLIBC_TUNABLES", "")):
    mallopt = _glibc_function("mallopt")
  if mallopt is not None:
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    with _FILL_LOCK:
      _state["filling"] += 1
      if _state["filling"] == 1:
        mallopt(_M_PERTURB, byte)
  try:
    yield
  finally:
    if mallopt is not None:
      with _FILL_LOCK:
        _state["filling"] -= 1
        if not _state["filling"]:
          mallopt(_M_PERTURB, 0)
