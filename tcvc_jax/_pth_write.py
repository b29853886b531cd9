"""The bytes of a torch zip-format state_dict, for `tcvc_jax.pth.save`: a protocol 2 pickle built
from opcodes (no torch import) and torch's zip layout (stored records, data 64-byte aligned); and
the torch dtypes and storage classes that reading and writing both name.
"""

import math
import os
import struct
import zipfile

import ml_dtypes
import numpy as np

DTYPES = {  # torch dtype: (numpy type, legacy storage class prefix)
    "float64": (np.float64, "Double"), "float32": (np.float32, "Float"),
    "float16": (np.float16, "Half"), "bfloat16": (ml_dtypes.bfloat16, "BFloat16"),
    "int64": (np.int64, "Long"), "int32": (np.int32, "Int"), "int16": (np.int16, "Short"),
    "int8": (np.int8, "Char"), "uint8": (np.uint8, "Byte"), "bool": (np.bool_, "Bool"),
    "complex64": (np.complex64, "ComplexFloat"), "complex128": (np.complex128, "ComplexDouble"),
    "uint16": (np.uint16, ""), "uint32": (np.uint32, ""), "uint64": (np.uint64, ""),
    "float8_e4m3fn": (ml_dtypes.float8_e4m3fn, ""), "float8_e5m2": (ml_dtypes.float8_e5m2, ""),
    "float8_e4m3fnuz": (ml_dtypes.float8_e4m3fnuz, ""),
    "float8_e5m2fnuz": (ml_dtypes.float8_e5m2fnuz, "")}
STORAGES = {f"{s}Storage": np.dtype(t) for t, s in DTYPES.values() if s}
SAVE_TYPES = {dtype: name for name, dtype in STORAGES.items()}
ALIGN = 64  # torch aligns the data of each zip record to 64 bytes


def c_strides(shape):
  """torch's strides of a contiguous tensor of `shape` (a size-0 dim counts as 1)."""
  return tuple(math.prod(max(n, 1) for n in shape[d + 1:]) for d in range(len(shape)))


def _int_op(n):  # BININT1, BININT, LONG1
  if n < 2**31:
    return b"K" + bytes([n]) if n < 256 else b"J" + struct.pack("<i", n)
  data = n.to_bytes(n.bit_length() // 8 + 1, "little")
  return b"\x8a" + bytes([len(data)]) + data


def _str_op(text):  # BINUNICODE
  data = text.encode("utf-8", "surrogatepass")
  return b"X" + struct.pack("<I", len(data)) + data


def state_dict_pickle(entries):
  """data.pkl: OrderedDict(key: tensor on storage str(i)) for i, (key, storage class, shape)."""
  ordered_dict = b"ccollections\nOrderedDict\n)R"  # GLOBAL, EMPTY_TUPLE, REDUCE
  out = [b"\x80\x02", ordered_dict, b"(" if entries else b""]  # PROTO, ..., MARK
  for i, (key, storage_type, shape) in enumerate(entries):
    storage_id = [_str_op("storage"), f"ctorch\n{storage_type}\n".encode(), _str_op(str(i)),
                  _str_op("cpu"), _int_op(math.prod(shape))]  # in MARK, TUPLE, BINPERSID
    out += [_str_op(key), b"ctorch._utils\n_rebuild_tensor_v2\n((", *storage_id, b"tQ", _int_op(0),
            b"(", *map(_int_op, shape), b"t(", *map(_int_op, c_strides(shape)), b"t\x89",
            ordered_dict, b"tR"]  # offset, size, stride, requires_grad, hooks
  return b"".join(out) + (b"u." if entries else b".")  # SETITEMS, STOP


def array_bytes(array):
  """The bytes of `array` in C order, little-endian."""
  little = array.astype(np.dtype(array.dtype.type).newbyteorder("<"), order="C", copy=False)
  return memoryview(np.ascontiguousarray(little).reshape(-1).view(np.uint8))


def write_zip(f, entries, arrays, extra=None):
  """Writes the records of torch.save to the seekable file `f`; `arrays` in `entries` order.

  `extra` {name: bytes} become `extra/<name>` records, which torch.load ignores.
  """
  records = [("data.pkl", state_dict_pickle(entries)), (".format_version", b"1"),
             (".storage_alignment", str(ALIGN).encode()), ("byteorder", b"little")]
  records += [(f"data/{i}", a) for i, a in enumerate(arrays)]
  records += [(f"extra/{name}", bytes(data)) for name, data in (extra or {}).items()]
  records += [("version", b"3\n")]
  with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
    for name, value in records:
      data = value if isinstance(value, bytes) else array_bytes(value)
      info = zipfile.ZipInfo("archive/" + name)
      info.file_size = len(data)
      zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's rule; adds a 20-byte extra
      pad = -(f.tell() + 30 + len(info.filename) + (20 if zip64 else 0) + 4) % ALIGN
      info.extra = struct.pack("<HH", 0x4246, pad) + bytes(pad)  # torch's "FB" padding field
      with zf.open(info, "w", force_zip64=zip64) as w:
        w.write(data)


def read_extra(path, name):
  """The `extra/<name>` record `write_zip(..., extra)` wrote, or None (absent; not a zip file)."""
  try:
    with zipfile.ZipFile(os.fspath(path)) as zf:
      found = [i for i in zf.infolist() if i.filename.split("/", 1)[-1] == f"extra/{name}"]
      return zf.read(found[0]) if found else None
  except (OSError, zipfile.BadZipFile, ValueError):
    return None
