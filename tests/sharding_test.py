"""Mesh and sharding helpers, and one train step on 8 fake devices against 1 device.

The device test runs in a child process (this file run as a script), because the number of
fake CPU devices must be fixed before JAX starts.

Tolerance: the 8-device step reduces the loss over shards in a different order, so the loss and
the gradients differ by float32 rounding (~1e-7 relative). One Adam step moves each weight by
about lr * g / (|g| + eps), which rounding changes by far less than lr: we require the loss to
agree to 1e-5 relative and every updated weight to 1e-6 absolute (lr = 1e-3 in the tiny preset).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import train_testlib
import xla_flags

LOSS_RTOL = 1e-5
PARAM_ATOL = 1e-6


def test_fill_mesh_shape():
  from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
  assert sharding.fill_mesh_shape((("data", -1),), 8) == (8,)
  assert sharding.fill_mesh_shape((("data", 4),), 4) == (4,)
  with pytest.raises(ValueError):
    sharding.fill_mesh_shape((("data", 3),), 8)
  with pytest.raises(ValueError):
    sharding.fill_mesh_shape((("data", -1), ("model", -1)), 8)


def _python(script, **env):
  """`python -c script` to its end (exit 0 asserted), without this process's JAX_* variables and
  fake devices (xla_flags.child_env)."""
  base = xla_flags.child_env(drop_prefixes=("JAX_",))
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                        env=dict(base, **env), check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
  return proc


@pytest.mark.parametrize("env,out", [
    # A job of one process by the variables alone: jax.distributed starts (it read the address
    # only; the job size and the process id cannot come from JAX's environment).
    ({"JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}, "processes 1, distributed True"),
    # The address alone was a run of its own on every host, silently (training side by side).
    ({}, "error: the multi-host job cannot start: "),
    ({"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "error: JAX_NUM_PROCESSES must be a whole number, got 'two'"),
    # An id out of range waited jax.distributed's 300 s, then aborted blaming "another task".
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "error: JAX_PROCESS_ID (process_id) must be in 0..1, got 2"),
    # Found before the job waits for this process (stopping.FailureWatch reads it in training).
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0", "TCVC_LOST_PROCESS_TIMEOUT": "soon"},
     "error: TCVC_LOST_PROCESS_TIMEOUT must be a number of seconds, at least 1, got 'soon'"),
])
def test_a_job_started_by_jax_variables(env, out):
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  script = ("import jax\nfrom tcvc_jax.training import sharding\n"
            "try:\n  sharding.initialize_distributed()\n"
            "except ValueError as e:\n  print('error:', e)\n"
            "else:\n  print(f'processes {jax.process_count()}, distributed "
            "{jax.distributed.is_initialized()}')\n  jax.distributed.shutdown()\n")
  proc = _python(script, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", **env)
  assert proc.stdout.startswith(out), proc.stdout + proc.stderr[-2000:]
  if not env:
    assert "set JAX_COORDINATOR_ADDRESS=host:port of process 0, JAX_NUM_PROCESSES" in proc.stdout


def test_a_coordinator_port_in_use_is_named():
  # jax.distributed's coordinator died of a segmentation fault, without a word, when process 0's
  # port was taken (an earlier job still running on the host).
  script = ("import socket\nfrom tcvc_jax.training import sharding\n"
            "with socket.socket() as s:\n  s.bind(('127.0.0.1', 0))\n  s.listen()\n"
            "  port = s.getsockname()[1]\n  try:\n"
            "    sharding.initialize_distributed(coordinator_address=f'127.0.0.1:{port}', "
            "num_processes=2, process_id=0, initialization_timeout=10)\n"
            "  except ValueError as e:\n    print('error:', e)\n")
  proc = _python(script)
  assert "is in use on this host (process 0 serves the coordinator there)" in proc.stdout, (
      proc.stdout + proc.stderr[-2000:])


def test_a_process_waiting_for_its_job_says_so_and_ends_with_one_line():
  # A process whose job never came together (a host not started, a wrong address) waited 5 minutes
  # without a word, then aborted in jax.distributed with "another task died" and a stack trace.
  script = ("from tcvc_jax.training import sharding\nsharding._JOIN_NOTES_S = (1, 60)\n"
            "sharding.initialize_distributed(coordinator_address='127.0.0.1:{port}', "
            "num_processes=2, process_id=1, initialization_timeout=4)\nprint('joined')\n")
  base = xla_flags.child_env(drop_prefixes=("JAX_",))
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.run([sys.executable, "-c", script.format(port=port)], capture_output=True,
                        text=True, timeout=60, env=base, check=False)
  assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[0].startswith(f"waiting for the other processes of the job to join at 127.0.0.1:"
                             f"{port}: 1 s (gives up after 4 s)"), proc.stderr[-2000:]
  assert lines[-1].startswith("error: the multi-host job did not start: process 1 waited 4 s at "
                              f"127.0.0.1:{port} for the other processes of the job (2 in all)")
  assert "Check failure" not in proc.stderr and "joined" not in proc.stdout


def test_axes_other_than_data_are_named_as_copies(caplog):
  # A model axis was accepted without a word: its devices repeat the same work.
  import jax  # pylint: disable=g-import-not-at-top

  from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
  if jax.device_count() < 2:
    pytest.skip("needs 2 devices (the suite's main process has 8)")
  sharding.create_mesh((("data", -1),))
  assert "copies" not in caplog.text
  sharding.create_mesh((("data", -1), ("model", 2)))
  assert "mesh axes model (2) hold copies of the same work" in caplog.text


def test_batch_size_must_divide_the_data_axis():
  import jax  # pylint: disable=g-import-not-at-top

  from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.create_mesh((("data", -1),), "auto")
  sharding.check_batch_size(2 * jax.device_count(), mesh)
  if jax.device_count() > 1:
    with pytest.raises(ValueError, match="not divisible"):
      sharding.check_batch_size(jax.device_count() + 1, mesh)


@pytest.fixture(scope="module")
def device_results(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharding") / "result.json"
  env = train_testlib.subprocess_env(devices=8)
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(out)], env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads(out.read_text())


@pytest.mark.parametrize("axis_type", ["explicit", "auto"])
def test_8_device_step_equals_1_device_step(device_results, axis_type):
  one, eight = device_results["1"], device_results[f"8-{axis_type}"]
  assert eight["num_devices"] == 8 and one["num_devices"] == 1
  np.testing.assert_allclose(eight["loss"], one["loss"], rtol=LOSS_RTOL)
  assert eight["max_param_diff"] <= PARAM_ATOL, eight["max_param_diff"]
  assert eight["max_update"] > 100 * PARAM_ATOL  # the step really moved the weights
  # The state stays replicated and the batch is split over the data axis.
  assert eight["param_spec"] == "P()"
  assert eight["batch_spec"] == "P('data',)"
  assert eight["batch_shard_shape"][0] == 1


def _child(out_path):
  """One train step of the tiny preset on a 1-device and on 8-device meshes (both axis types)."""
  import jax  # pylint: disable=g-import-not-at-top

  from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
  from tcvc_jax.training import train_config  # pylint: disable=g-import-not-at-top

  config = train_testlib.tiny_config()
  model = train_config.build_model(config)
  tx, _ = train_config.optimizer(config)
  batch = train_testlib.random_batch(8, config.data.num_frames, 32)
  results, reference = {}, None
  runs = (("1", jax.devices()[:1], "explicit"), ("8-explicit", jax.devices(), "explicit"),
          ("8-auto", jax.devices(), "auto"))
  for name, devices, axis_type in runs:
    mesh = sharding.create_mesh((("data", -1),), axis_type, devices=devices)
    with jax.set_mesh(mesh):
      init_fn, _, shardings = train_config.fresh_state(config, model, tx, mesh)
      state = init_fn()
      before = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
      global_batch = sharding.global_batch(batch, sharding.data_sharding(mesh))
      state, metrics = train_config.jit_train_step(config, shardings, mesh)(state, global_batch)
      after = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
    if reference is None:
      reference = after
    leaf = jax.tree_util.tree_leaves(state.params)[0]
    results[name] = {
        "num_devices": len(devices), "loss": float(metrics["loss"]),
        "max_param_diff": max(float(np.max(np.abs(a - r)))
                              for a, r in zip(after, reference, strict=True)),
        "max_update": max(float(np.max(np.abs(a - b)))
                          for a, b in zip(after, before, strict=True)),
        "param_spec": repr(leaf.sharding.spec),
        "batch_spec": repr(global_batch["gray"].sharding.spec),
        "batch_shard_shape": list(global_batch["gray"].addressable_shards[0].data.shape)}
  with open(out_path, "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  _child(sys.argv[1])
