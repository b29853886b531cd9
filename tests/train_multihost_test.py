"""A 2-process jax.distributed job on localhost (2 fake CPU devices each) trains, saves, resumes."""

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import train_testlib

DRIVER = os.path.join(train_testlib.TESTS_DIR, "train_driver.py")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_job(workdir, overrides, cache_dir, timeout=420, extra=None, fails=False):
  """Runs both processes to the end; returns their RESULT records and logs (with `fails`: their
  exit codes and logs). `extra`: optional {process id: more driver arguments}."""
  port = _free_port()
  procs = []
  for pid in range(2):
    args = {"process_id": pid, "num_processes": 2, "port": port, "local_devices": 2,
            "workdir": workdir, "overrides": overrides, **(extra or {}).get(pid, {})}
    procs.append(subprocess.Popen(
        [sys.executable, DRIVER, json.dumps(args)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=train_testlib.subprocess_env(cache_dir=cache_dir)))
  results, logs = [], []
  try:
    for proc in procs:
      out, _ = proc.communicate(timeout=timeout)
      logs.append(out)
      if fails:
        results.append(proc.returncode)
        continue
      assert proc.returncode == 0, out[-6000:]
      results.append(json.loads(out.split("RESULT ")[-1].splitlines()[0]))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  return results, logs


def test_two_processes_train_checkpoint_and_resume(tmp_path_factory):
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  workdir = str(tmp_path_factory.mktemp("multihost") / "run")
  base = {"data.data_dir": tfds, "checkpoint_every_steps": 2, "data.batch_size": 4}

  results, _ = _run_job(workdir, dict(base, num_train_steps=4), cache)
  assert [r["process"] for r in results] == [0, 1]
  assert all(r["devices"] == 4 and r["step"] == 4 for r in results)
  assert train_testlib.checkpoint_steps(workdir)[-1] == 4
  # Each process saved its own data-iterator state.
  iter_dir = os.path.join(workdir, "checkpoints", "4", "data_iter")
  assert sorted(os.listdir(iter_dir)) == ["commit_success.txt", "process_0-of-2.json",
                                          "process_1-of-2.json"]
  logged = [m["step"] for m in train_testlib.metrics(workdir)]
  assert logged == [1, 2, 3, 4]  # written once, by process 0

  # Process 1's iterator file of step 4 lost (its own disk): both processes resume at step 2 (one
  # at 4 and one at 2 hung the job), step 4 is moved aside; then they validate at the end.
  os.remove(os.path.join(iter_dir, "process_1-of-2.json"))
  results, logs = _run_job(workdir, dict(base, num_train_steps=6, eval_every_steps=6), cache)
  assert all("resumed from the checkpoint at step 2" in log for log in logs), logs[1][-3000:]
  assert all("checkpoint at step 4 in" in log and "lacks a readable data iterator file of some "
             "process" in log for log in logs)
  assert os.listdir(os.path.join(workdir, "checkpoints_corrupt"))[0].startswith("4-")
  assert all(r["step"] == 6 for r in results)
  assert train_testlib.checkpoint_steps(workdir)[-1] == 6
  # Validation gathered the clips of both processes (the tiny split has 2).
  assert results[0]["eval"]["num_clips"] == 2 == results[1]["eval"]["num_clips"]
  assert results[0]["eval"]["psnr"] == results[1]["eval"]["psnr"]


def test_a_workdir_in_use_stops_every_process_of_a_second_job_at_once(tmp_path_factory):
  """Process 0 finds the workdir locked by another train.py: every process stops with that
  message (process 1 waited 30 s in a barrier and failed with a Gloo timeout)."""
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  workdir = tmp_path_factory.mktemp("multihost_lock") / "run"
  os.makedirs(workdir)
  with open(workdir / ".train.lock", "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running train.py holds it
    f.write("pid 1 on elsewhere\n")
    f.flush()
    codes, logs = _run_job(str(workdir), {"data.data_dir": tfds, "data.batch_size": 4}, cache,
                           timeout=120, fails=True)
  assert codes == [1, 1], logs
  assert f"{workdir} is in use by another train.py (pid 1 on elsewhere)" in logs[0]
  assert ("process 0 of this job failed while taking the workdir's lock: "
          f"{workdir} is in use by another train.py (pid 1 on elsewhere)" in logs[1])


def test_data_missing_on_one_host_stops_every_process_at_once(tmp_path_factory):
  """The dataset is on host 0's disk only (process 1's data_dir is empty): both processes stop
  within seconds, process 0 saying which process failed and why (it waited in the job's first
  collective until the heartbeat timed out, ~5 minutes, then both aborted); nothing is left."""
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  root = tmp_path_factory.mktemp("multihost_data")
  workdir, empty = root / "run", root / "empty_data_dir"
  os.makedirs(empty)
  overrides = {"data.data_dir": tfds, "data.batch_size": 4}
  codes, logs = _run_job(str(workdir), overrides, cache, timeout=150, fails=True,
                         extra={1: {"overrides": dict(overrides, **{"data.data_dir": str(empty)})}})
  assert codes == [1, 1], logs
  assert "process 1 of this job failed while opening the dataset: " in logs[0], logs[0][-3000:]
  assert str(empty) in logs[0].split("failed while opening the dataset: ")[1].splitlines()[0]
  assert not os.path.exists(workdir)


def test_processes_given_different_configs_are_told_so(tmp_path_factory):
  """Process 1 started with another learning rate (a typo in one host's command): the job trained
  in lockstep with both rates, exit 0, its config.json naming process 0's. Now both stop at once,
  naming the key; a host's own data_dir may differ."""
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  workdir = tmp_path_factory.mktemp("multihost_configs") / "run"
  overrides = {"data.data_dir": tfds, "data.batch_size": 4}
  codes, logs = _run_job(str(workdir), overrides, cache, timeout=150, fails=True, extra={1: {
      "overrides": dict(overrides, **{"optim.learning_rate": 0.5, "data.data_dir": tfds + "/"})}})
  assert codes == [1, 1], logs
  base = repr(train_testlib.tiny_config(**overrides).optim.learning_rate)
  for log, value in zip(logs, (base, "0.5"), strict=True):
    assert ("the processes of this job were given different configs: process(es) 1 differ from "
            f"process 0 in optim.learning_rate (here {value}); start every process with the same "
            "command") in log, log[-3000:]
  assert not os.path.exists(workdir)


def test_processes_with_different_device_counts_are_told_so(tmp_path_factory):
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  workdir = str(tmp_path_factory.mktemp("multihost_devices") / "run")
  codes, logs = _run_job(workdir, {"data.data_dir": tfds, "data.batch_size": 6}, cache,
                         timeout=120, extra={1: {"local_devices": 1}}, fails=True)
  assert codes == [1, 1], logs  # was: "cannot reshape array of size 3 into shape (2,2)"
  assert all("the job's processes have different numbers of devices (3 in all over 2 processes, "
             f"{n} here); give each the same number" in log
             for n, log in zip((2, 1), logs, strict=True))


def test_a_process_failing_alone_in_training_ends_every_process_at_once(tmp_path_factory):
  """Process 1 fails at its 5th batch (an error only its host sees): process 0, waiting for it in
  the step's collective, ends within seconds naming it and its error, exit 1, the checkpoint of
  step 2 saved (both waited 5 minutes for the job's shutdown barrier, then aborted with C++
  traces, process 0 never saying what happened)."""
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  workdir = str(tmp_path_factory.mktemp("multihost_fail") / "run")
  overrides = {"data.data_dir": tfds, "data.batch_size": 4, "num_train_steps": 50,
               "checkpoint_every_steps": 2}
  codes, logs = _run_job(workdir, overrides, cache, timeout=150, fails=True,
                         extra={1: {"fail_at_batch": 5}})
  assert codes == [1, 1], [log[-3000:] for log in logs]
  assert "OSError: injected failure at batch 5" in logs[1]
  assert ("error: process 1 of this job failed: injected failure at batch 5; this process stops "
          "too (the checkpoints saved stay)") in logs[0], logs[0][-3000:]
  assert 2 in train_testlib.checkpoint_steps(workdir)


def test_ctrl_c_on_one_host_during_compilation_stops_the_job_after_the_first_step(
    tmp_path_factory):
  """train.py's Ctrl-C on one process of a (fake SLURM) job while XLA compiles: every process saves
  the same early step and exits 0 (the process ended alone with 130 and the other aborted after the
  heartbeat timeout; a stop on one process during training hung the job); a job of another size
  resumes the run."""
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  workdir, overrides, codes, logs = _ctrl_c_during_compilation(tmp_path_factory, cache, 1)
  assert codes == [0, 0], [log[-3000:] for log in logs]
  assert "stopping after the current step" in logs[1]
  steps = train_testlib.checkpoint_steps(workdir)
  assert steps and steps[-1] < 100, steps
  assert "(stopped by a signal; the checkpoint is saved" in logs[0]
  assert "finished at step" not in logs[1]  # the summary once per job (it was once per host)

  # One process resumes the 2-process run: its data iterator positions (one per process) cannot
  # be taken, the model and optimizer can (it stopped on "another model or optimizer config").
  step = steps[-1]
  log = train_testlib.run_train(workdir, dict(overrides, num_train_steps=step + 2), cache_dir=cache)
  assert (f"the checkpoint at step {step} was saved by a job of 2 processes, this one has 1: the "
          "model and optimizer resume, the training data starts again from its beginning") in log
  assert f"resumed from the checkpoint at step {step}" in log
  assert train_testlib.checkpoint_steps(workdir)[-1] == step + 2


@pytest.mark.parametrize("stopped", [1, 0])  # process 0 serves the job's key-value store
def test_a_second_ctrl_c_on_one_host_ends_every_process_at_once(tmp_path_factory, stopped):
  """The second Ctrl-C ends its process at once (exit 130); the others end within seconds, naming
  it (they waited for it until JAX's heartbeat timeout, ~100 s, and aborted with C++ traces)."""
  # A cache of its own: the second signal comes while XLA compiles, before the first step (a cached
  # step ran, and the job stopped there, before it).
  cache = str(tmp_path_factory.mktemp("jax_cache_cold"))
  _, _, codes, logs = _ctrl_c_during_compilation(tmp_path_factory, cache, stopped, twice=True)
  other = 1 - stopped
  assert codes[stopped] == 130 and codes[other] == 1, (codes, [log[-3000:] for log in logs])
  assert logs[other].rstrip().endswith(
      f"error: process {stopped} of this job was stopped at once by a second signal; this process "
      "stops too (the checkpoints saved stay)"), logs[other][-3000:]
  assert "Check failure" not in logs[0] + logs[1]


def test_collective_errors_that_mean_a_process_is_gone(monkeypatch):
  from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
  from tcvc_jax.training import stopping  # pylint: disable=g-import-not-at-top
  gone = ["UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read "
          "error [127.0.0.1]:45995: Connection reset by peer",
          "UNKNOWN: Gloo all-reduce failed: [pair.cc:589] Connection closed by peer [10.0.0.2]:41",
          "INTERNAL: NCCL operation ncclAllReduce failed: remote process exited or there was a "
          "network error"]
  others = ["RESOURCE_EXHAUSTED: Out of memory allocating 28605211048 bytes.",
            "Connection reset by peer",  # not a collective's (a dataset's remote file, say)
            "Gloo all-reduce failed: input shapes differ"]
  found = [stopping.lost_a_process(RuntimeError(m)) for m in gone + others]
  assert found == [True] * 3 + [False] * 3
  monkeypatch.delenv("TCVC_LOST_PROCESS_TIMEOUT", raising=False)
  assert sharding.lost_process_timeout() == 30
  monkeypatch.setenv("TCVC_LOST_PROCESS_TIMEOUT", " 7.5 ")
  assert sharding.lost_process_timeout() == 7.5
  for bad in ("0", "-3", "nan", "1e", "inf s"):
    monkeypatch.setenv("TCVC_LOST_PROCESS_TIMEOUT", bad)
    with pytest.raises(ValueError, match="TCVC_LOST_PROCESS_TIMEOUT must be a number of seconds"):
      sharding.lost_process_timeout()


def test_a_process_killed_in_training_ends_the_others_within_seconds(tmp_path_factory):
  """kill -9 on process 1 in training (the out-of-memory killer's way): process 0 ends within
  seconds, exit 1, saying so in one line (it waited until JAX's heartbeat timeout, ~100 s, and
  aborted with C++ traces). It finds out one of two ways: the step's collective fails (Gloo saw the
  connection go), or, where the collective just waits (most runs here), process 1's count in the
  job's store stands still for $TCVC_LOST_PROCESS_TIMEOUT seconds (set short here)."""
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  cache = train_testlib.shared_dir(tmp_path_factory, "jax_cache_multihost")
  workdir = str(tmp_path_factory.mktemp("multihost_killed") / "run")
  overrides = {"data.data_dir": tfds, "data.batch_size": 4, "num_train_steps": 5000,
               "checkpoint_every_steps": 1000, "log_every_steps": 10}
  procs = _start_slurm_job(workdir, overrides, cache, TCVC_LOST_PROCESS_TIMEOUT="6")
  try:
    _wait_for(workdir, 0, "step 20/5000", procs)
    procs[1].kill()
    start = time.monotonic()
    code = procs[0].wait(timeout=80)
    waited = time.monotonic() - start
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  log = train_testlib.read_log(workdir, "p0")
  assert code == 1, log[-3000:]
  assert waited < 30, (waited, log[-3000:])  # JAX's heartbeat timeout: 100 s
  last = log.rstrip().splitlines()[-1]
  assert re.fullmatch(
      r"error: (process 1 of this job stopped answering \d+ s ago|another process of this job is "
      r"gone without a word) \(killed, e\.g\. by the out-of-memory killer, or its host is down\)"
      r"(: a collective of this one failed: .*)?; this process stops too \(the checkpoints saved "
      r"stay\)", last), log[-3000:]
  assert "Check failure" not in log


def _ctrl_c_during_compilation(tmp_path_factory, cache, pid, twice=False):
  """A 2-process train.py job given Ctrl-C (`twice`: two) on process `pid` while process 0 shows
  that XLA compiles the train step; returns its workdir, overrides, exit codes and logs."""
  tfds = train_testlib.prepared_tfds(tmp_path_factory)
  workdir = str(tmp_path_factory.mktemp("multihost_sigint") / "run")
  overrides = {"data.data_dir": tfds, "data.batch_size": 4, "num_train_steps": 5000,
               "checkpoint_every_steps": 1000, "log.progress_bar": True}
  procs = _start_slurm_job(workdir, overrides, cache)
  try:
    _wait_for(workdir, 0, "compiling the train step", procs)  # (process 0 alone shows a bar)
    procs[pid].send_signal(signal.SIGINT)
    if twice:
      _wait_for(workdir, pid, "signal again to stop at once", procs)
      time.sleep(0.5)  # (one signal twice within 0.25 s counts once: `timeout` sends two)
      procs[pid].send_signal(signal.SIGINT)
    codes = [proc.wait(timeout=60 if twice else 300) for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  return workdir, overrides, codes, [train_testlib.read_log(workdir, f"p{i}") for i in range(2)]


def _start_slurm_job(workdir, overrides, cache, **more_env):
  """train.py as the 2 processes of a (fake SLURM) job; their logs in WORKDIR.p0.log / .p1.log."""
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(train_testlib.subprocess_env(devices=2, cache_dir=cache),
               SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS="2",
               SLURM_PROCID=str(pid), SLURM_LOCALID=str(pid), JAX_COORDINATOR_PORT=str(port),
               JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", **more_env)
    with open(f"{workdir}.p{pid}.log", "w") as log:
      procs.append(subprocess.Popen(train_testlib.train_command(workdir, overrides), stdout=log,
                                    stderr=subprocess.STDOUT, env=env, cwd=train_testlib.REPO))
  return procs


def _wait_for(workdir, pid, text, procs, timeout=300):
  deadline = time.monotonic() + timeout
  while text not in train_testlib.read_log(workdir, f"p{pid}"):
    assert procs[pid].poll() is None and time.monotonic() < deadline, (
        train_testlib.read_log(workdir, f"p{pid}")[-3000:])
    time.sleep(0.05)
