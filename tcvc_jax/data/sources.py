"""Clip sources for the input pipeline: TFDS datasets (datasets.py), in-memory clips, clip indices.

A source is any object with `__len__` and `__getitem__` whose elements are dicts with `frames`
(`[T, H, W, 3]` uint8) and `clip` (the clip name). A `ClipIndex` lists the clips' names, lengths
and sizes, so windows can be planned without decoding any frames; the builders store it
in their dataset metadata.
"""

import dataclasses
import os
from typing import Any
from typing import Mapping
from typing import Sequence

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from tcvc_jax.media import reading
from tcvc_jax.media import resizing

# Videvo-style roots hold one folder per split.
SPLIT_FOLDERS = ("train", "val", "validation", "test")


class DataError(reading.MediaError):
  """Unusable data: the message names the file, folder or dataset."""


@dataclasses.dataclass(frozen=True)
class ClipFiles:
  """Where one clip lives: an ordered list of frame images or one video file."""
  name: str
  frames: tuple[str, ...] = ()
  video: str | None = None

  @property
  def location(self) -> str:
    """The clip's video file or frame folder, for messages."""
    return self.video or os.path.dirname(self.frames[0])
def clip_name(element: Mapping[str, Any]) -> str:
  """The `clip` field of a source element as str ("" if absent)."""
  name = element.get("clip", "")
  return name.decode() if isinstance(name, bytes) else str(name)


@dataclasses.dataclass(frozen=True)
class ClipIndex:
  """The clips of a source, in source order (`records[i]` is the element of clip i).

  Attributes:
    names: clip names.
    num_frames: `[C]` frames per clip.
    heights: `[C]` frame height per clip.
    widths: `[C]` frame width per clip.
    records: `[C]` element index of each clip in the source.
  """
  names: tuple[str, ...]
  num_frames: np.ndarray
  heights: np.ndarray
  widths: np.ndarray
  records: np.ndarray

  def __len__(self) -> int:
    return len(self.names)

  @property
  def offsets(self) -> np.ndarray:
    """`[C + 1]` first frame of each clip when all frames are numbered in clip order."""
    return np.concatenate([[0], np.cumsum(self.num_frames)]).astype(np.int64)

  def subset(self, keep: Sequence[int]) -> "ClipIndex":
    """The clips at positions `keep`, in that order."""
    keep = np.asarray(keep, np.int64)
    return ClipIndex(tuple(self.names[i] for i in keep), self.num_frames[keep],
                     self.heights[keep], self.widths[keep], self.records[keep])

  @classmethod
  def from_lists(cls, names, num_frames, heights, widths, records=None) -> "ClipIndex":
    """From per-clip sequences; `records` defaults to 0, 1, ... (source order)."""
    as_int = lambda x: np.asarray(x, np.int64).reshape(-1)
    records = np.arange(len(names)) if records is None else records
    return cls(tuple(str(n) for n in names), as_int(num_frames), as_int(heights),
               as_int(widths), as_int(records))


def scan_index(source) -> ClipIndex:
  """Builds the index by reading every element (for small or in-memory sources)."""
  names, shapes = [], []
  for i in range(len(source)):
    element = source[i]
    names.append(clip_name(element) or f"clip{i}")
    shapes.append(np.shape(element["frames"])[:3])
  shapes = np.asarray(shapes, np.int64).reshape(-1, 3)
  return ClipIndex.from_lists(names, shapes[:, 0], shapes[:, 1], shapes[:, 2])


def index_from_metadata(metadata: Mapping[str, Any], split: str) -> ClipIndex | None:
  """The index the builders store in their metadata, or None if it is absent."""
  entry = (metadata or {}).get("splits", {}).get(split)
  if not entry:
    return None
  return ClipIndex.from_lists(entry["clips"], entry["num_frames"], entry["heights"],
                              entry["widths"])


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
    raise DataError(f"{what}: no usable clip among {len(index)} "
                    f"({len(skipped)} skipped{': ' + skipped[0][1] if skipped else ''})")
  return index.subset(keep), skipped


def builder_class(name: str):
  """The builder class of dataset `name` ("synthetic_clips" or "video_frames")."""
  from tcvc_jax.data import datasets  # pylint: disable=g-import-not-at-top
  builders = {"synthetic_clips": datasets.SyntheticClips, "video_frames": datasets.VideoFrames}
  if name not in builders:
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(builders))}")
  return builders[name]


def _register(name: str) -> None:
  """Imports the package's builders so TFDS knows them by name (other names are TFDS's own)."""
  try:
    builder_class(name)
  except DataError:
    pass


def build(name: str, data_dir: str | None, *, config: Any = None, manual_dir: str | None = None,
          overwrite: bool = False):
  """Builds (if not built yet) a dataset as ArrayRecord, without TensorFlow.

  The `tfds build` CLI imports TensorFlow at start-up in tensorflow-datasets 4.9.10; this is the
  TensorFlow-free way to build.

  Args:
    name: builder folder name, e.g. "synthetic_clips" or "video_frames".
    data_dir: where the prepared dataset goes.
    config: builder config name or `tfds.core.BuilderConfig` (the default config if None).
    manual_dir: folder with the source clips (`video_frames`).
    overwrite: rebuild even if prepared.

  Returns:
    The prepared `tfds.core.DatasetBuilder`.
  """
  builder = builder_class(name)(config=config, data_dir=data_dir, file_format="array_record")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, download_mode=mode))
  return builder


def split_names(name: str, data_dir: str | None, *, config: str | None = None) -> list[str]:
  """The splits of a prepared dataset."""
  _register(name)
  full_name = f"{name}/{config}" if config else name
  return list(tfds.builder(full_name, data_dir=data_dir).info.splits)


def open_split(name: str, split: str, data_dir: str | None, *, config: str | None = None):
  """Opens a prepared split for random access.

  Args:
    name: dataset name.
    split: split name ("train", "validation", "test", ...). A slice such as "train[:10]"
      works too; its index is then built by reading the clips.
    data_dir: TFDS data dir.
    config: builder config name.

  Returns:
    `(source, ClipIndex)`.
  """
  _register(name)
  full_name = f"{name}/{config}" if config else name
  source = tfds.data_source(full_name, split=split, data_dir=data_dir)
  index = index_from_metadata(source.dataset_info.metadata, split)
  if index is None or len(index) != len(source):
    logging.info("%s[%s]: no clip index in the metadata, reading the clips", full_name, split)
    index = scan_index(source)
  return source, index


# --------------------------------------------------------------------------- clips on disk


def read_list_file(path: str) -> list[str]:
  """Clip names from a list file: one per line; blank lines and `#` comments are ignored."""
  if not os.path.isfile(path):
    raise DataError(f"missing list file {path}")
  with open(path) as f:
    names = [line.split("#", 1)[0].strip() for line in f]
  return [n for n in names if n]


def _clips_in(folder: str) -> dict[str, ClipFiles]:
  """Clips directly under `folder`: sub-folders of images and video files."""
  clips = {}
  for entry in sorted(os.listdir(folder), key=reading.natural_key):
    path = os.path.join(folder, entry)
    stem, ext = os.path.splitext(entry)
    if entry.startswith("."):
      continue
    if os.path.isdir(path):
      frames = tuple(os.path.join(path, f) for f in reading.list_frame_files(path))
      clips[entry] = ClipFiles(entry, frames=frames)
    elif ext.lower() in reading.VIDEO_EXTENSIONS:
      clips[stem] = ClipFiles(stem, video=path)
  return clips


@dataclasses.dataclass(frozen=True)
class Layout:
  """What `discover` found under a root.

  Attributes:
    kind: "davis" (`JPEGImages/480p/<clip>/`), "split_folders" (`<split>/<clip>/`, as the
      Videvo release) or "flat" (`<clip>/` and `<clip>.mp4` directly under the root).
    clips: clip name -> files, over all splits.
    split_of: for "split_folders", clip name -> split folder name; else empty.
  """
  kind: str
  clips: dict[str, ClipFiles]
  split_of: dict[str, str]


def discover(root: str) -> Layout:
  """Finds the clips under a dataset root.

  Args:
    root: a DAVIS-2017 root (with `JPEGImages/480p`), a root with `train/`, `test/`, ...
      folders of clips, or a folder of clip folders and/or video files.

  Returns:
    The `Layout`.

  Raises:
    DataError: the root is missing, a split folder holds the same clip name as another, or
      no clip is found.
  """
  if not os.path.isdir(root):
    raise DataError(f"missing data directory {root}")
  davis = os.path.join(root, "JPEGImages", "480p")
  splits = [s for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, s))]
  if os.path.isdir(davis):
    layout = Layout("davis", _clips_in(davis), {})
  elif splits:
    clips, split_of = {}, {}
    for split in splits:
      for name, clip in _clips_in(os.path.join(root, split)).items():
        if name in clips:
          raise DataError(f"clip {name!r} appears in two split folders: {clip.location} and "
                          f"{clips[name].location}")
        clips[name], split_of[name] = clip, split
    layout = Layout("split_folders", clips, split_of)
  else:
    layout = Layout("flat", _clips_in(root), {})
  if not layout.clips:
    raise DataError(f"no clips (frame folders or video files) found under {root}")
  return layout


def load_clip(clip: ClipFiles, resize: Sequence[int] | None = None):
  """Reads a clip.

  Args:
    clip: where the clip lives.
    resize: optional `(height, width)`; frames are resized with `resize_bilinear`.

  Returns:
    `(frames [T, H, W, 3] uint8, frame_names list[str])`; frame names are file names without
    extension, or `%05d` frame numbers for a video.

  Raises:
    DataError: naming the file: no frames, an unreadable or corrupt frame, or frames of
      different sizes within the clip.
  """
  if clip.video:
    frames = reading.read_video(clip.video)
    names = [f"{i:05d}" for i in range(len(frames))]
  else:
    if not clip.frames:
      raise DataError(f"no image frames ({', '.join(reading.IMAGE_EXTENSIONS)}) in clip folder of "
                      f"{clip.name!r}")
    images = []
    for path in clip.frames:
      image = reading.read_image(path)
      if images and image.shape != images[0].shape:
        raise DataError(f"frame size {image.shape[:2]} of {path} differs from "
                        f"{images[0].shape[:2]} of {clip.frames[0]}")
      images.append(image)
    frames = np.stack(images)
    names = [os.path.splitext(os.path.basename(p))[0] for p in clip.frames]
  if resize is not None:
    frames = resizing.resize_bilinear(frames, int(resize[0]), int(resize[1]))
  return frames, names
