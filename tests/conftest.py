"""Shared fixtures: 8 fake CPU devices and golden checkpoints from the weight formula.

The golden checkpoints are converted once per session.
"""

import atexit
import os
import shutil
import sys

# The main pytest process sees 8 CPU devices (set before jax is imported), so that sharding code
# runs on a real mesh here; every process of the session compiles XLA's kernels at the level
# tests/xla_flags.py sets (LLVM's level 0: the suite is mostly compiling), and the processes
# tests start get one device unless they ask for more (xla_flags.child_env).
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS_DIR)
import xla_flags  # noqa: E402

_FLAGS = xla_flags.flags(devices=8)
if _FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()

import tempfile  # noqa: E402

import pytest  # noqa: E402

# The tools keep compiled programs and measured convolution forms in the user's cache folder,
# $XDG_CACHE_HOME/tcvc_jax. This session and its subprocesses use a folder of their own, removed
# at the end: a test run neither reads nor changes the user's files, a test costs here what it
# costs on a fresh machine, and a program that one test's subprocess compiled is read by the next
# (the tiny train step of cli_test, install_test and train_faults_test). Tests that need a cold
# cache or a folder of their own set one. Under pytest-xdist (`-n 2`, as README.md runs the suite)
# the main process makes the folder and its workers, which inherit its environment, share it.
# Its maker removes it when it exits, after the session and its workers, and also when no session
# ran (an import below failed, a usage error).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set in xdist's worker processes only
if _WORKER is None or "TCVC_TEST_CACHE_HOME" not in os.environ:
  os.environ["TCVC_TEST_CACHE_HOME"] = tempfile.mkdtemp(prefix="tcvc_test_cache_")
  atexit.register(shutil.rmtree, os.environ["TCVC_TEST_CACHE_HOME"], ignore_errors=True)
_CACHE_HOME = os.environ["TCVC_TEST_CACHE_HOME"]
os.environ["XDG_CACHE_HOME"] = _CACHE_HOME
# Every program is kept, however quick its compile (the tools keep those of 0.5 s and more): the
# suite's processes start the same tools again and again, and the quick compiles add up (two CLI
# modules, 2026-12-08, AVX2-only AMD EPYC: 147-157 s against 164-178 s).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from tcvc_jax import flag_parsing  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position

# This process caches its compiled programs there too, from the start, as the tools do by default
# (a test that runs a tool's main() in-process turned it on halfway through before): a program that
# several tests compile (the same model, shapes and forms) is compiled once per session.
flag_parsing.enable_compilation_cache(flag_parsing.default_cache_dir())

import golden_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

# The float64 runs (their own processes, minutes each) that the selected tests need, started where
# this process has a core to spare: the golden run while the float32 checkpoints are written and
# converted (single-threaded), the training run while this process waits for the golden run.
# (Started together at collection, they slowed the tests they overlapped more than they saved:
# 1164 s against 1120 s for the suite on 2 cores.)
_FLOAT64_RUNS = {
    # name: (the fixture whose tests need it, tests/ script, its arguments given the run's folder)
    "golden": ("golden_errors_f64", "golden_lib.py",
               lambda d: ("--out", os.path.join(d, "errors.json"))),
    "train": ("train_f64_errors", "train_golden_lib.py",
              lambda d: ("--out", os.path.join(d, "errors.json"))),
}
_NEEDED = set()  # names of the runs the collected tests need
_STARTED = {}  # name -> (process, folder)


def pytest_collection_finish(session):
  if session.config.option.collectonly:
    return
  fixtures = set()
  for item in session.items:
    fixtures.update(getattr(item, "fixturenames", ()))
  _NEEDED.update(name for name, (fixture, _, _) in _FLOAT64_RUNS.items() if fixture in fixtures)


# pytest-xdist: how the suite is split between worker processes. A test module is one unit of
# work (its module-scoped fixtures are built once), and the modules that share the golden session
# fixtures (the float32 checkpoints, ~70 s to write and convert, and the two float64 runs) are one
# unit, so that no fixture is built twice. The longest units are handed out first.
_GOLDEN_UNIT = ("convert_test.py", "golden_test.py", "hints_golden_test.py",
                "train_golden_test.py")
# cli_test.py compiles the tiny train step that install_test.py and train_faults_test.py then read
# from the session's compilation cache.
_LONGEST_FIRST = ("golden", "train_demo_test.py", "guidance_test.py", "models_test.py",
                  "cli_test.py", "cli_usage_test.py", "train_multihost_test.py", "api_test.py",
                  "sharding_test.py", "train_lib_test.py", "install_test.py",
                  "train_faults_test.py", "evaluator_test.py", "evaluator_errors_test.py")


def _work_unit(nodeid):
  module = os.path.basename(nodeid.split("::", 1)[0])
  return "golden" if module in _GOLDEN_UNIT else module


def pytest_collection_modifyitems(config, items):
  del config
  if _WORKER is not None:  # every worker collects alike; the main process schedules in this order
    rank = {unit: i for i, unit in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_work_unit(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class ModuleScheduling(LoadScopeScheduling):

    def _split_scope(self, nodeid):
      return _work_unit(nodeid)

  config.option.loadscopereorder = False  # keep the order above, not "most tests first"
  return ModuleScheduling(config, log)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  for proc, workdir in _STARTED.values():
    golden_lib.stop_run(proc)
    shutil.rmtree(workdir, ignore_errors=True)
  _STARTED.clear()


def float64_run(name):
  """(process, folder) of the float64 run `name`, started now unless it already is."""
  if name not in _STARTED:
    _, script, args = _FLOAT64_RUNS[name]
    workdir = tempfile.mkdtemp(prefix=f"tcvc_{name}_f64_")
    _STARTED[name] = (golden_lib.start_float64_run(script, *args(workdir)), workdir)
  return _STARTED[name]


def _start_if_needed(name):
  if name in _NEEDED:
    float64_run(name)


@pytest.fixture(autouse=True)
def _log_levels_as_they_were():
  """A tool's main() run in the test process sets the log levels for its run (colorize: absl at
  ERROR): they are put back after each test, so that a later test in this worker sees warnings."""
  import logging  # pylint: disable=g-import-not-at-top

  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  names = (*flag_parsing.QUIETED_LOGGERS, flag_parsing.NON_FINITE_LOGGER)
  levels = {name: logging.getLogger(name).level for name in names}
  verbosity = absl_logging.get_verbosity()
  yield
  absl_logging.set_verbosity(verbosity)
  for name, level in levels.items():
    logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="session")
def golden_f32_paths(tmp_path_factory):
  """Formula weights as float32 .pth files (full TCVC, SIGGRAPH17, FlowNet2).

  They are converted with the CLI.
  """
  _start_if_needed("golden")
  workdir = tmp_path_factory.mktemp("golden_f32")
  yield golden_lib.prepare_checkpoints(str(workdir), "float32")
  shutil.rmtree(workdir, ignore_errors=True)  # ~3 GB


@pytest.fixture(scope="session")
def golden_f64_run():
  """The float64 golden run: golden_lib.py in float64 (see golden_lib.start_float64_run)."""
  return float64_run("golden")


@pytest.fixture(scope="session")
def golden_errors_f32(golden_f32_paths):  # which starts the float64 run if it is needed
  return golden_lib.compute_errors(golden_lib.ConvertedWeights(golden_f32_paths), "float32")


@pytest.fixture(scope="session")
def golden_errors_f64(golden_f64_run):
  proc, workdir = golden_f64_run
  _start_if_needed("train")  # while this process waits
  return golden_lib.finish_float64_run(proc, os.path.join(workdir, "errors.json"), "golden",
                                       timeout=1800)


@pytest.fixture(scope="session")
def start_train_f64():
  """Starts the float64 training golden run if the collected tests need it."""
  _start_if_needed("train")


@pytest.fixture(scope="session")
def train_f64_run():
  """The float64 training golden run: train_golden_lib.py in float64."""
  return float64_run("train")


@pytest.fixture(scope="session")
def train_f64_errors(train_f64_run):
  proc, workdir = train_f64_run
  return golden_lib.finish_float64_run(proc, os.path.join(workdir, "errors.json"),
                                       "training golden", timeout=1200)
