"""allocator.keep_freed_memory: a second XLA call reuses the first one's buffers, no faults."""

import json
import os
import platform
import subprocess
import sys

import pytest

from tcvc_jax import allocator

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
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
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
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(TCVC_MALLOC="jemalloc", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "tcvc_jax.convert", "a.pth", "b"], env=env,
                        capture_output=True, text=True, timeout=120, cwd=REPO)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip() == ("error: TCVC_MALLOC must be 'reuse' or 'system', got "
                                 "'jemalloc'")
