"""A clip's frames from its TFDS records without decoding the records.

A training window takes N frames of a clip, but a TFDS data source decodes a whole record: all its
raw frames, ~54 MB for 200 frames at 300x300, copied and parsed for 12 of them (the input
pipeline's benchmark: 85.8 windows/s from 40-frame clips, 6.8 from 200-frame clips). A long clip
takes several records (`sources.ClipIndex.chunk_frames`), and a window reads those that hold its
frames. Our builders store a record's frames as one bytes value (`tfds.features.Tensor`,
`Encoding.BYTES`) with their shape beside it, in a `tf.train.Example`; reading the serialized
record's protobuf fields gives a view of those bytes, from which the window copies its frames
alone. A record laid out otherwise (another TFDS version, a source with decoders) gives None, and
the caller decodes it whole.
"""

from typing import Any
from typing import Iterator

import numpy as np

from tcvc_jax.data import sources

_FRAMES, _SHAPE, _CLIP = b"frames/value", b"frames/shape", b"clip"


class _Unexpected(Exception):
  """The record is not laid out as expected."""


def clip_frames(source: Any, index: sources.ClipIndex, clip: int, start: int = 0,
                stop: int | None = None) -> np.ndarray:
  """Frames `start:stop` (default: all) of clip `clip` of `index`, from the records that hold
  them (each checked by `sources.check_element`): read in place where `source` allows (a
  read-only view where one record holds them all), else decoded by it."""
  stop = int(index.num_frames[clip]) if stop is None else int(stop)
  parts = []
  for record, first, end in index.record_slices(clip, int(start), stop):
    element = clip_element(source, record)
    frames = sources.check_element(source[record] if element is None else element, index, clip,
                                   record)
    parts.append(frames[first:end])
  if not parts:
    raise ValueError(f"no frames {start}:{stop} in clip {index.names[clip]!r} of "
                     f"{int(index.num_frames[clip])} frames")
  return parts[0] if len(parts) == 1 else np.concatenate(parts)


def clip_element(source: Any, record: int) -> dict[str, Any] | None:
  """{'clip': its name, 'frames': [T, H, W, 3] uint8, a read-only view} of record `record` of a TFDS
  ArrayRecord data source, read without decoding its frames; None where `source` is not such a
  source or the record is laid out otherwise."""
  records = getattr(source, "data_source", None)
  method = getattr(getattr(source, "deserialize_method", None), "name", None)
  if records is None or method != "DESERIALIZE_AND_DECODE" or getattr(source, "decoders", None):
    return None
  buf = records[record]
  if not isinstance(buf, bytes):
    return None
  try:
    features = _features(buf)
    (start, end), = _bytes_values(buf, features[_FRAMES])
    shape = _int64_values(buf, features[_SHAPE])
    (name_start, name_end), = _bytes_values(buf, features[_CLIP])
    name = buf[name_start:name_end].decode("utf-8")
  except (_Unexpected, KeyError, ValueError, IndexError, UnicodeDecodeError):
    return None
  if len(shape) != 4 or shape[3] != 3 or min(shape) < 0 or int(np.prod(shape)) != end - start:
    return None
  frames = np.frombuffer(buf, np.uint8, count=end - start, offset=start).reshape(shape)
  return {"clip": name, "frames": frames}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = buf[i]
    i += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, i
    shift += 7
    if shift > 63:
      raise _Unexpected("varint too long")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
  """(field number, wire type, value: an int, or (start, end) of a length-delimited field)."""
  i = start
  while i < end:
    tag, i = _varint(buf, i)
    number, wire = tag >> 3, tag & 7
    if wire == 0:
      value, i = _varint(buf, i)
      yield number, wire, value
    elif wire == 2:
      length, i = _varint(buf, i)
      if i + length > end:
        raise _Unexpected("field runs past its message")
      yield number, wire, (i, i + length)
      i += length
    elif wire in (1, 5):
      i += 8 if wire == 1 else 4
    else:
      raise _Unexpected(f"wire type {wire}")
  if i != end:
    raise _Unexpected("message ends inside a field")


def _only(buf: bytes, span: tuple[int, int], number: int) -> tuple[int, int]:
  """The span of the one length-delimited field `number` of the message at `span`."""
  found = [v for n, w, v in _fields(buf, *span) if n == number and w == 2]
  if len(found) != 1:
    raise _Unexpected(f"{len(found)} fields {number}")
  return found[0]


def _features(buf: bytes) -> dict[bytes, tuple[int, int]]:
  """tf.train.Example -> {feature name: span of its tf.train.Feature}."""
  features = _only(buf, (0, len(buf)), 1)  # Example.features
  out = {}
  for number, wire, entry in _fields(buf, *features):
    if number != 1 or wire != 2:  # Features.feature, map<string, Feature>
      continue
    key = _only(buf, entry, 1)
    out[buf[key[0]:key[1]]] = _only(buf, entry, 2)
  return out


def _bytes_values(buf: bytes, feature: tuple[int, int]) -> list[tuple[int, int]]:
  """Spans of the values of a Feature holding a bytes_list."""
  values = _only(buf, feature, 1)  # Feature.bytes_list
  return [v for n, w, v in _fields(buf, *values) if n == 1 and w == 2]


def _int64_values(buf: bytes, feature: tuple[int, int]) -> list[int]:
  """The values of a Feature holding an int64_list (packed or not)."""
  values = _only(buf, feature, 3)  # Feature.int64_list
  out = []
  for number, wire, value in _fields(buf, *values):
    if number != 1:
      continue
    if wire == 0:
      out.append(value)
    elif wire == 2:  # packed
      i = value[0]
      while i < value[1]:
        v, i = _varint(buf, i)
        out.append(v)
  return [v - (1 << 64) if v >= 1 << 63 else v for v in out]
