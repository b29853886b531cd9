"""Fault tolerance of train.py: kill -9 and restart, SIGTERM, a damaged latest checkpoint.

Every run is a real `python train.py` process on configs/default.py:tiny; runs share a
persistent compilation cache, so restarts skip the compile.
"""

import json
import os
import shutil
import signal
import socket

import numpy as np
import pytest

import train_testlib

STEPS = 40


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  return {"tfds": train_testlib.prepared_tfds(tmp_path_factory),
          "cache": train_testlib.session_compilation_cache()}  # cli_test's and install_test's


def _overrides(env, **extra):
  overrides = {"data.data_dir": env["tfds"], "num_train_steps": STEPS,
               "checkpoint_every_steps": 4, "log_every_steps": 4}
  overrides.update(extra)
  return overrides


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
  """An uninterrupted run of STEPS steps."""
  workdir = str(tmp_path_factory.mktemp("faults") / "reference")
  train_testlib.run_train(workdir, _overrides(env), cache_dir=env["cache"])
  assert train_testlib.checkpoint_steps(workdir)[-1] == STEPS
  return workdir


def _assert_same_params(workdir, reference):
  got, want = train_testlib.final_params(workdir), train_testlib.final_params(reference)
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_kill_9_then_restart_gives_identical_params(env, reference, tmp_path):
  workdir = str(tmp_path / "killed")
  proc = train_testlib.start_train(workdir, _overrides(env), cache_dir=env["cache"])
  train_testlib.wait_for(lambda: any(s >= 8 for s in train_testlib.checkpoint_steps(workdir)),
                         proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  killed_at = train_testlib.checkpoint_steps(workdir)[-1]
  assert killed_at < STEPS, "the run ended before it could be killed"
  assert os.path.exists(os.path.join(workdir, ".train.lock"))  # left unlocked by the killed run
  log = train_testlib.run_train(workdir, _overrides(env), cache_dir=env["cache"],
                                log_name="restart")
  assert "resumed from the checkpoint at step" in log
  assert train_testlib.checkpoint_steps(workdir)[-1] == STEPS
  _assert_same_params(workdir, reference)
  # A run that ends removes its lock file (it used to stay in every workdir).
  assert not os.path.exists(os.path.join(workdir, ".train.lock"))
  assert not os.path.exists(os.path.join(reference, ".train.lock"))


def test_sigterm_saves_at_the_next_step_and_exits_0(env, tmp_path):
  workdir = str(tmp_path / "sigterm")
  overrides = _overrides(env, num_train_steps=100_000, checkpoint_every_steps=100_000,
                         log_every_steps=3)
  proc = train_testlib.start_train(workdir, overrides, cache_dir=env["cache"])
  metrics_file = os.path.join(workdir, "metrics.jsonl")
  train_testlib.wait_for(
      lambda: os.path.exists(metrics_file) and len(train_testlib.metrics(workdir)) >= 3, proc)
  # A second train.py in the same workdir stops at once: it would resume from the first one's
  # checkpoints and interleave its own with them.
  second = train_testlib.start_train(workdir, overrides, cache_dir=env["cache"], log_name="second")
  assert second.wait(timeout=120) == 1
  errors = [line for line in train_testlib.read_log(workdir, "second").splitlines()
            if "error:" in line]
  assert errors == [f"error: {workdir} is in use by another train.py (pid {proc.pid} on "
                    f"{socket.gethostname()}); wait for it to end, or use another --workdir"]
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0
  assert not os.path.exists(os.path.join(workdir, ".train.lock"))
  logged = train_testlib.metrics(workdir)[-1]["step"]
  saved = train_testlib.checkpoint_steps(workdir)[-1]
  # Saved at the step boundary right after the signal, and the steps since the last logging
  # interval are logged then (they were lost: the summary had no train loss after a resume).
  assert saved == logged < 100_000
  assert "  train loss " in train_testlib.read_log(workdir)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(saved), "data_iter"))
  assert f"saved the checkpoint at step {saved}" in train_testlib.read_log(workdir)


def test_truncated_latest_checkpoint_resumes_from_the_previous_one(env, reference, tmp_path):
  workdir = str(tmp_path / "truncated")
  shutil.copytree(reference, workdir)
  steps = train_testlib.checkpoint_steps(workdir)
  latest, previous = steps[-1], steps[-2]
  state_dir = os.path.join(workdir, "checkpoints", str(latest), "state")
  files = [os.path.join(d, f) for d, _, fs in os.walk(state_dir) for f in fs]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)
  log = train_testlib.run_train(workdir, _overrides(env), cache_dir=env["cache"],
                                log_name="resume")
  assert f"checkpoint at step {latest}" in log and "unreadable" in log
  assert f"resumed from the checkpoint at step {previous}" in log
  assert "settings that differ" not in log  # the same config: config.json as it was
  assert not [n for n in os.listdir(workdir) if n.startswith("config.until")]
  # Steps previous+1 .. latest are trained again, exactly as the first time.
  assert train_testlib.checkpoint_steps(workdir)[-1] == latest
  _assert_same_params(workdir, reference)
  # ... and logged once: the first run's records after the resumed step are dropped.
  logged = lambda w: [(m["step"], m["train/loss"]) for m in train_testlib.metrics(w)]
  assert logged(workdir) == logged(reference)


def test_a_resume_with_another_model_changes_nothing(env, reference, tmp_path):
  workdir = str(tmp_path / "other_model")
  shutil.copytree(reference, workdir)
  before = {name: open(os.path.join(workdir, name), "rb").read()
            for name in ("model.json", "config.json", "metrics.jsonl")}
  listing = sorted(os.listdir(os.path.join(workdir, "tensorboard")))
  proc = train_testlib.start_train(workdir, _overrides(env, **{"model.l_features": 8}),
                                   cache_dir=env["cache"])
  assert proc.wait(timeout=600) == 1
  log = train_testlib.read_log(workdir)
  errors = [line for line in log.splitlines() if "error:" in line]
  assert len(errors) == 1 and errors[0].startswith(
      f"error: {workdir} holds a run of another model (l_features: 4 there, 8 in this config)")
  assert "unreadable" not in log  # found before any checkpoint is tried
  for name, data in before.items():  # the workdir still describes its checkpoints
    assert open(os.path.join(workdir, name), "rb").read() == data, name
  assert sorted(os.listdir(os.path.join(workdir, "tensorboard"))) == listing


def test_a_resume_with_changed_settings_says_so_and_keeps_the_old_config(env, reference,
                                                                         tmp_path):
  workdir = str(tmp_path / "changed")
  shutil.copytree(reference, workdir)
  with open(os.path.join(workdir, "config.json"), "rb") as f:
    before = f.read()
  log = train_testlib.run_train(
      workdir, _overrides(env, num_train_steps=STEPS + 4, **{"optim.learning_rate": 3e-4}),
      cache_dir=env["cache"])
  assert f"resumed from the checkpoint at step {STEPS}" in log
  assert (f"resumed at step {STEPS} with settings that differ from this run's: num_train_steps: "
          f"{STEPS} -> {STEPS + 4}; optim.learning_rate: ") in log
  assert f"-> 0.0003 (the previous config.json is kept as config.until_step_{STEPS}.json)" in log
  with open(os.path.join(workdir, f"config.until_step_{STEPS}.json"), "rb") as f:
    assert f.read() == before  # the record of steps 1 .. STEPS
  with open(os.path.join(workdir, "config.json")) as f:
    now = json.load(f)
  assert now["num_train_steps"] == STEPS + 4 and now["optim"]["learning_rate"] == 3e-4
  assert train_testlib.checkpoint_steps(workdir)[-1] == STEPS + 4


@pytest.mark.parametrize("existing", [False, True])
def test_a_run_that_fails_before_its_first_step_leaves_no_workdir(env, tmp_path, existing):
  workdir = tmp_path / "run"
  if existing:
    workdir.mkdir()  # an empty folder the user made stays, empty
  proc = train_testlib.start_train(str(workdir), _overrides(env, init_from=tmp_path / "nothing"),
                                   cache_dir=env["cache"])
  assert proc.wait(timeout=600) == 1
  assert "error:" in train_testlib.read_log(str(workdir))
  assert os.listdir(workdir) == [] if existing else not os.path.exists(workdir)


def test_a_diverging_run_stops_with_one_error_line(env, tmp_path):
  """A learning rate that makes every step non-finite: none is applied, and after
  optim.max_consecutive_nonfinite of them train.py exits 1 with one error line of its own (after
  the progress bar, not appended to it) and the last checkpoint holds finite weights."""
  workdir = str(tmp_path / "diverging")
  overrides = _overrides(env, num_train_steps=20, checkpoint_every_steps=1, log_every_steps=1,
                         **{"optim.learning_rate": 1e30, "optim.max_consecutive_nonfinite": 2,
                            "log.progress_bar": True})
  proc = train_testlib.start_train(workdir, overrides, cache_dir=env["cache"])
  assert proc.wait(timeout=600) == 1
  log = train_testlib.read_log(workdir)
  assert "Traceback" not in log and "NaN or Inf found" not in log, log[-3000:]
  errors = [line for line in log.splitlines() if "error:" in line]
  assert len(errors) == 1 and errors[0].startswith("error: 2 consecutive steps"), log[-3000:]
  assert "Lower the learning rate" in errors[0]
  params = train_testlib.final_params(workdir)
  assert all(np.isfinite(v).all() for v in params.values())
