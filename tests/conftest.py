"""Shared fixtures: 8 fake CPU devices and golden checkpoints from the weight formula.

The golden checkpoints are converted once per session.
"""

import json
import os
import shutil
import subprocess
import sys

# The main pytest process sees 8 CPU devices (set before jax is imported), so that sharding code
# runs on a real mesh here; subprocesses get a clean XLA_FLAGS from `_clean_env`.
_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import pytest  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS_DIR)

import golden_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def _clean_env(**extra):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


@pytest.fixture(scope="session")
def golden_f32_paths(tmp_path_factory):
  """Formula weights as float32 .pth files (full TCVC, SIGGRAPH17, FlowNet2).

  They are converted with the CLI.
  """
  workdir = tmp_path_factory.mktemp("golden_f32")
  yield golden_lib.prepare_checkpoints(str(workdir), "float32")
  shutil.rmtree(workdir, ignore_errors=True)  # ~3 GB


@pytest.fixture(scope="session")
def golden_f64_run(tmp_path_factory):
  """Starts the float64 golden run: it needs jax x64 from the start, so it is its own process.

  Started before the float32 run is computed, so that the two overlap (much of each is
  single-threaded: writing and converting the checkpoints, compiling).
  """
  workdir = tmp_path_factory.mktemp("golden_f64")
  out = workdir / "errors.json"
  proc = subprocess.Popen(
      [sys.executable, os.path.join(TESTS_DIR, "golden_lib.py"), "--dtype", "float64",
       "--workdir", str(workdir), "--out", str(out)],
      env=_clean_env(JAX_ENABLE_X64="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  yield proc, workdir
  if proc.poll() is None:
    proc.kill()
    proc.wait()
  shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def golden_errors_f32(golden_f64_run, golden_f32_paths):
  del golden_f64_run  # started first, so that the two runs overlap
  return golden_lib.compute_errors(golden_f32_paths, "float32")


@pytest.fixture(scope="session")
def golden_errors_f64(golden_f64_run):
  proc, workdir = golden_f64_run
  log, _ = proc.communicate(timeout=1800)
  if proc.returncode:
    raise RuntimeError(f"float64 golden run failed:\n{log[-5000:]}")
  return json.loads((workdir / "errors.json").read_text())
