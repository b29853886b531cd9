"""Clip sources for the input pipeline: in-memory clips, clip indices, selection, checks.

A source is any object with `__len__` and `__getitem__` whose elements are dicts with `frames`
(`[T, H, W, 3]` uint8) and `clip` (the clip name). A `ClipIndex` lists the clips' names, lengths
and sizes, so windows can be planned without decoding any frames; the builders store it
in their dataset metadata. Clip folders on disk are read by `layout`; the TFDS datasets
(datasets.py) are built and opened by `building`.
"""

import dataclasses
import os
from typing import Any
from typing import Mapping
from typing import Sequence

from absl import logging
import numpy as np

from tcvc_jax.media import reading


class DataError(reading.MediaError):
  """Unusable data: the message names the file, folder or dataset."""


@dataclasses.dataclass(frozen=True)
class ClipFiles:
  """Where one clip lives: an ordered list of frame images or one video file."""
  name: str
  frames: tuple[str, ...] = ()
  video: str | None = None
  folder: str | None = None

  @property
  def location(self) -> str:
    """The clip's video file or frame folder, for messages."""
    return self.video or self.folder or os.path.dirname(self.frames[0])

  @property
  def has_media(self) -> bool:
    """Whether the clip has a video or at least one frame image."""
    return bool(self.video or self.frames)


def clip_name(element: Mapping[str, Any]) -> str:
  """The `clip` field of a source element as str ("" if absent)."""
  name = element.get("clip", "")
  return name.decode() if isinstance(name, bytes) else str(name)


@dataclasses.dataclass(frozen=True)
class ClipIndex:
  """The clips of a source, in source order (`records[i]` is the first element of clip i).

  A clip is one element of the source, or several consecutive ones (records) of
  `chunk_frames[i]` frames each, the last holding the rest: the builders store a long clip in
  records of at most `datasets.RECORD_BYTES`, so that a window reads its own records only.

  Attributes:
    names: clip names.
    num_frames: `[C]` frames per clip.
    heights: `[C]` frame height per clip.
    widths: `[C]` frame width per clip.
    records: `[C]` element index of each clip's first record in the source.
    chunk_frames: `[C]` frames per record of each clip (None: one record per clip).
  """
  names: tuple[str, ...]
  num_frames: np.ndarray
  heights: np.ndarray
  widths: np.ndarray
  records: np.ndarray
  chunk_frames: np.ndarray | None = None

  def __post_init__(self):
    if self.chunk_frames is None:  # one record per clip
      object.__setattr__(self, "chunk_frames", np.maximum(self.num_frames, 1))

  def __len__(self) -> int:
    return len(self.names)

  @property
  def offsets(self) -> np.ndarray:
    """`[C + 1]` first frame of each clip when all frames are numbered in clip order."""
    return np.concatenate([[0], np.cumsum(self.num_frames)]).astype(np.int64)

  def num_records(self, clip: int) -> int:
    """How many records clip `clip` takes."""
    return max(1, -(-int(self.num_frames[clip]) // int(self.chunk_frames[clip])))

  @property
  def total_records(self) -> int:
    """The records of all clips (the source's length for a whole split)."""
    return sum(self.num_records(i) for i in range(len(self)))

  def record_slices(self, clip: int, start: int, stop: int) -> list[tuple[int, int, int]]:
    """`(record, first, end)` for frames `start:stop` of clip `clip`: frames `first:end` of each
    record that holds some of them, in order."""
    k = int(self.chunk_frames[clip])
    first = int(self.records[clip])
    return [(first + r, max(start - r * k, 0), min(stop - r * k, k))
            for r in range(start // k, -(-stop // k))]

  def record_length(self, clip: int, record: int) -> int:
    """Frames in `record` of clip `clip`."""
    k = int(self.chunk_frames[clip])
    return min(k, int(self.num_frames[clip]) - (record - int(self.records[clip])) * k)

  def subset(self, keep: Sequence[int]) -> "ClipIndex":
    """The clips at positions `keep`, in that order."""
    keep = np.asarray(keep, np.int64)
    return ClipIndex(tuple(self.names[i] for i in keep), self.num_frames[keep],
                     self.heights[keep], self.widths[keep], self.records[keep],
                     self.chunk_frames[keep])

  @classmethod
  def from_lists(cls, names, num_frames, heights, widths, records=None,
                 chunk_frames=None) -> "ClipIndex":
    """From per-clip sequences; `records` defaults to the clips' records one after another in
    source order (0, 1, ... with one record per clip)."""
    as_int = lambda x: np.asarray(x, np.int64).reshape(-1)
    num_frames = as_int(num_frames)
    chunks = np.maximum(num_frames, 1) if chunk_frames is None else as_int(chunk_frames)
    if records is None:
      counts = np.maximum(-(-num_frames // np.maximum(chunks, 1)), 1)
      records = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
    return cls(tuple(str(n) for n in names), num_frames, as_int(heights), as_int(widths),
               as_int(records), chunks)


def scan_index(source) -> ClipIndex:
  """Builds the index by reading every element (for small or in-memory sources, and slices).

  Consecutive records of one clip name, of one frame size, each but the last as long as the first,
  are the records of one clip (as the builders write a long clip).
  """
  names, rows = [], []  # rows: [frames, height, width, first record, frames per record]
  last_full = False  # whether the previous record could be followed by more of its clip
  for i in range(len(source)):
    element = source[i]
    name = clip_name(element) or f"clip{i:04d}"
    t, h, w = (int(x) for x in np.shape(element["frames"])[:3])
    row = rows[-1] if rows else None
    if (row is not None and last_full and name == names[-1] and (h, w) == (row[1], row[2])
        and t <= row[4]):
      row[0] += t
      last_full = t == row[4]
      continue
    names.append(name)
    rows.append([t, h, w, i, t])
    last_full = True
  rows = np.asarray(rows, np.int64).reshape(-1, 5)
  return ClipIndex.from_lists(names, rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4])


def index_from_metadata(metadata: Mapping[str, Any], split: str) -> ClipIndex | None:
  """The index the builders store in their metadata, or None if it is absent."""
  entry = (metadata or {}).get("splits", {}).get(split)
  if not entry:
    return None
  return ClipIndex.from_lists(entry["clips"], entry["num_frames"], entry["heights"],
                              entry["widths"], chunk_frames=entry.get("chunk_frames"))


class ArraySource:
  """In-memory clips as a source: a list of `[T, H, W, 3]` uint8 arrays (or lists of frames).

  Raises DataError at construction for an empty clip or frames of different sizes in a clip.
  """

  def __init__(self, clips: Sequence[Any], names: Sequence[str] | None = None):
    names = list(names) if names is not None else [f"clip{i:05d}" for i in range(len(clips))]
    self._clips = []
    for name, clip in zip(names, clips, strict=True):
      if isinstance(clip, np.ndarray):
        frames = clip
      else:
        shapes = [np.shape(f) for f in clip]
        for t, shape in enumerate(shapes):
          if shape != shapes[0]:
            raise DataError(f"clip {name!r}: frame {t} has size {shape[:2]}, frame 0 has "
                            f"{shapes[0][:2]}")
        frames = np.stack(clip) if len(clip) else np.zeros((0, 0, 0, 3), np.uint8)
      if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(f"clip {name!r}: expected [T, H, W, 3] uint8 frames, got "
                        f"{frames.shape} {frames.dtype}")
      self._clips.append((name, frames))

  def __len__(self) -> int:
    return len(self._clips)

  def __getitem__(self, index: int) -> dict[str, Any]:
    name, frames = self._clips[index]
    return {"frames": frames, "clip": name}

  def index(self) -> ClipIndex:
    """The clip index of these clips."""
    return ClipIndex.from_lists([n for n, _ in self._clips],
                                [f.shape[0] for _, f in self._clips],
                                [f.shape[1] for _, f in self._clips],
                                [f.shape[2] for _, f in self._clips])


def select_clips(index: ClipIndex, *, min_frames: int = 1, min_height: int = 0,
                 min_width: int = 0, what: str = "dataset"):
  """Drops clips that are too short or too small, and reports them.

  Args:
    index: the clips.
    min_frames: fewest frames a clip needs.
    min_height: smallest frame height a clip needs.
    min_width: smallest frame width a clip needs.
    what: a name for messages.

  Returns:
    `(kept ClipIndex, skipped list of (clip name, reason))`.

  Raises:
    DataError: no clip is left.
  """
  keep, skipped = [], []
  for i, name in enumerate(index.names):
    t, h, w = int(index.num_frames[i]), int(index.heights[i]), int(index.widths[i])
    if t < min_frames:
      skipped.append((name, f"{t} frames, shorter than the {min_frames} needed"))
    elif h < min_height or w < min_width:
      skipped.append((name, f"frames of {h}x{w}, smaller than {min_height}x{min_width}"))
    else:
      keep.append(i)
  if skipped:
    logging.warning("%s: skipped %d of %d clips: %s", what, len(skipped), len(index),
                    "; ".join(f"{n} ({r})" for n, r in skipped))
  if not keep:
    reasons = list(dict.fromkeys(r for _, r in skipped))  # distinct, in order
    shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
    raise DataError(f"{what}: no usable clip among {len(index)} "
                    f"({len(skipped)} skipped{': ' + shown if skipped else ''})")
  return index.subset(keep), skipped


def check_element(element: Mapping[str, Any], index: ClipIndex, clip: int,
                  record: int | None = None) -> np.ndarray:
  """The `frames` of a source element, checked against record `record` (default: the first) of
  clip `clip` of `index`.

  Raises:
    DataError: the element holds another clip (stale index) or frames of another shape.
  """
  record = int(index.records[clip]) if record is None else int(record)
  name = clip_name(element)
  if name and name != index.names[clip]:
    raise DataError(f"record {record} holds clip {name!r}, but the clip index "
                    f"says {index.names[clip]!r}: the dataset was replaced while this run read it "
                    "(by a run on another machine?), or its metadata is stale: remove the "
                    "dataset's folder in the data dir and run again to rebuild it")
  frames = element["frames"]
  expected = (index.record_length(clip, record), index.heights[clip], index.widths[clip], 3)
  if tuple(frames.shape) != tuple(int(x) for x in expected):
    what = "frames" if index.num_records(clip) == 1 else f"record {record}: frames"
    raise DataError(f"clip {index.names[clip]!r}: {what} {frames.shape}, index says {expected}")
  return frames
