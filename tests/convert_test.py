"""The PyTorch <-> Flax checkpoint converter: exact round trips, clear errors, no code execution."""

import json
import os
import pickle
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import tcvc_jax
from tcvc_jax import atomic
from tcvc_jax import converted
from tcvc_jax import export
from tcvc_jax import porting
from tcvc_jax import pth as pth_lib

import cli_testlib
import tiny

torch = pytest.importorskip("torch")


def _run_cli(*args, command=False):
  """`python -m tcvc_jax.convert *args`; its main() in this process unless `command` (a process
  each was ~2-4 s of imports, a minute of the suite; the tests that write a full checkpoint and
  those of usage mistakes run the command)."""
  if command:
    return subprocess.run([sys.executable, "-m", "tcvc_jax.convert", *map(str, args)],
                          capture_output=True, text=True, check=False)
  from tcvc_jax import convert  # pylint: disable=g-import-not-at-top
  return cli_testlib.call_main(convert.main, map(str, args))


def _tiny_state_dict():
  model = tiny.tiny_model()
  variables = jax.tree_util.tree_map(np.asarray, tiny.tiny_variables(model))
  return porting.flax_to_torch(variables)


def _save(sd, path):
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, path)


def _save_exported(sd, path):
  """As export.py writes a tiny model: with its model record (no warning on reading)."""
  pth_lib.save(sd, str(path),
               extra={porting.SPEC_RECORD: json.dumps(tiny.TINY_SPEC.to_json()).encode()})


def test_full_checkpoint_round_trip_is_exact(golden_f32_paths, tmp_path):
  """PyTorch -> Flax -> PyTorch reproduces every entry of the 198 M-value state_dict bit for bit."""
  back = tmp_path / "back.pth"
  proc = _run_cli(golden_f32_paths["tcvc"], back, command=True)
  assert proc.returncode == 0, proc.stderr
  original = torch.load(golden_f32_paths["tcvc_pth"], weights_only=True)
  restored = torch.load(back, weights_only=True)
  assert list(restored) == list(original)  # same keys in the same order
  for k, v in original.items():
    assert restored[k].dtype == v.dtype, k
    assert restored[k].shape == v.shape, k
    assert torch.equal(restored[k], v), k


def test_tiny_flax_model_exports_and_reimports(tmp_path):
  """A model trained here goes to PyTorch and back with identical variables."""
  sd = _tiny_state_dict()
  assert "fea_key.model1.4.num_batches_tracked" in sd  # PyTorch's strict loading needs the counters
  pth = tmp_path / "tiny.pth"
  _save(sd, pth)
  out = tmp_path / "tiny_ckpt"
  proc = _run_cli(pth, out)
  assert proc.returncode == 0, proc.stderr
  variables, meta, extras = converted.load_converted(out)
  assert meta["kind"] == "tcvc"
  assert meta["model"].colorizer_widths == tiny.TINY_SPEC.colorizer_widths
  assert meta["model"].flow_type == "classical"
  again = porting.flax_to_torch(variables, extras, key_order=meta["key_order"])
  assert list(again) == list(sd)
  for k in sd:
    np.testing.assert_array_equal(again[k], sd[k], err_msg=k)


def test_dataparallel_prefix_is_stripped(tmp_path):
  sd = _tiny_state_dict()
  pth = tmp_path / "dp.pth"
  _save({"module." + k: v for k, v in sd.items()}, pth)
  loaded, kind = porting.load_torch_file(str(pth))
  assert kind == "tcvc" and list(loaded) == list(sd)


def test_state_dicts_inside_training_checkpoints_and_wrapped_keys_are_found(tmp_path):
  sd = _tiny_state_dict()
  tensors = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
  cases = {  # what people save: a training checkpoint, torch.compile's and nested DataParallel
      "ckpt": {"epoch": 3, "model": tensors, "optimizer": {"state": {}, "param_groups": []}},
      "compiled": {"_orig_mod." + k: v for k, v in tensors.items()},
      "nested": {"net": {"module.module." + k: v for k, v in tensors.items()}},
  }
  for name, obj in cases.items():
    torch.save(obj, tmp_path / f"{name}.pth")
    loaded, kind = porting.load_torch_file(str(tmp_path / f"{name}.pth"))
    assert kind == "tcvc" and list(loaded) == list(sd), name
  refused = {
      "two": ({"model": tensors, "ema": tensors}, "holds several state_dicts (model, ema)"),
      "none": ({"epoch": 3, "optimizer": {}},
               "not a state_dict (expected a dict of tensors; a dict of 'epoch', 'optimizer'"),
      "empty": ({}, "an empty dict, not a state_dict"),
      "tensor": (torch.zeros(3), "not a state_dict (expected a dict of tensors, got one tensor)"),
      "whole": (torch.nn.Linear(2, 2), "asks to run code (torch.nn.modules.linear.Linear): a whole "
                "pickled model? torch.save(model.state_dict(), path) saves what converts"),
  }
  for name, (obj, text) in refused.items():
    torch.save(obj, tmp_path / f"{name}.pth")
    with pytest.raises(porting.ConversionError, match=re.escape(text)):
      porting.load_torch_file(str(tmp_path / f"{name}.pth"))


def test_files_of_other_formats_are_named(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros(3))
  np.savez(tmp_path / "b.npz", x=np.zeros(3))
  header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
  (tmp_path / "c.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
  for name, what in (("a.npy", "a NumPy .npy file"), ("b.npz", "a NumPy .npz archive"),
                     ("c.safetensors", "a safetensors file")):
    path = tmp_path / name.replace(".", "_") / "model.pth"
    path.parent.mkdir()
    os.rename(tmp_path / name, path)  # renamed .pth, as it happens
    with pytest.raises(porting.ConversionError, match=f"^{re.escape(str(path))}: {what}, not a "
                       "PyTorch checkpoint$"):
      porting.load_torch_file(str(path))


def test_weights_that_are_not_finite_are_refused(tmp_path):
  sd = _tiny_state_dict()
  sd["weigting.conv1.bias"] = sd["weigting.conv1.bias"].copy()
  sd["weigting.conv1.bias"][:2] = [np.nan, np.inf]
  path = tmp_path / "diverged.pth"
  pth_lib.save(sd, str(path))
  proc = _run_cli(path, tmp_path / "out")
  assert proc.returncode == 1 and not (tmp_path / "out").exists()
  n = sd["weigting.conv1.bias"].size
  assert proc.stderr == (f"error: {path}: weights that are NaN or infinite in weigting.conv1.bias "
                         f"(2 of {n}): a run that diverged? Take an earlier checkpoint\n")


def test_a_classical_flow_file_that_lost_its_model_record_says_so(tmp_path):
  # export.py stores the classical flow's options in a record that torch.load + torch.save drop.
  exported = tmp_path / "exported.pth"
  _save_exported(_tiny_state_dict(), exported)
  resaved = tmp_path / "resaved.pth"
  torch.save(torch.load(exported, weights_only=True), resaved)
  proc = _run_cli(exported, tmp_path / "a")
  assert proc.returncode == 0 and "warning" not in proc.stderr
  proc = _run_cli(resaved, tmp_path / "b")
  assert proc.returncode == 0
  assert ("without its tcvc_model.json record, which torch.load + torch.save drops: the classical "
          "flow's options are not known and its defaults are used") in proc.stderr


def test_an_output_inside_the_source_folder_is_refused(tmp_path):
  pth = tmp_path / "tiny.pth"
  _save(_tiny_state_dict(), pth)
  folder = tmp_path / "ckpt"
  assert _run_cli(pth, folder).returncode == 0
  before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
  meta = folder / converted.META_FILE
  for out, flags in ((folder / "variables" / "back.pth", ()), (meta, ("--overwrite",)),
                     (folder / "variables" / "_METADATA", ("--overwrite",))):
    proc = _run_cli(folder, out, *flags)
    assert proc.returncode == 1
    assert proc.stderr == (f"error: the output {out} is inside the source {folder}: writing there "
                           "would change it; choose an output outside it\n")
  assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
  # A new file beside the checkpoint's own (runs/demo/model.pth) leaves it as it was.
  assert _run_cli(folder, folder / "back.pth").returncode == 0
  assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "back.pth"
          } == before
  (folder / "back.pth").unlink()
  # The Python functions check the same (their own source included).
  with pytest.raises(porting.ConversionError, match="is inside the source"):
    export.export_converted(str(folder), str(folder / "variables" / "_METADATA"), overwrite=True)
  with pytest.raises(porting.ConversionError, match="is the source"):
    converted.convert_torch_file(str(pth), str(pth), overwrite=True)
  assert converted.is_converted_dir(folder) and pth.is_file()


def test_command_line_mistakes_exit_2(tmp_path):
  pth = tmp_path / "tiny.pth"
  _save_exported(_tiny_state_dict(), pth)
  for args, text in (((pth, ""), "OUT is empty: give a file or folder name"),
                     (("", tmp_path / "o"), "SRC is empty: give a file or folder name"),
                     ((pth, tmp_path / "o", "--step", "3"), "--step needs a train.py workdir"),
                     ((pth, tmp_path / "o", "--step=-1"), "--step must be a step number >= 0"),
                     ((pth, tmp_path / "o.pth"), "a PyTorch file converts to a checkpoint folder")):
    proc = _run_cli(*args, command=text.startswith("OUT"))  # (one of them as a command)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and text in proc.stderr
  assert sorted(os.listdir(tmp_path)) == ["tiny.pth"]


def test_bad_keys_give_one_error_naming_them(tmp_path):
  sd = _tiny_state_dict()
  del sd["weigting.conv2.bias"]
  sd["feature_refine.conv9.weight"] = np.zeros((2, 2, 3, 3), np.float32)
  sd["channel_reduction.conv2.weight"] = np.zeros((4, 4, 5, 5), np.float32)
  pth = tmp_path / "bad.pth"
  _save(sd, pth)
  with pytest.raises(porting.ConversionError) as e:
    porting.validate(*porting.load_torch_file(str(pth)), str(pth))
  msg = str(e.value)
  assert "missing keys: weigting.conv2.bias" in msg
  assert "unexpected keys: feature_refine.conv9.weight" in msg
  assert ("mis-shaped keys: channel_reduction.conv2.weight (4, 4, 5, 5) "
          "(expected (4, 4, 3, 3))") in msg
  out = tmp_path / "bad_ckpt"
  proc = _run_cli(pth, out)
  assert proc.returncode == 1
  assert proc.stderr.count("\n") == 1 and "missing keys: weigting.conv2.bias" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not out.exists()


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, writer):
  marker = tmp_path / "pwned"
  evil = tmp_path / "evil.pth"
  payload = {"L_fea_extractor.0.weight": _Exploit(marker)}
  if writer == "torch":
    torch.save(payload, evil)
  else:
    with open(evil, "wb") as f:
      pickle.dump(payload, f)
  proc = _run_cli(evil, tmp_path / "out")
  assert proc.returncode == 1
  assert proc.stderr == (f"error: {evil}: refused: the file asks to run code (posix.system); "
                         "nothing was run: a file of tensors and plain values converts, e.g. "
                         "torch.save(model.state_dict(), path)\n")
  assert not marker.exists(), "code embedded in the checkpoint was executed"
  with pytest.raises(porting.ConversionError):
    tcvc_jax.load(str(evil))
  assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
  junk = tmp_path / "junk.pth"
  junk.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
  proc = _run_cli(junk, tmp_path / "out")
  assert proc.stderr == f"error: {junk}: not a PyTorch checkpoint (unknown format)\n"
  assert proc.returncode == 1
  other = tmp_path / "other.pth"
  torch.save({"encoder.layer.weight": torch.zeros(3)}, other)
  proc = _run_cli(other, tmp_path / "out2")
  assert proc.returncode == 1 and "not a TCVC, SIGGRAPH17 or FlowNet2 state_dict" in proc.stderr
  proc = _run_cli(tmp_path / "missing.pth", tmp_path / "out3")
  assert proc.returncode == 1 and "no such file" in proc.stderr
  folder = tmp_path / "weights.pth"  # a folder named like a file (the message blamed OUT)
  folder.mkdir()
  proc = _run_cli(folder, tmp_path / "out4")
  assert proc.stderr == (f"error: {folder}: is a folder, not a PyTorch file (nor a checkpoint "
                         "folder)\n")
  assert proc.returncode == 1 and not os.path.exists(tmp_path / "out4")


def test_a_folder_inside_a_workdir_points_to_the_workdir(tmp_path):
  # A train.py workdir's checkpoints/ or one step's folder given instead of the workdir itself.
  work = tmp_path / "run"
  (work / "checkpoints" / "700").mkdir(parents=True)
  (work / "model.json").write_text("{}")
  for folder, tail in ((work / "checkpoints", f"{work}: give that"),
                       (work / "checkpoints" / "700" / "state",
                        f"{work}: give that, or {work}/checkpoints/700 for the checkpoint of step "
                        "700")):
    folder.mkdir(exist_ok=True)
    with pytest.raises(porting.ConversionError, match="not a checkpoint folder") as e:
      tcvc_jax.load(str(folder))
    assert f"inside the train.py workdir {tail}" in str(e.value)
  # A step's own folder is one checkpoint of the run (checkpointing_test loads one); here its
  # files are missing.
  with pytest.raises(OSError, match=f"{work}: the checkpoint at step 700 cannot be read"):
    tcvc_jax.load(str(work / "checkpoints" / "700"))
  with pytest.raises(porting.ConversionError, match="with model.json and checkpoints/") as e:
    tcvc_jax.load(str(tmp_path))
  assert "train.py workdir /" not in str(e.value)


def test_existing_output_is_not_overwritten(tmp_path):
  pth = tmp_path / "tiny.pth"
  _save(_tiny_state_dict(), pth)
  out = tmp_path / "ckpt"
  out.mkdir()
  (out / "keep.txt").write_text("user data")
  proc = _run_cli(pth, out)
  assert proc.returncode == 1 and "--overwrite" in proc.stderr
  assert (out / "keep.txt").read_text() == "user data"
  # --overwrite replaces an earlier checkpoint, not a folder of the user's that shares its name.
  proc = _run_cli(pth, out, "--overwrite")
  assert proc.returncode == 1 and "is a folder but not a converted checkpoint" in proc.stderr
  assert os.listdir(out) == ["keep.txt"]
  (out / "keep.txt").unlink()
  for _ in range(2):  # into the empty folder, then over that checkpoint
    proc = _run_cli(pth, out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert converted.is_converted_dir(out)
  # ... nor one the user has put files into (notes, a file exported from it).
  (out / "NOTES.txt").write_text("mine")
  proc = _run_cli(pth, out, "--overwrite")
  assert proc.returncode == 1 and f"{out} holds more than a converted checkpoint (NOTES.txt)" in (
      proc.stderr)
  assert (out / "NOTES.txt").read_text() == "mine" and converted.is_converted_dir(out)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
  import logging  # pylint: disable=g-import-not-at-top

  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  from tcvc_jax import cli  # pylint: disable=g-import-not-at-top
  pth = tmp_path / "tiny.pth"
  _save_exported(_tiny_state_dict(), pth)

  def save(self, path, tree):  # as orbax fails on a full disk: its thread logs, then it raises
    del self, tree
    os.makedirs(os.path.join(path, "d"))
    logging.getLogger("absl").handle(logging.LogRecord(
        "absl", logging.ERROR, os.path.join("site-packages", "orbax", "checkpoint", "x.py"), 1,
        "[thread=np_type_handler] raised an exception: RESOURCE_EXHAUSTED", None, None))
    raise ValueError("RESOURCE_EXHAUSTED: Error writing \"params.x/0\": Failed to write 10 bytes "
                     "to file 14: No space left on device [os_error_code='28']")

  monkeypatch.setattr(ocp.PyTreeCheckpointer, "save", save)
  out = tmp_path / "sub" / "ckpt"
  code = cli.run(lambda: converted.convert_torch_file(str(pth), str(out)) and 0)
  assert code == 1
  assert capsys.readouterr().err == f"error: cannot write {out}: No space left on device\n"
  assert sorted(os.listdir(tmp_path)) == ["tiny.pth"]  # nor the folder it made for the output


def test_a_damaged_checkpoint_folder_says_so(tmp_path):
  pth = tmp_path / "tiny.pth"
  _save(_tiny_state_dict(), pth)
  for damage in ("truncated", "emptied"):
    out = tmp_path / damage
    converted.convert_torch_file(str(pth), str(out))
    data = [os.path.join(d, n) for d, _, names in os.walk(out / "variables") for n in names
            if os.path.basename(d) == "d"]
    assert data
    if damage == "truncated":
      for f in data:
        os.truncate(f, 10)
    else:
      for name in os.listdir(out / "variables"):
        atomic.remove(str(out / "variables" / name))
    with pytest.raises(porting.ConversionError) as e:
      converted.load_converted(str(out))
    assert str(e.value).startswith(
        f"{out}: cannot read the weights in variables/ (a damaged or incomplete checkpoint?): ")
    assert "\n" not in str(e.value) and "tensorstore_spec" not in str(e.value)  # one line


def test_partial_checkpoints_are_not_colorizers(golden_f32_paths):
  with pytest.raises(porting.ConversionError, match="holds siggraph17 weights only"):
    tcvc_jax.load(golden_f32_paths["siggraph17"])


@pytest.mark.parametrize("dtype", ["int32", "complex64", "bool"])
def test_weights_that_are_not_real_floats_are_refused(tmp_path, dtype):
  """An integer weight would become zeros, a complex one would lose its imaginary part."""
  sd = _tiny_state_dict()
  sd["weigting.conv1.bias"] = sd["weigting.conv1.bias"].astype(np.dtype(dtype))
  path = tmp_path / "bad.pth"
  pth_lib.save(sd, str(path))
  out = tmp_path / "out"
  proc = _run_cli(path, out)
  assert proc.returncode == 1 and not out.exists()
  assert proc.stderr == (f"error: {path}: weigting.conv1.bias has dtype {dtype}; weights must be "
                         "float16, bfloat16, float32 or float64\n")


def test_half_precision_weights_and_counters_are_accepted(tmp_path):
  sd = _tiny_state_dict()
  sd["fea_key.model1.4.num_batches_tracked"] = np.array(7, np.int64)
  for dtype in ("float16", "bfloat16", "float64"):
    cast = {k: v if v.dtype == np.int64 else v.astype(np.dtype(dtype)) for k, v in sd.items()}
    assert porting.validate(cast, "tcvc").l_features == tiny.TINY_SPEC.l_features
  _assert_round_trips(sd, tmp_path)


def test_a_state_dict_without_counters_round_trips_without_them(tmp_path):
  """PyTorch before 0.4.1 saved BatchNorm without num_batches_tracked: none is added back."""
  sd = {k: v for k, v in _tiny_state_dict().items() if not k.endswith("num_batches_tracked")}
  _assert_round_trips(sd, tmp_path)


def _assert_round_trips(sd, tmp_path):
  """.pth -> converted folder -> state_dict gives `sd`: keys, their order, dtypes and values."""
  path = tmp_path / "in.pth"
  _save(sd, path)
  converted.convert_torch_file(str(path), str(tmp_path / "out"))
  variables, meta, extras = converted.load_converted(str(tmp_path / "out"))
  again = porting.flax_to_torch(variables, extras, key_order=meta["key_order"])
  assert list(again) == list(sd)
  for k in sd:
    assert again[k].dtype == sd[k].dtype, k
    np.testing.assert_array_equal(again[k], sd[k], err_msg=k)


def test_output_under_a_file_or_in_place_of_one(tmp_path):
  pth = tmp_path / "tiny.pth"
  _save(_tiny_state_dict(), pth)
  a_file = tmp_path / "file"
  a_file.write_text("user data")
  for out in (a_file / "sub", a_file / "sub" / "deeper"):
    proc = _run_cli(pth, out)
    assert proc.returncode == 1
    assert proc.stderr == f"error: cannot write {out}: {a_file} is a file, not a folder\n"
  proc = _run_cli(pth, a_file)
  assert proc.returncode == 1 and "--overwrite" in proc.stderr
  assert a_file.read_text() == "user data"
  proc = _run_cli(pth, a_file, "--overwrite")  # what --overwrite asks: the folder replaces the file
  assert proc.returncode == 0, proc.stderr
  assert converted.is_converted_dir(a_file)
  assert sorted(os.listdir(tmp_path)) == ["file", "tiny.pth"]


@pytest.mark.parametrize("how", ["error", "interrupt"])
def test_failed_conversion_removes_the_parent_folders_it_made(tmp_path, monkeypatch, how):
  pth = tmp_path / "tiny.pth"
  _save(_tiny_state_dict(), pth)
  write_json = atomic.write_json

  def fail(path, obj, **kwargs):  # once the parents and the temporary folder are made
    write_json(path, obj, **kwargs)
    assert (tmp_path / "new" / "deeper").is_dir()
    if how == "interrupt":
      atomic.discard_all()  # what the tools' signal handler does before it exits
      assert sorted(os.listdir(tmp_path)) == ["tiny.pth"]
      raise KeyboardInterrupt
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(atomic, "write_json", fail)
  with pytest.raises(KeyboardInterrupt if how == "interrupt" else porting.ConversionError):
    converted.convert_torch_file(str(pth), str(tmp_path / "new" / "deeper" / "out"))
  assert sorted(os.listdir(tmp_path)) == ["tiny.pth"]
  monkeypatch.undo()
  (tmp_path / "old").mkdir()
  converted.convert_torch_file(str(pth), str(tmp_path / "old" / "new" / "out"))
  assert converted.is_converted_dir(tmp_path / "old" / "new" / "out")


def test_a_folder_whose_model_description_does_not_fit_its_weights_is_refused(tmp_path):
  """A hand-edited (or swapped) tcvc_meta.json is named when loading, not in the model's first
  call with a flax shape error."""
  folder = tiny.save_checkpoint(tmp_path / "ckpt")
  tiny.edit_meta(folder, refine_hidden=[8, 4])
  with pytest.raises(porting.ConversionError,
                     match=r"tcvc_meta.json does not match its weights \(refine_hidden: \[8, 4\] "
                           r"there, \[8, 8\] in the weights\)"):
    tcvc_jax.load(folder)
  tiny.edit_meta(folder, kind="flownet2", refine_hidden=[8, 8])
  with pytest.raises(porting.ConversionError, match="does not match the flownet2 model; missing"):
    converted.load_converted(folder)


def test_an_output_folder_name_that_is_not_utf8_is_refused_before_writing(tmp_path):
  """TensorStore cannot write such a path: convert printed 107 warnings and a C++ binding error;
  train.py's workdir is checked the same way."""
  bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/out\xff")
  with pytest.raises(porting.ConversionError, match="a checkpoint folder's path must be UTF-8"):
    converted.save_converted(bad, {}, "siggraph17", None)
  with pytest.raises(porting.ConversionError, match="a workdir folder's path must be UTF-8"):
    converted.check_utf8(os.path.join(bad, "run"), "workdir")
  converted.check_utf8(str(tmp_path / "é ü"))  # UTF-8 beyond ASCII is fine
  assert not os.listdir(tmp_path)
