"""train.py workdirs go back to PyTorch: the original's TCVC_IDC layout.

The exported files load without PyTorch too.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import tcvc_jax
from tcvc_jax import converted
from tcvc_jax import export
from tcvc_jax import porting
from tcvc_jax import pth
from tcvc_jax.data import input_pipeline
from tcvc_jax.data import sources as data_sources
from tcvc_jax.data import synthetic
from tcvc_jax.models import spec as spec_lib
from tcvc_jax.training import checkpointing
from tcvc_jax.training import sharding
from tcvc_jax.training import train_config

import golden_lib
import tiny
import train_testlib
import xla_flags


def _data_iter():
  """A grain iterator (checkpoints hold the data position too)."""
  clips = [synthetic.generate_clip((0, i), height=16, width=16, num_frames=5) for i in range(2)]
  source = data_sources.ArraySource([c.frames for c in clips])
  spec = input_pipeline.WindowSpec(num_frames=2, crop_size=(8, 8))
  return iter(input_pipeline.to_batches(
      input_pipeline.make_train_dataset(source, source.index(), spec, seed=0), 1))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny-model workdir with checkpoints at steps 3 and 7 (different weights)."""
  config = train_testlib.tiny_config()
  model = train_config.build_model(config)
  tx, _ = train_config.optimizer(config)
  mesh = sharding.create_mesh((("data", -1),), "auto", devices=jax.devices()[:1])
  init_fn, _, _ = train_config.fresh_state(config, model, tx, mesh)
  path = str(tmp_path_factory.mktemp("export") / "run")
  checkpointing.write_model_spec(path, train_config.model_spec(config))
  mngr = checkpointing.create_manager(path, save_every=1, max_to_keep=5)
  state = init_fn()
  checkpointing.save(mngr, 3, state, _data_iter(), force=True)
  bumped = state.replace(params=jax.tree_util.tree_map(lambda x: x + 0.01, state.params))
  checkpointing.save(mngr, 7, bumped, _data_iter(), force=True)
  mngr.wait_until_finished()
  mngr.close()
  return path


def _cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "tcvc_jax.convert", *map(str, args)],
                        capture_output=True, text=True, check=False,
                        env=env or xla_flags.child_env())


def test_workdir_exports_in_the_original_layout_and_loads_back(workdir, tmp_path):
  out = tmp_path / "model.pth"
  proc = _cli(workdir, out)
  assert proc.returncode == 0, proc.stderr
  assert "at step 7" in proc.stdout and "only loads full-size models" in proc.stdout
  sd = pth.load_state_dict(str(out))
  reference = [k for k, _ in golden_lib.read_key_file()]
  # The classical-flow model has no FlowNet2; every other key of the original, in its order.
  assert list(sd) == [k for k in reference if not k.startswith("flow.")]
  for k, v in sd.items():
    assert v.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32), k
  assert not sd["fea_key.model_class.0.weight"].any()
  gray = np.random.RandomState(0).uniform(-0.5, 0.5, (4, 32, 32, 1)).astype(np.float32)
  from_run, from_pth = tcvc_jax.load(workdir), tcvc_jax.load(str(out))
  np.testing.assert_array_equal(from_pth.colorize_window(gray), from_run.colorize_window(gray))


def test_step_choice_and_existing_output(workdir, tmp_path):
  out = tmp_path / "m3.pth"
  proc = _cli(workdir, out, "--step", 3)
  assert proc.returncode == 0 and "at step 3" in proc.stdout, proc.stderr
  proc = _cli(workdir, out, "--step", 3)
  assert proc.returncode == 1 and "--overwrite" in proc.stderr
  proc = _cli(workdir, tmp_path / "m5.pth", "--step", 5)
  assert proc.returncode == 1 and proc.stderr.strip().endswith("(there are: 3, 7)")
  assert not (tmp_path / "m5.pth").exists()
  three, seven = pth.load_state_dict(str(out)), export.workdir_state_dict(workdir)[0]
  assert not np.array_equal(three["weigting.conv1.weight"], seven["weigting.conv1.weight"])


def test_full_size_export_has_every_key_shape_and_dtype_of_the_original():
  """The released model's variables (zero-cost broadcast zeros) map onto the original state_dict."""
  spec = spec_lib.ModelSpec()
  shapes = jax.eval_shape(spec.build().init, jax.random.key(0), np.zeros((1, 3, 64, 64, 1)))
  variables = jax.tree_util.tree_map(lambda s: np.broadcast_to(np.float32(0), s.shape),
                                     {c: shapes[c] for c in ("params", "batch_stats")})
  sd = export.original_state_dict(variables, spec)
  with open(golden_lib.KEYS_FILE) as f:
    reference = [line.rstrip("\n").split("\t") for line in f
                 if line.strip() and not line.startswith("#")]
  assert len(reference) == 349
  assert [(k, str(tuple(v.shape)), str(v.dtype)) for k, v in sd.items()] == [
      (k, shape, dtype.strip()) for k, shape, dtype in reference]


def test_export_needs_no_torch(workdir, tmp_path):
  """With torch unimportable, converting a workdir still works."""
  blocker = tmp_path / "blocker"
  blocker.mkdir()
  (blocker / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
  env = xla_flags.child_env()
  env["PYTHONPATH"] = os.pathsep.join([str(blocker), env.get("PYTHONPATH", "")])
  proc = _cli(workdir, tmp_path / "m.pth", env=env)
  assert proc.returncode == 0, proc.stderr
  proc = _cli(tmp_path / "m.pth", tmp_path / "back", env=env)
  assert proc.returncode == 0, proc.stderr


def test_converted_folder_round_trips_through_pth_with_its_model_record(tmp_path):
  """folder -> .pth -> folder: the same tcvc_meta.json (classical-flow options too), weights."""
  ckpt = tiny.save_checkpoint(tmp_path / "ckpt")
  out = tmp_path / "t.pth"
  export.export_converted(ckpt, str(out))
  record = json.loads(pth.read_extra(str(out), porting.SPEC_RECORD))
  assert record == tiny.TINY_SPEC.to_json()
  back = tmp_path / "back"
  converted.convert_torch_file(str(out), str(back))
  with open(os.path.join(ckpt, converted.META_FILE)) as a, open(back / converted.META_FILE) as b:
    assert a.read() == b.read()
  (va, _, ea), (vb, _, eb) = converted.load_converted(ckpt), converted.load_converted(str(back))
  assert jax.tree_util.tree_structure((va, ea)) == jax.tree_util.tree_structure((vb, eb))
  for a, b in zip(jax.tree_util.tree_leaves((va, ea)), jax.tree_util.tree_leaves((vb, eb)),
                  strict=True):
    assert a.dtype == b.dtype and np.array_equal(a, b)
  export.export_converted(str(back), str(tmp_path / "again.pth"))
  assert (tmp_path / "again.pth").read_bytes() == out.read_bytes()


def test_workdir_whose_model_json_does_not_match_its_weights_is_not_exported(workdir, tmp_path):
  bad = tmp_path / "run"
  shutil.copytree(workdir, bad)
  data = json.loads((bad / checkpointing.MODEL_FILE).read_text())
  data["model"]["l_features"] = 8
  (bad / checkpointing.MODEL_FILE).write_text(json.dumps(data))
  out = tmp_path / "bad.pth"
  proc = _cli(bad, out)
  assert proc.returncode == 1
  assert proc.stderr == (f"error: {bad}: its model.json does not match its weights "
                         "(l_features: 8 there, 4 in the weights)\n")
  assert not out.exists()


def test_converted_folder_whose_model_does_not_match_its_weights_is_not_exported(tmp_path):
  ckpt = tiny.save_checkpoint(tmp_path / "ckpt")
  tiny.edit_meta(ckpt, refine_hidden=[8, 16])
  with pytest.raises(porting.ConversionError, match=r"its tcvc_meta.json does not match its "
                     r"weights \(refine_hidden: \[8, 16\] there, \[8, 8\] in the weights\)$"):
    export.export_converted(ckpt, str(tmp_path / "bad.pth"))
  assert not (tmp_path / "bad.pth").exists()


def test_pth_output_in_place_of_a_folder_or_under_a_file(tmp_path):
  ckpt = tiny.save_checkpoint(tmp_path / "ckpt")
  folder = tmp_path / "folder"
  folder.mkdir()
  for overwrite in (False, True):
    with pytest.raises(porting.ConversionError,
                       match=f"^cannot write {folder}: it is a folder, not a file$"):
      export.export_converted(ckpt, str(folder), overwrite=overwrite)
  a_file = tmp_path / "file"
  a_file.write_text("keep")
  with pytest.raises(porting.ConversionError,
                     match=f"^cannot write {a_file}/sub/x.pth: {a_file} is a file, not a folder$"):
    export.export_converted(ckpt, str(a_file / "sub" / "x.pth"))
  assert a_file.read_text() == "keep"
