"""Clip sources for the input pipeline: TFDS datasets (datasets.py), in-memory clips, clip indices.

A source is any object with `__len__` and `__getitem__` whose elements are dicts with `frames`
(`[T, H, W, 3]` uint8) and `clip` (the clip name). A `ClipIndex` lists the clips' names, lengths
and sizes, so windows can be planned without decoding any frames; the builders store it
in their dataset metadata.
"""

import dataclasses
import hashlib
import json
import os
import threading
from typing import Any
from typing import Mapping
from typing import Sequence
import uuid

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from tcvc_jax import atomic
from tcvc_jax.media import reading
from tcvc_jax.media import resizing

# Videvo-style roots hold one folder per split.
SPLIT_FOLDERS = ("train", "val", "validation", "test")
# Split list files a user may put in a root: <root>/splits/<split>.txt.
USER_SPLITS = "splits"


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


def check_config(name: str, config: Any) -> None:
  """Raises DataError unless `config` names a config of dataset `name` (None: its default;
  a `tfds.core.BuilderConfig` is taken as it is)."""
  cls = builder_class(name)
  if config is None or not isinstance(config, str):
    return
  names = [c.name for c in cls.BUILDER_CONFIGS]
  if config not in names:
    raise DataError(f"unknown config {config!r} of dataset {name}; its configs: "
                    f"{', '.join(names)}")


def _is_ours(name: str) -> bool:
  """Whether `name` is one of the package's builders; importing them registers them with TFDS."""
  try:
    builder_class(name)
  except DataError:
    return False
  return True


def _register(name: str) -> None:
  """Imports the package's builders so TFDS knows them by name (other names are TFDS's own)."""
  _is_ours(name)


def _local(path) -> bool:
  return "://" not in os.fspath(path)


class _PartialBuild(atomic.NewFolder):
  """Undoes a dataset build that fails or is interrupted, as an `atomic` output: `discard()`
  (which `atomic.discard_all` calls too) leaves what was there before, `keep()` the new dataset.

  TFDS writes into `<config>/incomplete.*_<version>/` and renames it at the end; around it, it makes
  `<dataset>/.config/` and `<data_dir>/downloads/`. A dataset being replaced is moved aside first
  (`set_aside`), and is back in place after a discard.
  """

  def __init__(self, data_path):
    self._version_dir = os.path.abspath(os.fspath(data_path))
    config_dir = os.path.dirname(self._version_dir)
    dataset_dir = os.path.dirname(config_dir)
    self._made = [p for p in (os.path.join(dataset_dir, ".config"),
                              os.path.join(os.path.dirname(dataset_dir), "downloads"))
                  if not os.path.lexists(p)]
    record = os.path.join(dataset_dir, ".config", "metadata.json")
    self._record = (record, _read_bytes(record))
    self._before = set(os.listdir(config_dir)) if os.path.isdir(config_dir) else set()
    self._aside = None
    self._lock = threading.Lock()
    super().__init__(config_dir)

  def set_aside(self) -> None:
    """Moves the prepared dataset out of the way: deleted by `keep()`, put back by `discard()`."""
    aside = os.path.join(self.path, f".{os.path.basename(self._version_dir)}.replaced-"
                                    f"{uuid.uuid4().hex[:8]}")
    self._before.add(os.path.basename(aside))
    os.rename(self._version_dir, aside)
    self._aside = aside

  def keep(self) -> None:
    super().keep()
    aside, self._aside = self._aside, None
    if aside is not None:
      atomic.remove(aside)

  def discard(self) -> None:
    with self._lock:
      if self._done:
        return
      try:
        if os.path.isdir(self.path):
          for entry in set(os.listdir(self.path)) - self._before:  # incomplete.*_<version>
            atomic.remove(os.path.join(self.path, entry))
        if self._aside is not None:
          atomic.remove(self._version_dir)  # a new dataset not kept
          os.rename(self._aside, self._version_dir)
        for path in self._made:
          atomic.remove(path)
        path, data = self._record
        if data is not None and _read_bytes(path) != data:
          with open(path, "wb") as f:
            f.write(data)
      finally:
        self._aside = None  # if it could not go back, it stays where it is, never deleted
        super().discard()


def _read_bytes(path: str) -> bytes | None:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError:
    return None


def fingerprint(root: str, layout: "Layout | None" = None) -> dict[str, Any]:
  """What a dataset built from `root` records about it: a digest of its clip listing.

  The digest covers the layout, each clip's name and its files' relative paths, sizes and
  modification times, and the split list files (`<root>/splits/*.txt`); no file is read.

  Args:
    root: the folder of clips.
    layout: `discover(root)`, if already at hand.

  Returns:
    `{"clips": count, "files": count, "digest": hex}`.

  Raises:
    DataError: as `discover`.
  """
  layout = layout or discover(root)
  digest = hashlib.sha256(layout.kind.encode())
  files = 0
  paths = []
  for name in sorted(layout.clips):
    clip = layout.clips[name]
    media = clip.frames or ((clip.video,) if clip.video else ())
    paths += [(name, p) for p in media] or [(name, None)]  # a folder without frames: its name
  lists = os.path.join(root, USER_SPLITS)
  if os.path.isdir(lists):
    paths += [("", os.path.join(lists, f)) for f in sorted(os.listdir(lists)) if f.endswith(".txt")]
  for name, path in paths:
    entry = [name]
    if path is not None:
      st = os.stat(path)
      entry += [os.path.relpath(path, root), st.st_size, st.st_mtime_ns]
      files += 1
    digest.update(json.dumps(entry).encode())
  return {"clips": len(layout.clips), "files": files, "digest": digest.hexdigest()}


def _built_from(data_path) -> dict[str, Any] | None:
  """The `source` a prepared dataset records (`video_frames`), or None."""
  try:
    metadata = json.loads((data_path / "metadata.json").read_text())
  except (OSError, ValueError):
    return None
  source = metadata.get("source") if isinstance(metadata, dict) else None
  return source if isinstance(source, dict) else None


def _why_rebuild(builder, manual_dir) -> str | None:
  """Why a prepared dataset does not hold the clips of `manual_dir` (None if it does)."""
  path = os.path.abspath(os.fspath(manual_dir))
  source = _built_from(builder.data_path)
  if source is None:
    return "it does not record the folder it was built from (an older build)"
  if source.get("manual_dir") != path:
    return f"it was built from {source.get('manual_dir')}, not {path}"
  if not os.path.isdir(path):
    logging.warning("%s: the clip folder %s is gone; using the dataset built from it in %s",
                    builder.name, path, builder.data_path)
    return None
  try:
    now = fingerprint(path)
  except (DataError, OSError) as e:
    return f"{path} cannot be listed as before ({e})"
  if now["digest"] != source.get("digest"):
    then, now = (f"{f.get('clips')} clips, {f.get('files')} files" for f in (source, now))
    return (f"the clips in {path} changed since it was built ("
            + (f"{then} then, {now} now)" if then != now else
               "a file was replaced, renamed or modified)"))
  return None


def build(name: str, data_dir: str | None, *, config: Any = None, manual_dir: str | None = None,
          overwrite: bool = False):
  """Builds (if not built yet) a dataset as ArrayRecord, without TensorFlow.

  The `tfds build` CLI imports TensorFlow at start-up in tensorflow-datasets 4.9.10; this is the
  TensorFlow-free way to build.

  A dataset built from a folder of clips (`video_frames`) records the folder's absolute path and a
  fingerprint of its listing (`fingerprint`); given a `manual_dir`, it is reused only if both still
  match, and rebuilt otherwise, with a warning saying why. Without a `manual_dir`, a prepared
  dataset is reused as it is. A build that fails or is interrupted (`atomic.discard_all`) leaves
  `data_dir` as it was, an earlier dataset of the same config included.

  Args:
    name: builder folder name, e.g. "synthetic_clips" or "video_frames".
    data_dir: where the prepared dataset goes.
    config: builder config name or `tfds.core.BuilderConfig` (the default config if None).
    manual_dir: folder with the source clips (`video_frames`).
    overwrite: rebuild even if prepared.

  Returns:
    The prepared `tfds.core.DatasetBuilder`.

  Raises:
    DataError: an unknown dataset or config, a missing or empty `manual_dir`, no clip to build.
  """
  cls = builder_class(name)
  check_config(name, config)
  make = lambda: cls(config=config, data_dir=data_dir, file_format="array_record")
  builder = make()
  full_name = f"{name}/{builder.builder_config.name}"
  uses_clip_folder = bool(getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
  prepared = builder.data_path.exists()
  if prepared and not overwrite:
    why = _why_rebuild(builder, manual_dir) if uses_clip_folder and manual_dir else None
    if why is None:
      logging.info("reusing %s in %s", full_name, builder.data_path)
      return builder
    logging.warning("%s: rebuilding the dataset in %s: %s", full_name, builder.data_path, why)
  if uses_clip_folder:
    if manual_dir is None:
      raise DataError(f"{full_name} is not built in {builder.data_dir_root}; "
                      "give the folder of clips to build it from (manual_dir; train.py and "
                      "eval.py: --config.data.manual_dir=DIR)")
    discover(os.fspath(manual_dir))  # a missing or empty folder: one line, before TFDS starts
  partial = _PartialBuild(builder.data_path) if _local(builder.data_path) else None
  try:
    if prepared:
      if partial is not None:
        partial.set_aside()
      else:
        builder.data_path.rmtree()
      builder = make()  # not the one that read the old dataset's info
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  except BaseException:
    if partial is not None:
      partial.discard()
    raise
  if partial is not None:
    partial.keep()
  return builder


def _prepared(name: str, data_dir: str | None, config: str | None):
  """The builder of a prepared dataset (never builds it: TFDS would, with its own messages)."""
  _register(name)
  full_name = f"{name}/{config}" if config else name
  try:
    builder = tfds.builder(full_name, data_dir=data_dir)
  except Exception:  # tfds raises many types; an unknown config of ours is told plainly
    if _is_ours(name):
      check_config(name, config)
    raise
  if not builder.data_path.exists():
    raise DataError(f"{full_name} is not built in {builder.data_dir_root}")
  return builder


def split_names(name: str, data_dir: str | None, *, config: str | None = None) -> list[str]:
  """The splits of a prepared dataset."""
  return list(_prepared(name, data_dir, config).info.splits)


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

  Raises:
    DataError: the dataset is not built, or has no such split.
  """
  builder = _prepared(name, data_dir, config)
  full_name = f"{name}/{config}" if config else name
  splits = list(builder.info.splits)
  if split.split("[", 1)[0] not in splits:
    raise DataError(f"{full_name} in {builder.data_dir_root} has no split {split!r}; its splits: "
                    f"{', '.join(splits)}")
  source = builder.as_data_source(split=split)
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
  with open(path, encoding="utf-8-sig") as f:  # a BOM (Windows editors) is not part of a name
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
      clips[entry] = ClipFiles(entry, frames=frames, folder=path)
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


def _is_split_folder(clip: ClipFiles) -> bool:
  """Whether a root entry named like a split holds clips (and no frames of its own)."""
  return (clip.folder is not None and not clip.frames
          and any(c.has_media for c in _clips_in(clip.folder).values()))


def discover(root: str) -> Layout:
  """Finds the clips under a dataset root.

  The rule: a root with `JPEGImages/480p` is DAVIS. Else a folder named `train`, `val`,
  `validation` or `test` is a split folder if it holds clips (frame folders or videos) and no
  frames of its own; otherwise it is a clip like any other. A root with split folders must hold
  no other clip (a folder of frames or a video beside them is an error: which one is meant cannot
  be told); folders beside them without frames are ignored with a warning (`splits/`, the split
  lists, silently). A root without split folders is flat: each folder and video is a clip.

  Args:
    root: a DAVIS-2017 root (with `JPEGImages/480p`), a root with `train/`, `test/`, ...
      folders of clips, or a folder of clip folders and/or video files.

  Returns:
    The `Layout`.

  Raises:
    DataError: the root is missing, split folders sit beside clips, a split folder holds the
      same clip name as another, or no clip is found.
  """
  if not os.path.isdir(root):
    raise DataError(f"missing data directory {root}")
  davis = os.path.join(root, "JPEGImages", "480p")
  if os.path.isdir(davis):
    layout = Layout("davis", _clips_in(davis), {})
  else:
    top = _clips_in(root)
    splits = [s for s in SPLIT_FOLDERS if s in top and _is_split_folder(top[s])]
    others = [c for name, c in top.items() if name not in splits]
    if splits:
      beside = [c.location for c in others if c.has_media]
      if beside:
        raise DataError(
            f"{root} holds both split folders ({', '.join(s + '/' for s in splits)}, each a "
            f"folder of clips) and clips beside them ({', '.join(beside[:5])}"
            f"{', ...' if len(beside) > 5 else ''}): move those into a split folder, or the "
            "split folders' clips up to the top")
      ignored = [c.location for c in others if c.name != USER_SPLITS]
      if ignored:
        logging.warning("%s: split folders %s; ignoring what is beside them (no frames): %s",
                        root, ", ".join(splits), ", ".join(ignored))
      clips, split_of = {}, {}
      for split in splits:
        for name, clip in _clips_in(os.path.join(root, split)).items():
          if name in clips:
            raise DataError(f"clip {name!r} appears in two split folders: {clip.location} and "
                            f"{clips[name].location}")
          clips[name], split_of[name] = clip, split
      layout = Layout("split_folders", clips, split_of)
    else:
      # A folder `splits/` of list files is not a clip (one of frames is).
      layout = Layout("flat", {n: c for n, c in top.items()
                               if n != USER_SPLITS or c.has_media}, {})
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
