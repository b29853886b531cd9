"""tcvc_jax.pth: torch.save files read and written without torch, and nothing in them ever runs."""

import collections
import contextlib
import io
import os
import pickle
import random
import struct
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest

from tcvc_jax import _pth_write
from tcvc_jax import pth

torch = pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LEGACY = {"_use_new_zipfile_serialization": False}
_MODES = {"zip": {}, "legacy": _LEGACY, "zip_protocol4": {"pickle_protocol": 4},
          "legacy_protocol4": {**_LEGACY, "pickle_protocol": 4}}


def _numpy(t):
  """A torch tensor as numpy, bfloat16 through its bits."""
  t = t.detach()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def _assert_same(ours, theirs, where="obj"):
  """`ours` (pth.load) matches `theirs` (torch.load): types, key order, dtypes, shapes, bits."""
  if isinstance(theirs, torch.Tensor):
    want = _numpy(theirs)
    assert isinstance(ours, np.ndarray), where
    assert (ours.dtype, ours.shape) == (want.dtype, want.shape), where
    assert ours.flags.c_contiguous and ours.flags.writeable, where
    assert ours.tobytes() == np.ascontiguousarray(want).tobytes(), where
  elif isinstance(theirs, dict):
    assert type(ours) is dict, where
    assert list(ours) == list(theirs), where
    for k in theirs:
      _assert_same(ours[k], theirs[k], f"{where}[{k!r}]")
  elif isinstance(theirs, (list, tuple)):  # torch.Size too
    assert type(ours) is (tuple if isinstance(theirs, tuple) else list), where
    assert len(ours) == len(theirs), where
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
      _assert_same(a, b, f"{where}[{i}]")
  else:
    assert type(ours) is type(theirs) and ours == theirs, where


def _small_model_state():
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
  model(torch.randn(2, 1, 5, 5))  # training mode: running stats and num_batches_tracked move
  return model.state_dict()


def _objects():
  t = torch.arange(20.0).reshape(4, 5)
  sd = _small_model_state()
  return {
      "views": {"a": t, "b": t[1:, ::2], "c": t.t()},
      "nested": {"epoch": 3, "best_EPE": 1.25, "state_dict": sd, "shape": torch.Size([2, 3])},
      "state_dict": sd,
      "dtypes": collections.OrderedDict(
          bf16=torch.tensor([1.5, -2.0, 3e38], dtype=torch.bfloat16),
          f16=torch.tensor([0.5, 65504.0], dtype=torch.float16),
          f64=torch.tensor([[1e-300]], dtype=torch.float64), b=torch.tensor([True, False]),
          i8=torch.tensor([-128, 127], dtype=torch.int8),
          u8=torch.tensor([0, 255], dtype=torch.uint8), i16=torch.tensor([-3], dtype=torch.int16),
          i32=torch.tensor([2**31 - 1], dtype=torch.int32),
          i64=torch.tensor(-(2**62)), empty=torch.zeros(0, 3), scalar=torch.tensor(2.5)),
      "parameter": torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3)),
      "list": [torch.ones(2), (torch.zeros(1, dtype=torch.int64), None, "text", 1.5, True)],
  }


@pytest.fixture(scope="module", name="torch_files")
def fixture_torch_files(tmp_path_factory):
  """{(object name, mode): path} written by torch.save."""
  folder = tmp_path_factory.mktemp("torch_files")
  paths = {}
  for name, obj in _objects().items():
    for mode, kwargs in _MODES.items():
      paths[name, mode] = str(folder / f"{name}_{mode}.pth")
      torch.save(obj, paths[name, mode], **kwargs)
  return paths


@pytest.mark.parametrize("mode", list(_MODES))
@pytest.mark.parametrize("name", ["views", "nested", "state_dict", "dtypes", "parameter", "list"])
def test_reads_torch_files_like_torch(torch_files, name, mode):
  path = torch_files[name, mode]
  # torch's weights-only unpickler lacks protocol 4's FRAME; these files are ours to trust.
  _assert_same(pth.load(path), torch.load(path, weights_only="protocol4" not in mode))


def test_views_come_back_as_separate_copies(torch_files):
  for mode in _MODES:
    r = pth.load(torch_files["views", mode])
    np.testing.assert_array_equal(r["b"], np.arange(20.0).reshape(4, 5)[1:, ::2])
    np.testing.assert_array_equal(r["c"], np.arange(20.0).reshape(4, 5).T)
    assert not np.shares_memory(r["a"], r["b"]) and not np.shares_memory(r["a"], r["c"])


def test_load_state_dict(torch_files):
  want = _small_model_state()
  for name in ("nested", "state_dict"):
    sd = pth.load_state_dict(torch_files[name, "zip"])
    assert list(sd) == list(want)
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"].shape == ()
  with pytest.raises(pth.PthError, match="not a state_dict"):
    pth.load_state_dict(torch_files["list", "zip"])


def test_reader_does_not_import_torch(torch_files):
  code = ("import sys; import tcvc_jax.pth as p; sd = p.load_state_dict(sys.argv[1]); "
          "assert 'torch' not in sys.modules, 'torch imported'; print(len(sd))")
  env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run([sys.executable, "-c", code, torch_files["nested", "legacy"]], env=env,
                        capture_output=True, text=True, check=False, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == str(len(_small_model_state()))


def test_old_legacy_file(tmp_path):
  """A torch 0.3-style file: _rebuild_tensor, CUDA storage, a storage view, numpy scalars."""

  class Storage:
    def __init__(self, pid):
      self.pid = pid

  class Tensor:
    def __init__(self, *args):
      self.args = args

    def __reduce__(self):
      return torch._utils._rebuild_tensor, self.args  # pylint: disable=protected-access

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return obj.pid if isinstance(obj, Storage) else None

  class Py2OrderedDict(collections.OrderedDict):  # pickled as Python 2 did: a list of pairs
    def __reduce__(self):
      return collections.OrderedDict, ([[k, v] for k, v in self.items()],)

  root = Storage(("storage", torch.cuda.FloatStorage, "140", "cuda:0", 6, None))
  view = Storage(("storage", torch.LongStorage, "150", "cpu", 5, ("151", 1, 4)))  # elements 1-4
  obj = {"epoch": 7, "best_EPE": np.float64(2.5), "state_dict": Py2OrderedDict(
      w=Tensor(root, 0, (2, 3), (3, 1)), wt=Tensor(root, 1, (2, 2), (1, 3)),
      v=Tensor(view, 1, (3,), (1,)))}
  path = tmp_path / "old.pth.tar"
  with open(path, "wb") as f:
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 8}}
    for x in (0x1950A86A20F9469CFC6C, 1001, sys_info):
      pickle.dump(x, f, protocol=2)
    Pickler(f, protocol=2).dump(obj)
    pickle.dump(["140", "150"], f, protocol=2)
    for a in (np.arange(6, dtype="<f4"), np.arange(10, 15, dtype="<i8")):
      f.write(struct.pack("<q", a.size) + a.tobytes())
  r = pth.load(path)
  assert r["epoch"] == 7 and r["best_EPE"] == 2.5 and r["best_EPE"].dtype == np.float64
  np.testing.assert_array_equal(r["state_dict"]["w"], np.arange(6.0).reshape(2, 3))
  np.testing.assert_array_equal(r["state_dict"]["wt"], [[1.0, 4.0], [2.0, 5.0]])
  np.testing.assert_array_equal(r["state_dict"]["v"], [12, 13, 14])
  assert r["state_dict"]["v"].dtype == np.int64
  theirs = torch.load(path, weights_only=False, map_location="cpu")["state_dict"]
  _assert_same(r["state_dict"], theirs)


def test_big_endian_zip(tmp_path):
  t = {"x": torch.tensor([1.0, -2.0]), "y": torch.tensor([[1 + 2j]]), "z": torch.tensor(7)}
  path = tmp_path / "little.pth"
  torch.save(t, path)
  big = tmp_path / "big.pth"
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(big, "w") as dst:
    for info in src.infolist():
      data = src.read(info)
      if info.filename.endswith("/byteorder"):
        data = b"big"
      elif "/data/" in info.filename and "serialization" not in info.filename:
        item = {"0": 4, "1": 4, "2": 8}[info.filename.rsplit("/", 1)[1]]
        data = np.frombuffer(data, f"u{item}").byteswap().tobytes()
      dst.writestr(info.filename, data)
  _assert_same(pth.load(big), t)


# Writing.


def _arrays():
  nan_payload = np.array([0x7FC00001, 0xFF800000], np.uint32).view(np.float32)
  return {
      "w": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "nan": nan_payload,
      "f64": np.array([[np.pi, -0.0]]), "f16": np.array([1.5, -np.inf], np.float16),
      "bf16": np.array([1.5, -3e38, np.nan], ml_dtypes.bfloat16),
      "i8": np.array([-128, 127], np.int8), "u8": np.array([0, 255], np.uint8),
      "i16": np.array([-(2**15)], np.int16), "i32": np.array([2**31 - 1], np.int32),
      "bn.num_batches_tracked": np.array(12345678901, np.int64), "b": np.array([True, False]),
      "c64": np.array([1 - 2j], np.complex64), "strided": np.arange(30.0).reshape(5, 6)[::2, 1::3],
      "transposed": np.arange(6, dtype=np.int32).reshape(2, 3).T, "big": np.arange(4, dtype=">i4"),
      "empty": np.zeros((0, 5), np.float32), "z_last": np.ones((1, 1, 1), np.float32)}


def test_save_round_trip(tmp_path):
  arrays, path = _arrays(), tmp_path / "ours.pth"
  pth.save(arrays, path)
  for mmap in (False, True):
    theirs = torch.load(path, weights_only=True, mmap=mmap)
    assert type(theirs) is collections.OrderedDict and list(theirs) == list(arrays)
    for k, a in arrays.items():
      want = a.astype(a.dtype.newbyteorder("=")) if k == "big" else a
      got = _numpy(theirs[k])
      assert (got.dtype, got.shape) == (want.dtype, want.shape), k
      assert got.tobytes() == np.ascontiguousarray(want).tobytes(), k
  ours = pth.load_state_dict(path)
  assert list(ours) == list(arrays)
  for k, a in arrays.items():
    assert ours[k].dtype == a.dtype.newbyteorder("=") and ours[k].shape == a.shape, k
    assert ours[k].tobytes() == np.ascontiguousarray(a, a.dtype.newbyteorder("=")).tobytes(), k
  with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
    for info in zf.infolist():  # stored, data 64-byte aligned like torch's
      f.seek(info.header_offset + 26)
      start = info.header_offset + 30 + sum(struct.unpack("<HH", f.read(4)))
      assert info.compress_type == zipfile.ZIP_STORED and start % 64 == 0, info.filename
    assert zf.read("archive/version") == b"3\n" and zf.read("archive/byteorder") == b"little"


def test_pickle_integers():
  int_op = _pth_write._int_op  # pylint: disable=protected-access
  for n in (0, 255, 256, 65535, 2**31 - 1, 2**31, 2**40, 2**63 + 5):
    assert pickle.loads(b"\x80\x02" + int_op(n) + b".") == n


def test_save_empty_dict_is_readable_by_torch(tmp_path):
  pth.save({}, tmp_path / "e.pth")
  assert torch.load(tmp_path / "e.pth", weights_only=True) == collections.OrderedDict()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_save_mode_follows_umask(tmp_path, umask):
  old = os.umask(umask)
  try:
    pth.save({"x": np.ones(2, np.float32)}, tmp_path / "m.pth")
  finally:
    os.umask(old)
  assert os.stat(tmp_path / "m.pth").st_mode & 0o777 == 0o666 & ~umask


def test_failed_save_leaves_no_trace(tmp_path, monkeypatch):
  path = tmp_path / "keep.pth"
  pth.save({"x": np.ones(2, np.float32)}, path)
  before = path.read_bytes()
  for bad in ({"x": [1.0, 2.0]}, {3: np.ones(1)}, {"s": np.array(["a"])}, {"o": np.array([None])}):
    with pytest.raises(pth.PthError, match="cannot save"):
      pth.save(bad, path)
  with pytest.raises(pth.PthError, match="is a directory"):
    pth.save({"x": np.ones(1)}, tmp_path)
  calls, original = [], _pth_write.array_bytes

  def interrupted(array):  # Ctrl-C while the second array is written
    calls.append(array)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return original(array)

  monkeypatch.setattr(_pth_write, "array_bytes", interrupted)
  with pytest.raises(KeyboardInterrupt):
    pth.save({"a": np.ones(3), "b": np.zeros(2)}, path)
  assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["keep.pth"]


# Refusals: nothing runs.


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("mode", ["zip", "legacy"])
def test_refuses_code(tmp_path, mode):
  marker, path = tmp_path / "MARKER", tmp_path / "evil.pth"
  torch.save({"w": torch.ones(1), "x": _Evil(marker)}, path, **_MODES[mode])
  name = f"{os.system.__module__}.{os.system.__name__}"  # posix.system on Linux
  with pytest.raises(pth.PthError) as e:
    pth.load(path)
  assert str(e.value) == (f"{path}: refused: the file asks to run code ({name}); nothing was run: "
                          "a file of tensors and plain values converts, e.g. "
                          "torch.save(model.state_dict(), path)")
  assert not marker.exists()


def _zip_with_pickle(path, data):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", data)
    zf.writestr("archive/version", "3\n")


def test_refuses_first_bad_global(tmp_path):
  path = tmp_path / "eval.pth"
  _zip_with_pickle(path, b"\x80\x02cbuiltins\neval\nX\x05\x00\x00\x001 + 1\x85R.")
  with pytest.raises(pth.PthError, match=r"asks to run code \(builtins\.eval\); nothing was run"):
    pth.load(path)
  _zip_with_pickle(path, b"\x80\x02cos\nsystem\ncbuiltins\neval\n.")
  with pytest.raises(pth.PthError, match=r"\(os\.system\); nothing was run"):
    pth.load(path)
  _zip_with_pickle(path, b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.")  # STACK_GLOBAL
  with pytest.raises(pth.PthError, match=r"\(builtins\.exec\); nothing was run"):
    pth.load(path)


# Not checkpoints.


def test_not_checkpoints(tmp_path, torch_files):
  with open(torch_files["state_dict", "zip"], "rb") as f:
    zip_bytes = f.read()
  with open(torch_files["state_dict", "legacy"], "rb") as f:
    legacy_bytes = f.read()
  npz = io.BytesIO()
  np.savez(npz, a=np.ones(3))
  no_pkl = io.BytesIO()
  with zipfile.ZipFile(no_pkl, "w") as zf:
    zf.writestr("archive/version", "3\n")
  cases = {"random": np.random.default_rng(0).bytes(1000), "empty": b"", "text": b"hello\n",
           "npz": npz.getvalue(), "no_pkl": no_pkl.getvalue(), "pickle": pickle.dumps([1, 2])}
  huge_memo = io.BytesIO()  # LONG_BINPUT 2**31 - 1: pickle itself would allocate a 16 GiB memo
  _zip_with_pickle(huge_memo, b"\x80\x02K\x01r\xff\xff\xff\x7f.")
  cases["huge_memo"] = huge_memo.getvalue()
  for cut in (10, 100, len(zip_bytes) // 2, len(zip_bytes) - 30, len(zip_bytes) - 1):
    cases[f"zip_cut{cut}"] = zip_bytes[:cut]
  for cut in (1, 20, 200, len(legacy_bytes) // 2, len(legacy_bytes) - 1):
    cases[f"legacy_cut{cut}"] = legacy_bytes[:cut]
  for name, data in cases.items():
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(pth.PthError) as e:
      pth.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a PyTorch checkpoint") and "\n" not in msg, (name, msg)
    if "_cut" in name:  # says what went wrong, not only what the file is not
      assert "cut short" in msg, (name, msg)
  with pytest.raises(pth.PthError) as e:
    pth.load(tmp_path / "missing.pth")
  assert str(e.value) == f"{tmp_path / 'missing.pth'}: no such file"
  with pytest.raises(pth.PthError) as e:
    pth.load(tmp_path)
  assert str(e.value) == f"{tmp_path}: is a directory"


def _damage(data, rng):
  damaged = bytearray(data)
  for _ in range(rng.randint(1, 4)):
    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
  return bytes(damaged)


@pytest.mark.parametrize("mode", ["zip", "legacy", "zip_pickle"])
def test_fuzz(tmp_path, mode):
  """Damaged files give a result or a PthError, never another exception."""
  src, path = tmp_path / "src.pth", tmp_path / "fuzz.pth"
  torch.save({"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3), "h": [1.5, "x"]}, src,
             **_MODES[mode.split("_")[0]])
  with zipfile.ZipFile(src) if mode == "zip_pickle" else contextlib.nullcontext() as zf:
    records = {n: zf.read(n) for n in zf.namelist()} if zf else {}
  outcomes = collections.Counter()
  for seed in range(60):
    rng = random.Random(seed)
    if mode == "zip_pickle":  # damage data.pkl only, in a valid zip (CRCs right)
      with zipfile.ZipFile(path, "w") as zf:
        for name, data in records.items():
          zf.writestr(name, _damage(data, rng) if name.endswith("/data.pkl") else data)
    else:
      path.write_bytes(_damage(src.read_bytes(), rng))
    try:
      pth.load(path)
      outcomes["loaded"] += 1
    except pth.PthError as e:
      assert "\n" not in str(e)
      outcomes["refused" if "refused" in str(e) else "error"] += 1
  assert outcomes["error"] > 0, outcomes


def test_views_that_repeat_elements_load_and_cannot_take_gigabytes(tmp_path):
  """An expand()ed tensor (stride 0) is read as its values; a 1.5 kB file whose view would make
  2 GB (it did, before any key was checked) is refused at once."""
  path = tmp_path / "expanded.pth"
  torch.save({"bias": torch.arange(3.0).expand(64, 3)}, path)
  np.testing.assert_array_equal(pth.load(path)["bias"], np.tile(np.arange(3.0), (64, 1)))
  torch.save({"w": torch.zeros(1).expand(25000, 20000)}, path)
  assert os.path.getsize(path) < 4096
  with pytest.raises(pth.PthError, match="stride 0.* over 256 MiB: not a checkpoint's weights"):
    pth.load(path)


def test_sets_of_pickle_protocol_2_and_a_deflated_zip_load(tmp_path):
  """torch.save's default pickle (protocol 2) writes a set as a call of __builtin__.set (it was
  refused as code); a checkpoint re-zipped with compression reads as torch.load reads it."""
  path = tmp_path / "sets.pth"
  state = {"w": torch.arange(6.0).reshape(2, 3)}
  torch.save({"state_dict": state, "tags": {1, 2}, "frozen": frozenset({"a"})}, path)
  loaded = pth.load(path)
  assert loaded["tags"] == {1, 2} and loaded["frozen"] == frozenset({"a"})
  deflated = tmp_path / "deflated.pth"
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
      dst.writestr(info.filename, src.read(info))
  assert torch.load(deflated, weights_only=False)["tags"] == {1, 2}  # (weights_only: no frozenset)
  np.testing.assert_array_equal(pth.load_state_dict(deflated)["w"], state["w"].numpy())
