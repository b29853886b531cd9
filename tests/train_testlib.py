"""Helpers of the training tests: tiny configs, batches, and train.py runs in subprocesses.

Subprocesses share one persistent XLA compilation cache per test session
(`session_compilation_cache`), so a restarted run does not pay the compile again, and one prepared
`synthetic_clips/tiny` dataset.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

import xla_flags

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)
TRAIN_PY = os.path.join(REPO, "train.py")
TINY = os.path.join(REPO, "configs", "default.py") + ":tiny"
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def tiny_config(**overrides):
  """configs/default.py:tiny with dotted-key overrides."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config("tiny")
  config.update_from_flattened_dict(overrides)
  return config


def random_batch(batch_size, num_frames, size, seed=0):
  """A smooth moving gray clip per example and a colour target, NumPy: {'gray', 'ab'}."""
  rs = np.random.RandomState(seed)
  base = rs.randn(batch_size, size + num_frames, size + num_frames)
  for axis in (1, 2):
    base = (base + np.roll(base, 1, axis) + np.roll(base, -1, axis)) / 3
  base = 0.4 * base / np.abs(base).max()
  gray = np.stack([base[:, :size, t:t + size] for t in range(num_frames)], axis=1)[..., None]
  ab = np.concatenate([0.3 * np.tanh(3 * gray), -0.2 * np.tanh(2 * gray)], axis=-1)
  return {"gray": gray.astype(np.float32), "ab": ab.astype(np.float32)}


def shared_dir(tmp_path_factory, name):
  """A folder shared by all test modules of this session."""
  path = tmp_path_factory.getbasetemp() / name
  path.mkdir(exist_ok=True)
  return str(path)


def prepared_tfds(tmp_path_factory):
  """A TFDS data dir with synthetic_clips/tiny built (once per session)."""
  data_dir = shared_dir(tmp_path_factory, "tcvc_train_tfds")
  from tcvc_jax.data import building as data_building  # pylint: disable=g-import-not-at-top
  data_building.build("synthetic_clips", data_dir, config="tiny")
  return data_dir


def session_compilation_cache():
  """The tools' default compilation cache, in this test session's cache folder (conftest): the
  subprocesses of every test that runs the same program share it."""
  from tcvc_jax import flag_parsing  # pylint: disable=g-import-not-at-top
  return flag_parsing.default_cache_dir()


def subprocess_env(devices=1, cache_dir=None, opt_level=None):
  """Environment of a child process: `devices` fake CPU devices, the shared compile cache, XLA's
  kernels compiled at the session's level or `opt_level` (xla_flags)."""
  env = xla_flags.child_env(devices, opt_level=opt_level)
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env["PYTHONPATH"] = os.pathsep.join([REPO, TESTS_DIR, env.get("PYTHONPATH", "")])
  return env


def train_command(workdir, overrides=None, config=TINY):
  args = [sys.executable, TRAIN_PY, f"--config={config}", f"--workdir={workdir}"]
  return args + [f"--config.{k}={v}" for k, v in (overrides or {}).items()]


def start_train(workdir, overrides=None, *, cache_dir=None, config=TINY, log_name="train",
                opt_level=None):
  """Starts train.py; stdout and stderr go to `<workdir>.<log_name>.log`. Returns the Popen."""
  log = open(f"{workdir}.{log_name}.log", "w")
  return subprocess.Popen(train_command(workdir, overrides, config), stdout=log,
                          stderr=subprocess.STDOUT,
                          env=subprocess_env(cache_dir=cache_dir, opt_level=opt_level),
                          cwd=REPO)


def run_train(workdir, overrides=None, *, cache_dir=None, config=TINY, log_name="train",
              timeout=600, opt_level=None):
  """Runs train.py to the end; returns its log text. Fails the test on a non-zero exit."""
  proc = start_train(workdir, overrides, cache_dir=cache_dir, config=config, log_name=log_name,
                     opt_level=opt_level)
  rc = proc.wait(timeout=timeout)
  text = read_log(workdir, log_name)
  assert rc == 0, f"train.py exited with {rc}:\n{text[-6000:]}"
  return text


def read_log(workdir, log_name="train"):
  with open(f"{workdir}.{log_name}.log") as f:
    return f.read()


def checkpoint_steps(workdir):
  """Finalized checkpoint steps in a workdir (orbax writes into a temporary folder first)."""
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def final_params(workdir, step=None):
  """{path: array} of a workdir's checkpointed params and batch_stats."""
  import jax  # pylint: disable=g-import-not-at-top

  from tcvc_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  variables, _, _ = checkpointing.load_workdir(workdir, step)
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(variables)}


def wait_for(predicate, proc, timeout=300, poll=0.02):
  """Polls `predicate()` until true; fails if `proc` ends first or time runs out."""
  end = time.time() + timeout
  while time.time() < end:
    if predicate():
      return
    if proc.poll() is not None:
      raise AssertionError(f"the process ended (rc {proc.returncode}) before the condition")
    time.sleep(poll)
  proc.send_signal(signal.SIGKILL)
  raise AssertionError("timed out")
