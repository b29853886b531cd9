"""A training window's frames read from the clip's record without decoding it (data.raw_records)."""

import numpy as np

from tcvc_jax.data import building as data_building
from tcvc_jax.data import eval_pipeline
from tcvc_jax.data import input_pipeline as ip
from tcvc_jax.data import raw_records

import data_testlib as dt


def _name(element):
  clip = element["clip"]
  return clip.decode() if isinstance(clip, bytes) else clip


def test_every_record_reads_as_the_data_source_decodes_it(tmp_path):
  # Non-square clips of several lengths, from frame folders (the users' data) and a video file.
  rng = np.random.default_rng(0)
  root = tmp_path / "clips"
  for name, (n, h, w) in {"a": (5, 24, 40), "b": (9, 40, 24), "c": (2, 8, 8)}.items():
    dt.write_frames(str(root / name), dt.random_clip(rng, n, h, w))
  dt.write_video(str(root / "movie.mkv"), dt.random_clip(rng, 3, 16, 32))
  data_building.build("video_frames", str(tmp_path / "tfds"), config="folder",
                      manual_dir=str(root))
  source, index = data_building.open_split("video_frames", "train", str(tmp_path / "tfds"),
                                           config="folder")
  assert len(source) == 4
  for record in range(len(source)):
    raw, decoded = raw_records.clip_element(source, record), source[record]
    assert raw is not None and raw["clip"] == _name(decoded)
    np.testing.assert_array_equal(raw["frames"], decoded["frames"])
    assert raw["frames"].dtype == np.uint8 and not raw["frames"].flags.writeable
  # The training windows hold those frames (cropped and flipped as one).
  counted = _CountingDecodes(source)
  windows = ip.SampleWindow(counted, index, ip.WindowSpec(num_frames=2, crop_size=(8, 8)))
  for key in range(int(np.sum(index.num_frames))):
    element = windows.random_map(key, np.random.default_rng(key))
    clip = int(np.searchsorted(index.offsets, key, side="right")) - 1
    frames = source[int(index.records[clip])]["frames"][element["frame_ids"]]
    assert any(np.array_equal(element["rgb"], c) for c in _crops_and_flips(frames, 8, 8)), key
  # So do the validation / evaluation chunks (3 frames each, clips padded to 40x40).
  chunks = eval_pipeline.make_eval_dataset(counted, index, batch_size=1, max_frames=3)
  for element in chunks:
    if element["mask"]:
      n, h, w = (int(element[k]) for k in ("num_frames", "height", "width"))
      clip = list(index.records).index(int(element["clip_id"]))
      start = int(element["start"])
      expected = source[int(element["clip_id"])]["frames"][start:start + n]
      assert (n, h, w) == expected.shape[:3] and expected.shape[1:3] == (
          index.heights[clip], index.widths[clip])
      np.testing.assert_array_equal(element["rgb"][:n, :h, :w], expected)
  assert counted.decoded == 0  # no record decoded whole


class _CountingDecodes:
  """A TFDS source that counts the records it decodes."""

  def __init__(self, source):
    self._source, self.decoded = source, 0
    self.data_source = source.data_source
    self.deserialize_method, self.decoders = source.deserialize_method, source.decoders

  def __len__(self):
    return len(self._source)

  def __getitem__(self, record):
    self.decoded += 1
    return self._source[record]


def _crops_and_flips(frames, ch, cw):
  for top in range(frames.shape[1] - ch + 1):
    for left in range(frames.shape[2] - cw + 1):
      crop = frames[:, top:top + ch, left:left + cw]
      for flipped in (crop, crop[:, :, ::-1]):
        yield flipped
        yield flipped[:, ::-1].transpose(0, 2, 1, 3)


class _Decode:
  name = "DESERIALIZE_AND_DECODE"


class _RecordsOnly:
  """A TFDS-like source of hand-made records."""

  deserialize_method, decoders = _Decode(), None

  def __init__(self, records):
    self.data_source = records


def _ld(number, payload):  # a length-delimited protobuf field
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(v):
  out = b""
  while True:
    out += bytes([v & 0x7F | (0x80 if v > 0x7F else 0)])
    v >>= 7
    if not v:
      return out


def _example(frames, shape, clip=b"x", extra=b""):
  def entry(key, feature):
    return _ld(1, _ld(1, key) + _ld(2, feature))
  packed = b"".join(_varint(d) for d in shape)
  features = (entry(b"frames/shape", _ld(3, _ld(1, packed)))
              + entry(b"frames/value", _ld(1, _ld(1, frames)))
              + entry(b"clip", _ld(1, _ld(1, clip))) + extra)
  return _ld(1, features)


def test_hand_made_records_and_other_layouts():
  frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
  good = _example(frames.tobytes(), frames.shape, b"clip \xc3\xa9")
  element = raw_records.clip_element(_RecordsOnly([good]), 0)
  assert element["clip"] == "clip \u00e9"
  np.testing.assert_array_equal(element["frames"], frames)
  # Anything else is left to the data source's own decoding: None, never an exception.
  others = [
      b"", b"\x00garbage", good[:-3], good + b"\x08",
      _example(frames.tobytes(), (2, 3, 4, 1)),  # shape and bytes disagree
      _example(frames.tobytes(), (2, 3, 4)),
      _example(frames.tobytes()[:-1], frames.shape),
      _example(frames.tobytes(), frames.shape, b"\xff"),  # not UTF-8
      _example(frames.tobytes(), frames.shape, extra=_ld(1, _ld(1, b"frames/value") + _ld(
          2, _ld(1, _ld(1, b"ab") + _ld(1, b"cd"))))),  # two values
      _ld(1, _ld(1, _ld(1, b"frames/value") + _ld(2, _ld(1, _ld(1, frames.tobytes()))))),
  ]
  for record in range(len(others)):
    assert raw_records.clip_element(_RecordsOnly(others), record) is None, record
  # Sources that are not TFDS ArrayRecord sources, or decode otherwise.
  assert raw_records.clip_element(dt.marked_source([3]), 0) is None
  with_decoders = _RecordsOnly([good])
  with_decoders.decoders = {"frames": object()}
  assert raw_records.clip_element(with_decoders, 0) is None
