"""Shared fixtures: 8 fake CPU devices and golden checkpoints from the weight formula.

The golden checkpoints are converted once per session.
"""

import os
import shutil
import sys

# The main pytest process sees 8 CPU devices (set before jax is imported), so that sharding code
# runs on a real mesh here; the float64 subprocesses get a clean XLA_FLAGS
# (golden_lib.start_float64_run).
_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import tempfile  # noqa: E402

import pytest  # noqa: E402

# Measured convolution forms go to a file of this test session (its subprocesses inherit the
# variable), not to the user's ~/.cache: a test run neither reads nor changes the user's choices,
# and it costs here what it costs on a fresh CI machine.
if "TCVC_CONV_FORMS_FILE" not in os.environ:
  os.environ["TCVC_CONV_FORMS_FILE"] = os.path.join(
      tempfile.mkdtemp(prefix="tcvc_conv_forms_"), "conv_forms.json")

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS_DIR)

import golden_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


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
  """Starts the float64 golden run (its own process, see golden_lib.start_float64_run).

  Started before the float32 run is computed, so that the two overlap (much of each is
  single-threaded: writing and converting the checkpoints, compiling).
  """
  workdir = tmp_path_factory.mktemp("golden_f64")
  proc = golden_lib.start_float64_run("golden_lib.py", "--workdir", workdir,
                                      "--out", workdir / "errors.json")
  yield proc, workdir
  golden_lib.stop_run(proc)
  shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def golden_errors_f32(golden_f64_run, golden_f32_paths):
  del golden_f64_run  # started first, so that the two runs overlap
  return golden_lib.compute_errors(golden_f32_paths, "float32")


@pytest.fixture(scope="session")
def golden_errors_f64(golden_f64_run):
  proc, workdir = golden_f64_run
  return golden_lib.finish_float64_run(proc, workdir / "errors.json", "golden", timeout=1800)
