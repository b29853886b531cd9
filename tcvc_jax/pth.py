"""PyTorch checkpoints (`torch.save` files) read and written with numpy only; nothing in them runs.

Pickles see an allow-list of stand-ins that build numpy arrays from the file's bytes; any other
global (`os.system`, a model class) stops the load before anything is called."""

import collections
import io
import math
import os
import pickle
import pickletools
import struct
import sys
import zipfile
import zlib

import numpy as np

from tcvc_jax import _pth_write
from tcvc_jax import atomic

_MAGIC, _PROTOCOL = 0x1950A86A20F9469CFC6C, 1001  # the first two pickles of a legacy file
_NUMPY_CODES = ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
_ATOMS = (type(None), bool, int, float, complex, str, bytes, bytearray)
_MAX_REPEATED_BYTES = 256 << 20  # what stride-0 views and deflated records may add to a load
_OPCODES = frozenset((  # the binary opcodes, less those of extensions and out-of-band buffers
    "PROTO FRAME STOP MARK POP POP_MARK DUP NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 LONG1 "
    "LONG4 BINFLOAT SHORT_BINSTRING BINSTRING SHORT_BINBYTES BINBYTES BINBYTES8 SHORT_BINUNICODE "
    "BINUNICODE BINUNICODE8 EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS "
    "EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET GLOBAL STACK_GLOBAL REDUCE "
    "BUILD BINPERSID BINGET LONG_BINGET BINPUT LONG_BINPUT MEMOIZE").split())

# What the stand-ins build. Namedtuples are immutable: a pickle's BUILD cannot change them.
_Storage = collections.namedtuple("_Storage", "key dtype offset numel")  # elements of root `key`
_Tensor = collections.namedtuple("_Tensor", "key offset size stride dtype")  # offset in bytes


class PthError(ValueError):
  """Not a readable checkpoint, or a state_dict that cannot be saved; the message names the path."""


class _Bad(Exception):
  """Internal: the bytes are not a checkpoint (the message says why)."""


class _Refused(Exception):
  """Internal: the pickle names a global outside the allow-list (the message names it)."""


class _Global(collections.namedtuple("_Global", "name kind fn value")):
  """What `find_class` returns for an allowed global; calling it runs only `fn`."""
  __slots__ = ()

  def __call__(self, *args):
    _check(self.fn is not None, f"{self.name} called")
    return self.fn(*args)


class _ODict(dict):
  """collections.OrderedDict; BUILD (a state_dict's `_metadata`) is ignored."""
  __slots__ = ()

  def __setstate__(self, state):
    pass


class _NumpyDtype:
  """numpy.dtype(code, align, copy), as numpy scalars pickle it; BUILD sets the byte order."""
  __slots__ = ("dtype",)

  def __init__(self, code, align=False, copy=False):
    _check(type(code) is str and code in _NUMPY_CODES, f"numpy dtype {code!r}")
    self.dtype = np.dtype(code)

  def __setstate__(self, state):
    _check(type(state) is tuple and len(state) > 1 and state[1] in ("<", ">", "|", "="),
           "bad numpy dtype state")
    self.dtype = self.dtype.newbyteorder(state[1]) if state[1] in "<>" else self.dtype


def _numpy_scalar(dtype, data):
  data = data.encode("latin-1") if type(data) is str else data  # a Python 2 str
  _check(type(dtype) is _NumpyDtype and type(data) is bytes and len(data) == dtype.dtype.itemsize,
         "bad numpy scalar")
  return np.frombuffer(data, dtype.dtype)[0]


def _encode(text, encoding):  # _codecs.encode: how protocol 2 pickles bytes
  _check(type(text) is str and encoding in ("latin1", "latin-1"), "bad _codecs.encode")
  return text.encode("latin-1")


def _check(ok, reason):
  if not ok:
    raise _Bad(reason)


def _ints(values, what):
  _check(type(values) in (tuple, list) and all(type(v) is int and v >= 0 for v in values),
         f"bad {what}")
  return tuple(values)


class _Unpickler(pickle.Unpickler):
  """Finds globals only in `allowed`; persistent ids go to `persistent`."""

  def __init__(self, file, allowed, persistent):
    super().__init__(file, encoding="latin-1")
    self._allowed, self._persistent = allowed, persistent

  def find_class(self, module, name):
    if (module, name) not in self._allowed:
      raise _Refused(f"{module}.{name}")
    return self._allowed[(module, name)]

  def persistent_load(self, pid):
    _check(self._persistent is not None, "unexpected persistent id")
    return self._persistent(pid)


class _Reader:
  """One load: the allowed globals, the storages the pickles name (`roots`), the arrays built."""

  def __init__(self, read_raw=None, swap=False):  # read_raw(key, nbytes): new uint8 array
    self.read_raw, self.swap, self.roots, self._uses, self._cache = read_raw, swap, {}, {}, {}
    self.globals = {}
    self._repeated = 0  # bytes that views repeating their storage's bytes add (stride 0)

    def add(module, name, kind, fn=None, value=None):
      self.globals[(module, name)] = _Global(f"{module}.{name}", kind, fn, value)

    def rebuild_v3(storage, offset, size, stride, grad, hooks, dtype, metadata=None):
      _check(type(dtype) is _Global and dtype.kind == "dtype", "bad tensor dtype")
      return self.tensor(storage, offset, size, stride, dtype.value)

    def parameter(data, *unused_grad_hooks_state):
      _check(type(data) is _Tensor, "bad Parameter")
      return data

    def from_type(func, new_type, args, state):  # a tensor with Python attributes
      _check(type(func) is _Global and getattr(new_type, "kind", "") == "type"
             and type(args) is tuple, "bad tensor subclass")
      return func(*args)

    add("collections", "OrderedDict", "call", _ODict)
    add("torch", "Size", "call", lambda dims=(): _ints(dims, "torch.Size"))
    add("torch._utils", "_rebuild_tensor", "call", self.tensor)
    add("torch._utils", "_rebuild_tensor_v2", "call", lambda s, o, size, stride, grad, hooks,
        metadata=None: self.tensor(s, o, size, stride))
    add("torch._utils", "_rebuild_tensor_v3", "call", rebuild_v3)
    add("torch._utils", "_rebuild_parameter", "call", parameter)
    add("torch._utils", "_rebuild_parameter_with_state", "call", parameter)
    add("torch._tensor", "_rebuild_from_type_v2", "call", from_type)
    add("torch", "Tensor", "type")
    add("torch.nn.parameter", "Parameter", "type")
    for name, dtype in [*_pth_write.STORAGES.items(), ("UntypedStorage", np.dtype(np.uint8))]:
      for module in ("torch", "torch.cuda", "torch.storage"):
        add(module, name, "storage", value=dtype)
    for name, (dtype, _) in _pth_write.DTYPES.items():
      add("torch", name, "dtype", value=np.dtype(dtype))
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
      add(module, "scalar", "call", _numpy_scalar)
    add("numpy", "dtype", "call", _NumpyDtype)
    add("_codecs", "encode", "call", _encode)
    for module in ("builtins", "__builtin__"):  # sets of pickle protocol 2 (torch's default)
      add(module, "set", "call", lambda items=(): set(items))
      add(module, "frozenset", "call", lambda items=(): frozenset(items))

  def unpickle(self, file, persistent=None):
    """Unpickles from `file` once its opcodes pass: known, GLOBALs allowed, memo indices small."""
    start = file.tell()  # (a huge LONG_BINPUT index would make pickle allocate a huge memo)
    for i, (op, arg, _) in enumerate(pickletools.genops(file)):
      _check(op.name in _OPCODES, f"pickle opcode {op.name}")
      _check(op.name not in ("BINPUT", "LONG_BINPUT") or arg <= i, "bad pickle memo index")
      if op.name == "GLOBAL" and tuple(arg.split(" ", 1)) not in self.globals:
        raise _Refused(arg.replace(" ", "."))
    file.seek(start)
    return _Unpickler(file, self.globals, persistent).load()

  def storage(self, pid):
    """persistent_load: ('storage', type, key, location, numel[, legacy view or None])."""
    _check(type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage", "bad persistent id")
    stype, key, (numel,) = pid[1], pid[2], _ints(pid[4:5], "storage size")
    _check(type(stype) is _Global and stype.kind == "storage" and type(key) is str, "bad storage")
    _check(self.roots.setdefault(key, (stype.value, numel)) == (stype.value, numel),
           f"storage {key} named with two sizes or types")
    view = pid[5] if len(pid) == 6 else None  # (view key, offset, numel) of old torch
    if view is None:
      return _Storage(key, stype.value, 0, numel)
    offset, view_numel = _ints(view[1:] if type(view) is tuple and len(view) == 3 else "", "view")
    _check(offset + view_numel <= numel, "bad storage view")
    return _Storage(key, stype.value, offset, view_numel)

  def tensor(self, storage, offset, size, stride, dtype=None):
    """_rebuild_tensor, once it is clear that the tensor lies inside its storage."""
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    (offset,) = _ints([offset], "tensor offset")
    _check(type(storage) is _Storage and len(size) == len(stride), "bad tensor")
    dtype = storage.dtype if dtype is None else dtype
    start = storage.offset * storage.dtype.itemsize + offset * dtype.itemsize
    span = sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    end = start + span * dtype.itemsize
    _check(0 in size or end <= (storage.offset + storage.numel) * storage.dtype.itemsize,
           "tensor out of its storage")
    if 0 not in size and math.prod(size) > span:  # a view that repeats elements (an expand())
      self._repeated += (math.prod(size) - span) * dtype.itemsize
      _check(self._repeated <= _MAX_REPEATED_BYTES, "views repeating their storages' bytes "
             "(stride 0) would take over 256 MiB: not a checkpoint's weights")
    self._uses[storage.key] = self._uses.get(storage.key, 0) + 1
    return _Tensor(storage.key, start, size, stride, dtype)

  def array(self, t, may_take=True):
    """The numpy array of `t`: C-contiguous, in this machine's byte order, sharing nothing."""
    dtype, numel = self.roots[t.key]
    nbytes, count, item = numel * dtype.itemsize, math.prod(t.size), t.dtype.itemsize
    # The one tensor on a storage, covering all of it, takes the buffer instead of a copy.
    take = (may_take and self._uses[t.key] == 1 and t.offset == 0 and count * item == nbytes
            and t.stride == _pth_write.c_strides(t.size))
    raw = self._cache.get(t.key)
    if raw is None:
      raw = self._cache[t.key] = self.read_raw(t.key, nbytes)
    if take:
      del self._cache[t.key]
    if count == 0:
      return np.empty(t.size, t.dtype)
    if not take:
      raw = np.lib.stride_tricks.as_strided(
          raw[t.offset:], t.size + (item,), tuple(s * item for s in t.stride) + (1,)).copy()
    out = raw.view(t.dtype).reshape(t.size)
    return out.byteswap(inplace=True) if self.swap else out

  def finish(self, obj):
    """`obj` with its stand-ins replaced by arrays, dicts and numpy dtypes."""
    memo = {}

    def walk(x):
      if type(x) in _ATOMS or isinstance(x, np.generic):
        return x
      if id(x) not in memo:
        if type(x) is _Tensor:
          memo[id(x)] = self.array(x)
        elif type(x) is _Storage:
          t = _Tensor(x.key, x.offset * x.dtype.itemsize, (x.numel,), (1,), x.dtype)
          memo[id(x)] = self.array(t, may_take=False)
        elif type(x) in (dict, _ODict):
          memo[id(x)] = {}
          memo[id(x)].update((walk(k), walk(v)) for k, v in x.items())
        elif type(x) is list:
          memo[id(x)] = []
          memo[id(x)].extend(walk(v) for v in x)
        elif type(x) in (tuple, set, frozenset):
          memo[id(x)] = type(x)(walk(v) for v in x)
        elif type(x) in (_Global, _NumpyDtype) and getattr(x, "kind", "dtype") == "dtype":
          memo[id(x)] = x.value if type(x) is _Global else x.dtype
        else:
          raise _Bad(f"unexpected {getattr(x, 'name', type(x).__name__)} object")
      return memo[id(x)]

    return walk(obj)


def _read_at(f, offset, nbytes):
  buf = np.empty(nbytes, np.uint8)
  f.seek(offset)
  _check(f.readinto(buf) == nbytes, "truncated")
  return buf


def _load_zip(f, file_size):
  try:
    zf = zipfile.ZipFile(f)
  except zipfile.BadZipFile:  # its directory, at the end, is missing
    raise _Bad("a zip file cut short: an incomplete download or copy?") from None
  infos = {i.filename: i for i in zf.infolist()}
  first = next(iter(infos), "")
  prefix = first[:first.find("/") + 1]  # torch's archive folder: that of the first record
  _check(prefix and prefix + "data.pkl" in infos, "no data.pkl")
  inflated = [0]  # bytes of the compressed records read

  def record(name, nbytes=None):
    info = infos.get(prefix + name)
    _check(info is not None, f"no {name} record")
    _check(nbytes in (None, info.file_size), f"{name} has the wrong size")
    if info.compress_type != zipfile.ZIP_STORED:  # torch stores; a zip tool may deflate
      inflated[0] += info.file_size
      _check(inflated[0] <= 64 * file_size + _MAX_REPEATED_BYTES, f"{name} inflates too much")
      return np.frombuffer(zf.read(info), np.uint8).copy()  # (zipfile checks its CRC)
    f.seek(info.header_offset)
    head = f.read(30)
    _check(len(head) == 30 and head[:4] == b"PK\x03\x04", f"bad zip entry {name}")
    start = info.header_offset + 30 + sum(struct.unpack("<HH", head[26:]))
    _check(start + info.file_size <= file_size, "truncated")
    buf = _read_at(f, start, info.file_size)
    _check(info.CRC in (0, zlib.crc32(buf)), f"bad CRC in {name}")  # 0: torch told not to compute
    return buf

  order = record("byteorder").tobytes() if prefix + "byteorder" in infos else b"little"
  _check(order in (b"little", b"big"), "bad byteorder record")
  reader = _Reader(lambda key, nbytes: record(f"data/{key}", nbytes),
                   swap=order.decode() != sys.byteorder)
  return reader.finish(reader.unpickle(io.BytesIO(record("data.pkl").tobytes()), reader.storage))


def _load_legacy(f, file_size):
  reader = _Reader(swap=sys.byteorder != "little")
  _check(reader.unpickle(f) == _MAGIC and reader.unpickle(f) == _PROTOCOL, "bad magic number")
  reader.unpickle(f)  # sys_info
  obj = reader.unpickle(f, reader.storage)
  keys = reader.unpickle(f)  # then for each storage: int64 numel, bytes
  starts, pos = {}, f.tell()
  for key in keys if type(keys) is list else [None]:
    _check(type(key) is str and key in reader.roots, f"storage {key!r} not in the pickle")
    dtype, numel = reader.roots[key]
    _check(struct.unpack("<q", _read_at(f, pos, 8).tobytes())[0] == numel,
           f"storage {key} has the wrong size")
    starts[key], pos = pos + 8, pos + 8 + numel * dtype.itemsize
  _check(pos <= file_size and len(starts) == len(reader.roots), "truncated, or a storage missing")
  reader.read_raw = lambda key, nbytes: _read_at(f, starts[key], nbytes)
  return reader.finish(obj)


def load(path):
  """Reads a zip-format (torch >= 1.6) or legacy (torch < 1.6) `torch.save` file; runs no code.

  Returns the saved object: tensors and Parameters as C-contiguous numpy arrays of their dtype
  (bfloat16, float8: ml_dtypes), (Ordered)Dicts as dicts in file order, torch.Size as tuples, torch
  dtypes as numpy dtypes; lists, tuples, numbers, strings and None as themselves. Raises PthError
  if the path is missing or a directory, the file is not a PyTorch checkpoint, or its pickle names
  a global outside the allow-list (nothing is called then).
  """
  path = os.fsdecode(os.fspath(path))
  if os.path.isdir(path):
    raise PthError(f"{path}: is a directory")
  try:
    with open(path, "rb") as f:
      file_size, head = os.fstat(f.fileno()).st_size, f.read(4)
      if head == b"PK\x03\x04":
        return _load_zip(f, file_size)
      if head[:1] == b"\x80":
        f.seek(0)
        return _load_legacy(f, file_size)
      raise _Bad("empty file" if not head else "unknown format")
  except FileNotFoundError:
    raise PthError(f"{path}: no such file") from None
  except PermissionError as e:
    raise PthError(f"{path}: cannot read ({e.strerror})") from None
  except _Refused as e:
    hint = (": a whole pickled model? torch.save(model.state_dict(), path) saves what converts"
            if str(e).startswith(("torch.nn.", "__main__.")) else  # a pickled nn.Module, likely
            "; nothing was run: a file of tensors and plain values converts, e.g. "
            "torch.save(model.state_dict(), path)")
    raise PthError(f"{path}: refused: the file asks to run code ({e}){hint}") from None
  except MemoryError as e:
    raise PthError(f"{path}: not enough memory to read it ({e})") from None
  except Exception as e:  # noqa: BLE001  # damaged bytes raise many types
    reason = (str(e) if isinstance(e, _Bad)  # (foreign messages: one line, the first 80 chars)
              else " ".join(f"{type(e).__name__}: {e}".split()).rstrip(":")[:80])
    if any(w in reason for w in ("EOFError", "exhausted", "enough data", "newline", "truncated")):
      reason += "; the file is cut short: an incomplete download or copy?"
    raise PthError(f"{path}: not a PyTorch checkpoint ({reason})") from None


def load_state_dict(path):
  """`load`, then the state_dict in it (`_pth_unwrap.state_dict_of`: the object, or the one
  state_dict entry of a checkpoint dict): a non-empty {str: array} in file order."""
  from tcvc_jax import _pth_unwrap  # pylint: disable=g-import-not-at-top  # (it imports this)
  return _pth_unwrap.state_dict_of(load(path), path)


def save(state_dict, path, overwrite=True, extra=None):
  """Writes {str: array} as a zip-format file that `torch.load(path, weights_only=True)` reads.

  Arrays of bool, (u)int8, int16/32/64, float16/32/64, bfloat16, complex64/128 (any byte order and
  strides) become tensors of that dtype and shape. The file is replaced at once, with the mode a
  plain open() gives under the umask (tcvc_jax.atomic). Raises PthError for other keys or values, or
  a directory; atomic.OutputExistsError if `path` exists and `overwrite` is False. `extra`
  {name: bytes} are stored as records torch ignores (`read_extra` reads them back).
  """
  path = os.fsdecode(os.fspath(path))
  if not isinstance(state_dict, dict):
    raise PthError(f"{path}: cannot save a {type(state_dict).__name__} (expected a dict of arrays)")
  entries = []
  for key, value in state_dict.items():
    array = isinstance(value, np.ndarray)
    storage_type = _pth_write.SAVE_TYPES.get(np.dtype(value.dtype.type)) if array else None
    if type(key) is not str or storage_type is None:
      what = (f"key {key!r}" if type(key) is not str else
              f"{key!r} ({value.dtype if array else type(value).__name__})")
      raise PthError(f"{path}: cannot save {what} (expected str keys and numeric numpy arrays)")
    entries.append((key, storage_type, tuple(value.shape)))
  if os.path.isdir(path):
    raise PthError(f"{path}: is a directory")
  with atomic.AtomicOutput(path, overwrite=overwrite) as out:
    with open(out.tmp, "wb") as f:
      _pth_write.write_zip(f, entries, state_dict.values(), extra)
      f.flush()
      os.fsync(f.fileno())


read_extra = _pth_write.read_extra  # the `extra` records `save` wrote
