"""Checkpoints: state + grain iterator round trip, fallback past a damaged checkpoint, init_from."""

import json
import logging
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tcvc_jax
from tcvc_jax import converted
from tcvc_jax import porting
from tcvc_jax.data import input_pipeline
from tcvc_jax.data import sources as data_sources
from tcvc_jax.data import synthetic
from tcvc_jax.training import checkpointing
from tcvc_jax.training import pretrained as pretrained_lib
from tcvc_jax.training import sharding
from tcvc_jax.training import train_config
from tcvc_jax.training import train_lib

import tiny
import train_testlib


def _small_state(seed=0):
  params = {"a": jnp.arange(6.0).reshape(2, 3) + seed, "b": {"c": jnp.ones((4,)) * seed}}
  return train_lib.TrainState.create(apply_fn=None, params=params, tx=optax.adam(1e-3),
                                     batch_stats={}, nonfinite_total=jnp.zeros((), jnp.int32),
                                     nonfinite_consecutive=jnp.zeros((), jnp.int32))


def _data():
  clips = [synthetic.generate_clip((0, i), height=16, width=16, num_frames=5) for i in range(3)]
  source = data_sources.ArraySource([c.frames for c in clips])
  spec = input_pipeline.WindowSpec(num_frames=2, crop_size=(8, 8))
  ds = input_pipeline.make_train_dataset(source, source.index(), spec, seed=3)
  return input_pipeline.to_batches(ds, 2)


def _abstract(state):
  mesh = sharding.create_mesh((("data", -1),), "auto", devices=jax.devices()[:1])
  shardings = sharding.state_shardings(state, mesh)
  return sharding.with_shardings(jax.eval_shape(lambda: state), shardings)


def _save_steps(workdir, steps):
  """Saves a state and the iterator at each step (two batches apart); returns the iterator."""
  mngr = checkpointing.create_manager(workdir, save_every=1, max_to_keep=5)
  it = iter(_data())
  for step in steps:
    next(it)
    next(it)
    assert checkpointing.save(mngr, step, _small_state(step), it, force=True)
  mngr.wait_until_finished()
  mngr.close()
  return it


def test_state_and_iterator_round_trip(tmp_path):
  it = _save_steps(str(tmp_path), [2])
  expected = next(it)
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  fresh = iter(_data())
  state, step = checkpointing.restore_latest(mngr, _abstract(_small_state()), fresh)
  assert step == 2
  np.testing.assert_array_equal(state.params["a"], _small_state(2).params["a"])
  assert state.params["a"].sharding.spec == jax.sharding.PartitionSpec()
  got = next(fresh)  # the restored iterator continues where the saved one was
  for key in ("gray", "ab", "frame_ids", "key"):
    np.testing.assert_array_equal(got[key], expected[key])
  mngr.close()


def test_a_resume_on_another_number_of_devices_says_so(tmp_path, caplog):
  """A run saved on 4 devices and resumed on 1 is told that its sums now run in another order
  (the same global batch: the same training to rounding); the same count is told nothing."""
  mesh = sharding.create_mesh((("data", -1),), "auto", devices=jax.devices()[:4])
  state = jax.device_put(_small_state(2), sharding.replicated(mesh))
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  assert checkpointing.save(mngr, 2, state, iter(_data()), force=True)
  assert checkpointing.save(mngr, 4, _small_state(4), iter(_data()), force=True)  # one device
  mngr.wait_until_finished()
  assert checkpointing.saved_device_count(mngr, 2) == 4
  assert checkpointing.saved_device_count(mngr, 4) == 1
  with caplog.at_level(logging.WARNING):
    assert checkpointing.restore_latest(mngr, _abstract(_small_state()), iter(_data()))[1] == 4
  assert "device" not in caplog.text
  mngr.close()
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  with caplog.at_level(logging.WARNING):
    restored, step = checkpointing.restore_latest(mngr, _abstract(_small_state()), iter(_data()))
  assert step == 2
  np.testing.assert_array_equal(restored.params["a"], _small_state(2).params["a"])
  assert ("the checkpoint at step 2 was saved by a run on 4 devices, this one has 1: the global "
          "batch (data.batch_size) is the same" in caplog.text)
  assert "not bit for bit" in caplog.text
  mngr.close()


def test_a_save_cut_short_is_removed_when_the_run_starts_again(tmp_path):
  # A second Ctrl-C (or a kill) in the middle of a save leaves the save's temporary folder.
  _save_steps(str(tmp_path), [2])
  folder = tmp_path / "checkpoints"
  (folder / "4.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp").mkdir(parents=True)
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  deadline = time.monotonic() + 30  # removed in the background
  while len(os.listdir(folder)) > 1 and time.monotonic() < deadline:
    time.sleep(0.05)
  assert sorted(os.listdir(folder)) == ["2"]
  assert mngr.all_steps() == [2]
  mngr.close()


def test_a_save_that_fails_is_one_line_and_names_the_last_saved_step(tmp_path, monkeypatch,
                                                                      caplog):
  _save_steps(str(tmp_path), [2])
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  def save(*args, **kwargs):  # as orbax fails on a full disk: its threads log, then it raises
    del args, kwargs
    logging.getLogger("absl").handle(logging.LogRecord(
        "absl", logging.ERROR, os.path.join("site-packages", "orbax", "checkpoint", "x.py"), 1,
        "[thread=array_type_handler] _SignalingThread.run() raised an exception: RESOURCE_"
        "EXHAUSTED: Error writing ... [os_error_code='28']", None, None))
    raise ValueError("RESOURCE_EXHAUSTED: Error writing \"params.a/0\" in OCDBT database: Failed "
                     "to write 400 bytes to file 20: No space left on device [os_error_code='28']")

  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with caplog.at_level(logging.INFO), converted.quiet_orbax_errors():
    with pytest.raises(checkpointing.CheckpointWriteError) as raised:
      checkpointing.save(mngr, 4, _small_state(4), iter(_data()), force=True)
  assert str(raised.value) == (f"cannot save a checkpoint in {tmp_path / 'checkpoints'}: No space "
                               "left on device; the same command resumes from the last saved one "
                               "(step 2)")
  assert not [r for r in caplog.records if "raised an exception" in r.getMessage()]
  # Errors that are not failed writes pass as they are.
  monkeypatch.setattr(ocp.CheckpointManager, "save", lambda *a, **k: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    checkpointing.save(mngr, 4, _small_state(4), iter(_data()), force=True)
  mngr.close()


def _truncate_largest_file(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  path = max(files, key=os.path.getsize)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)
  return path


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  _save_steps(str(tmp_path), [2, 4])
  _truncate_largest_file(str(tmp_path / "checkpoints" / "4" / "state"))
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  with caplog.at_level(logging.WARNING):
    state, step = checkpointing.restore_latest(mngr, _abstract(_small_state()), iter(_data()))
  assert step == 2
  np.testing.assert_array_equal(state.params["b"]["c"], _small_state(2).params["b"]["c"])
  assert "step 4" in caplog.text and "unreadable" in caplog.text
  # The damaged step is moved aside, so a resumed run can save step 4 again.
  assert mngr.all_steps() == [2]
  assert os.listdir(tmp_path / checkpointing.CORRUPT_DIR)
  mngr.close()


def test_an_iterator_state_that_does_not_fit_resumes_the_model_and_restarts_the_data(tmp_path,
                                                                                    caplog):
  """An iterator file that reads but does not fit this pipeline (data.num_workers changed: other
  keys) restores the state of that step; one that does not read (cut off) is damage: the previous
  step is restored and the damaged one moved aside."""
  _save_steps(str(tmp_path), [2, 4, 6])
  folder = tmp_path / "checkpoints"
  with open(folder / "6" / "data_iter" / "process_0-of-1.json", "w") as f:
    json.dump({"another": "pipeline"}, f)
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  with caplog.at_level(logging.WARNING):
    state, step = checkpointing.restore_latest(mngr, _abstract(_small_state()), iter(_data()))
  assert step == 6 and "data.num_workers changed?" in caplog.text
  np.testing.assert_array_equal(state.params["b"]["c"], _small_state(6).params["b"]["c"])
  mngr.close()
  with open(folder / "6" / "data_iter" / "process_0-of-1.json", "w") as f:
    f.write('{"cut o')
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  state, step = checkpointing.restore_latest(mngr, _abstract(_small_state()), iter(_data()))
  assert step == 4 and mngr.all_steps() == [2, 4]
  mngr.close()


def test_checkpoints_of_another_config_raise_and_stay(tmp_path):
  _save_steps(str(tmp_path), [2])
  other = _small_state().replace(params={"a": jnp.zeros((5,))})  # another model
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  with pytest.raises(RuntimeError, match="could be restored"):
    checkpointing.restore_latest(mngr, _abstract(other), iter(_data()))
  assert mngr.all_steps() == [2]  # nothing moved
  mngr.close()


def test_no_checkpoint_gives_none(tmp_path):
  mngr = checkpointing.create_manager(str(tmp_path), save_every=1, max_to_keep=5)
  assert checkpointing.restore_latest(mngr, _abstract(_small_state()), iter(_data())) is None
  mngr.close()


@pytest.fixture(scope="module")
def tiny_setup():
  config = train_testlib.tiny_config()
  spec = train_config.model_spec(config)
  model = train_config.build_model(config)
  tx, _ = train_config.optimizer(config)
  mesh = sharding.create_mesh((("data", -1),), "auto", devices=jax.devices()[:1])
  init_fn, _, _ = train_config.fresh_state(config, model, tx, mesh)
  return config, spec, model, mesh, init_fn


def test_init_from_converted_siggraph17_and_flownet2(tmp_path, tiny_setup, caplog):
  _, _, model, mesh, init_fn = tiny_setup
  variables = tiny.tiny_variables(model)
  sig = {c: variables[c]["fea_key"] for c in ("params", "batch_stats")}
  converted.save_converted(str(tmp_path / "sig"), sig, "siggraph17",
                           {"widths": list(model.colorizer_widths)})
  # A folder of one FlowNet2 layer is not a FlowNet2 checkpoint: refused when read.
  fake_flow = {"params": {"flownetc": {"conv1": {"kernel": np.ones((3, 3, 6, 4), np.float32)}}}}
  converted.save_converted(str(tmp_path / "flow"), fake_flow, "flownet2", {})
  with pytest.raises(porting.ConversionError, match="does not match the flownet2 model; missing"):
    pretrained_lib.load(f"{tmp_path / 'sig'}, {tmp_path / 'flow'}")
  pretrained = pretrained_lib.load(f"{tmp_path / 'sig'}")
  pretrained[("params", "flow")] = fake_flow["params"]  # as a real one would be, without 650 MB
  assert set(pretrained) == {("params", "fea_key"), ("batch_stats", "fea_key"),
                             ("params", "flow")}
  with caplog.at_level(logging.WARNING):
    state, loaded = pretrained_lib.apply(init_fn(), pretrained, mesh)
  assert loaded == {"fea_key"}
  assert "params/flow" in caplog.text  # the classical-flow model has no FlowNet2: skipped
  got = jax.tree_util.tree_leaves(state.params["fea_key"])
  want = jax.tree_util.tree_leaves(variables["params"]["fea_key"])
  for g, w in zip(got, want, strict=True):
    np.testing.assert_array_equal(g, w)
  np.testing.assert_array_equal(state.batch_stats["fea_key"]["model1"]["4"]["var"],
                                variables["batch_stats"]["fea_key"]["model1"]["4"]["var"])


def test_init_from_rejects_wrong_shapes_and_unknown_paths(tmp_path, tiny_setup):
  _, _, _, mesh, init_fn = tiny_setup
  wide = tiny.tiny_model(colorizer_widths=(8,) * 9 + (32,))
  variables = tiny.tiny_variables(wide)
  sig = {c: variables[c]["fea_key"] for c in ("params", "batch_stats")}
  converted.save_converted(str(tmp_path / "sig"), sig, "siggraph17", {"widths": [8] * 9 + [32]})
  with pytest.raises(ValueError, match="shape"):
    pretrained_lib.apply(init_fn(), pretrained_lib.load(
        [str(tmp_path / "sig")]), mesh)
  with pytest.raises(ValueError, match="neither"):
    pretrained_lib.load(str(tmp_path / "nothing"))
  assert pretrained_lib.parse_paths(None) == []
  assert pretrained_lib.parse_paths(" a, ,b") == ["a", "b"]


def test_load_workdir_and_init_from_a_workdir(tmp_path, tiny_setup):
  _, spec, model, mesh, init_fn = tiny_setup
  workdir = str(tmp_path / "run")
  state = init_fn()
  checkpointing.write_model_spec(workdir, spec)
  mngr = checkpointing.create_manager(workdir, save_every=1, max_to_keep=2)
  checkpointing.save(mngr, 7, state, iter(_data()), force=True)
  mngr.wait_until_finished()
  mngr.close()
  variables, got_spec, step = checkpointing.load_workdir(workdir)
  assert got_spec == spec and got_spec.flow_type == "classical" and step == 7
  rebuilt = porting.build_module("tcvc", got_spec)
  for field in ("colorizer_widths", "refine_hidden", "flow_type", "classical_flow"):
    assert getattr(rebuilt, field) == getattr(model, field), field
  for got, want in zip(jax.tree_util.tree_leaves(variables["params"]),
                       jax.tree_util.tree_leaves(state.params), strict=True):
    np.testing.assert_array_equal(got, want)
  # The same workdir as init_from restores every sub-network.
  pretrained = pretrained_lib.load(workdir)
  _, loaded = pretrained_lib.apply(init_fn(), pretrained, mesh)
  assert loaded == set(state.params)
  with open(os.path.join(workdir, checkpointing.MODEL_FILE)) as f:
    assert json.load(f)["model"]["classical_flow"]
  # Users load a training run for inference like any checkpoint.
  colorizer = tcvc_jax.load(workdir)
  gray = np.random.RandomState(0).uniform(-0.5, 0.5, (3, 32, 32, 1)).astype(np.float32)
  want = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                     gray[None])["ab"][0]
  np.testing.assert_allclose(colorizer.colorize_window(gray), want, atol=1e-6)


def test_a_damaged_workdir_checkpoint_names_itself_and_the_way_out(tmp_path, tiny_setup):
  _, spec, _, _, init_fn = tiny_setup
  workdir = str(tmp_path / "run")
  checkpointing.write_model_spec(workdir, spec)
  mngr = checkpointing.create_manager(workdir, save_every=1, max_to_keep=3)
  for step in (2, 4):
    checkpointing.save(mngr, step, init_fn(), iter(_data()), force=True)
  mngr.wait_until_finished()
  mngr.close()
  _truncate_largest_file(os.path.join(workdir, "checkpoints", "4", "state"))
  with pytest.raises(checkpointing.DamagedCheckpointError) as err:
    checkpointing.load_workdir(workdir)
  text = str(err.value)
  assert text.startswith(f"{workdir}: the checkpoint at step 4 cannot be read")
  assert text.endswith(f"python -m tcvc_jax.convert {workdir} OUT --step 2")
  assert len(text) < 1000 and "tensorstore_spec" not in text  # not TensorStore's kB of JSON
  assert checkpointing.load_workdir(workdir, step=2)[2] == 2
  # One checkpoint of a run, as any tool's checkpoint path (it was "not a checkpoint folder").
  step_2 = os.path.join(workdir, "checkpoints", "2")
  assert f"can be used: give {step_2} as the checkpoint, or convert it" in text
  colorizer = tcvc_jax.load(step_2)
  assert colorizer.spec == spec
  with pytest.raises(checkpointing.DamagedCheckpointError, match="at step 4 cannot be read"):
    tcvc_jax.load(os.path.join(workdir, "checkpoints", "4"))
