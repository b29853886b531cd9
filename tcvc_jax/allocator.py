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
job per process). The command-line tools and the benchmarks call it first; a library user may call
it before the first computation. `release_freed_memory()` gives the free pages back to the system
(e.g. before starting another large process: a benchmark that ran the 12 GB training step and then
started the original's 14 GB one was killed for memory on a 24 GB machine). `TCVC_MALLOC=system`
leaves the allocator as it is. It does nothing where the C library is not glibc.
"""

import ctypes
import os
import platform

# mallopt parameters (glibc <malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_state = {"applied": None}


def _glibc_function(name):
  """The C library's function `name` where the C library is glibc on Linux, else None."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  try:
    return getattr(ctypes.CDLL(None), name)
  except (OSError, AttributeError):
    return None


def keep_freed_memory() -> bool:
  """Configures glibc malloc as described above; returns whether it was applied (idempotent).

  Call it before the first JAX computation: XLA's threads pick their malloc arena at their first
  allocation, and a thread that already has its own arena keeps it.
  """
  if _state["applied"] is not None:
    return _state["applied"]
  _state["applied"] = False
  mode = os.environ.get("TCVC_MALLOC", "reuse").strip().lower() or "reuse"
  if mode not in ("reuse", "system"):
    raise ValueError(f"TCVC_MALLOC must be 'reuse' or 'system', got {mode!r}")
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
