"""allocator.keep_freed_memory: a second XLA call reuses the first one's buffers, no faults."""

import json
import os
import platform
import subprocess
import sys

import pytest

from tcvc_jax import allocator

import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A program whose temporaries (two 64 MB products) are far above glibc's mmap threshold; prints the
# minor page faults of its second call.
_PROBE = """
import json, resource, sys
from tcvc_jax import allocator
applied = allocator.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum((x @ x) @ x))
x = jnp.ones((4096, 4096), jnp.float32) / 4096
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
kept_mb = allocator.resident_bytes() / 2**20
released = allocator.release_freed_memory()
print(json.dumps({"applied": applied, "faults": faults, "kept_mb": kept_mb,
                  "released": released, "after_release_mb": allocator.resident_bytes() / 2**20}))
"""


def _probe(mode):
  env = xla_flags.child_env()
  env.update(TCVC_MALLOC=mode, PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                       timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_second_call_does_not_fault_in_its_buffers():
  system = _probe("system")
  kept = _probe("reuse")
  assert not system["applied"] and kept["applied"]
  # 128 MB of temporaries are 32768 pages: the default allocator faults them all in again.
  assert system["faults"] > 20000, system
  assert kept["faults"] < system["faults"] / 10, (kept, system)
  # The kept buffers (>= 128 MB) go back to the system on request, e.g. before a large subprocess.
  assert kept["released"] and kept["kept_mb"] - kept["after_release_mb"] > 100, kept


def test_bad_mode_is_an_error(monkeypatch):
  monkeypatch.setattr(allocator, "_state", {"applied": None})
  monkeypatch.setenv("TCVC_MALLOC", "jemalloc")
  with pytest.raises(ValueError, match="TCVC_MALLOC"):
    allocator.keep_freed_memory()


def test_tools_refuse_a_bad_mode_with_exit_2():
  env = xla_flags.child_env()
  env.update(TCVC_MALLOC="jemalloc", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "tcvc_jax.convert", "a.pth", "b"], env=env,
                        capture_output=True, text=True, timeout=120, cwd=REPO)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip() == ("error: TCVC_MALLOC must be 'auto', 'reuse' or 'system', got "
                                 "'jemalloc'")


class _FakeMallopt:
  """Records mallopt calls instead of changing this test process's allocator."""

  def __init__(self):
    self.calls = []

  def __call__(self, param, value):
    self.calls.append((param, value))
    return 1


@pytest.mark.parametrize("mode,pixels,applied", [
    ("auto", None, True),                                # unknown size: treated as large
    ("auto", allocator.SMALL_CALL_PIXELS, True),
    ("auto", allocator.SMALL_CALL_PIXELS - 1, False),    # small calls: glibc's default
    ("reuse", 16, True),                                 # forced either way
    ("system", 10**9, False),
])
def test_auto_mode_keeps_freed_memory_only_for_large_calls(monkeypatch, mode, pixels, applied):
  fake = _FakeMallopt()
  monkeypatch.setattr(allocator, "_state", {"applied": None})
  monkeypatch.setattr(allocator, "_glibc_function", lambda name: fake)
  monkeypatch.setenv("TCVC_MALLOC", mode)
  assert allocator.keep_freed_memory(pixels) is applied
  assert bool(fake.calls) is applied
  # Idempotent: the first decision stands (XLA's threads keep the arenas they started with).
  assert allocator.keep_freed_memory(None if not applied else 1) is applied
  assert len(fake.calls) == (3 if applied else 0)


def test_tools_size_their_calls():
  """The CPU demo's small steps keep glibc's default; the paper's step and windows keep memory."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from configs import demo  # pylint: disable=g-import-not-at-top
  from configs import eval as eval_configs  # pylint: disable=g-import-not-at-top
  from tcvc_jax import colorize  # pylint: disable=g-import-not-at-top
  from tcvc_jax import evaluate  # pylint: disable=g-import-not-at-top
  from tcvc_jax import train  # pylint: disable=g-import-not-at-top
  small = allocator.SMALL_CALL_PIXELS
  assert train.step_pixels(demo.get_config()) == 4 * 4 * 32 * 32 < small
  assert train.step_pixels(default.get_config()) == 4 * 12 * 256 * 256
  assert evaluate.window_pixels(eval_configs.get_config()) == 19 * 256 * 256
  multi = eval_configs.get_config("multi")
  assert evaluate.window_pixels(multi) == (max(multi.protocol.ensemble_intervals) + 2) * 256**2
  parser = colorize.build_parser()
  args = lambda *flags: parser.parse_args(["a.mp4", "b.mp4", "--checkpoint", "c", *flags])
  assert colorize.window_pixels(args()) == 19 * 256 * 256
  small_window = args("--size", "64x128", "--interval", "4")
  assert colorize.window_pixels(small_window) == 6 * 64 * 128 < small
  assert colorize.window_pixels(args("--size", "x")) is None
