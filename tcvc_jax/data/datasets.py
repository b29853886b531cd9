"""The TFDS dataset builders, shipped in the package: `synthetic_clips` and `video_frames`.

Both store a clip's frames in records (`clip_features`): synthetic_clips one record per clip,
video_frames records of at most `RECORD_BYTES` (a long clip takes several, in order). The clip
index (names, frame counts, sizes, frames per record, per split, in record order) is kept in their
dataset metadata, so windows can be planned without decoding frames.
`tcvc_jax.data.building.build` prepares them without TensorFlow; the thin files in the
repository's `data/<name>/` folders let the `tfds build` CLI find them too.
"""

import dataclasses
import os

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from tcvc_jax.data import layout as data_layout
from tcvc_jax.data import sources
from tcvc_jax.data import synthetic
from tcvc_jax.media import av_frames
from tcvc_jax.media import folders
from tcvc_jax.media import reading

# README.md (description) of each builder, and the original's split lists (lists/).
_PKG_DIR = epath.Path(__file__).parent
_LISTS = _PKG_DIR / "lists"


def clip_features() -> tfds.features.FeaturesDict:
  """The record layout every builder writes: consecutive frames of one clip (all of them, or a
  long clip's share) with their names."""
  return tfds.features.FeaturesDict({
      "frames": tfds.features.Tensor(shape=(None, None, None, 3), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.BYTES),  # [n, H, W, 3] RGB
      "clip": tfds.features.Text(),
      "frame_names": tfds.features.Sequence(tfds.features.Text()),
  })


def _check_lists(wanted, layout, root):
  """Warns of clips a split list names twice, clips in two splits, and clips in no list."""
  seen = {}
  for split, names in wanted.items():
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
      logging.warning("video_frames: the %s list names %s more than once: each time is a clip of "
                      "the split", split, ", ".join(twice[:5]))
    for n in dict.fromkeys(names):
      seen.setdefault(n, []).append(split)
  both = {n: s for n, s in seen.items() if len(s) > 1}
  if both:
    logging.warning("video_frames: clips in more than one split: %s",
                    "; ".join(f"{n} ({', '.join(s)})" for n, s in list(both.items())[:5]))
  unlisted = [n for n in layout.clips if n not in seen]
  if unlisted:
    logging.warning("video_frames: %d clip(s) under %s are in no split list, so not in the "
                    "dataset: %s", len(unlisted), root,
                    ", ".join(unlisted[:5]) + (", ..." if len(unlisted) > 5 else ""))


class _ClipBuilder(tfds.core.GeneratorBasedBuilder):
  """What both builders share: the record layout, metadata and where their files are.

  Abstract (no `_split_generators`), so TFDS does not register it as a dataset.
  """

  HOMEPAGE = None
  # tensorflow-datasets 4.9.10 derives a builder's folder (README.md, `pkg_dir_path`, set per
  # builder) and code path from its module's package through `importlib_resources`; both are given
  # here instead.
  code_path = tfds.core.utils.classproperty(classmethod(lambda cls: epath.Path(__file__)))

  def _info(self) -> tfds.core.DatasetInfo:
    info = self.dataset_info_from_configs(
        features=clip_features(),
        # Records keep generation order, so the clip index in the metadata lines up with them.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        homepage=self.HOMEPAGE,
    )
    # These datasets are made here, never fetched: for a folder not yet prepared, TFDS would look
    # for precomputed metadata in its GCS bucket (off by default), and make an empty temporary
    # folder for it that nothing removes, one per builder, in /tmp.
    info.initialize_from_bucket = lambda: None
    return info

  # TFDS announces every preparation as "Downloading and preparing dataset Unknown size (download:
  # Unknown size, ...)": these builders download nothing, so they say what they do.
  def _log_download_bytes(self) -> None:
    print(f"Building dataset {self.name}/{self.builder_config.name} in {self.data_dir} "
          "(made here from local files or procedurally; nothing is downloaded)...", flush=True)

  def _log_download_done(self) -> None:
    print(f"Dataset {self.name} built in {self.data_dir}; later runs reuse it.", flush=True)


# Fixed ids so that each split draws from its own seed stream.
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Size of the generated clips and of each split."""
  height: int = 64
  width: int = 64
  num_frames: int = 20
  num_train: int = 96
  num_validation: int = 8
  num_test: int = 8
  seed: int = 0
  paint_probability: float = 0.0


class SyntheticClips(_ClipBuilder):
  """Procedural clips: textured objects over textured backgrounds, with cuts and known motion."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticConfig(name="default", description="64x64, 20 frames, 96/8/8 clips."),
      SyntheticConfig(name="tiny", description="32x32, 8 frames, 6/2/2 clips (tests).",
                      height=32, width=32, num_frames=8, num_train=6, num_validation=2,
                      num_test=2),
      SyntheticConfig(name="large", description="128x128, 24 frames, 256/16/16 clips.",
                      height=128, width=128, num_frames=24, num_train=256,
                      num_validation=16, num_test=16),
      SyntheticConfig(name="painted", description=(
          "As default, but each surface of a shot is painted in a random hue with probability "
          "0.3 (its hue cannot be told from gray; hints can): the demo's and guided "
          "colorization's set."), paint_probability=0.3),
  ]
  DEFAULT_CONFIG_NAME = "default"

  pkg_dir_path = _PKG_DIR / "docs" / "synthetic_clips"
  HOMEPAGE = "https://github.com/lyh-18/TCVC-Temporally-Consistent-Video-Colorization"

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    counts = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    return {split: self._generate_examples(split, n) for split, n in counts.items()}

  def _generate_examples(self, split, count):
    c = self.builder_config
    entry = {"clips": [], "num_frames": [], "heights": [], "widths": []}
    self.info.metadata.setdefault("splits", {})[split] = entry
    self.info.metadata["generator"] = {"seed": c.seed, "split_ids": _SPLIT_IDS,
                                       "paint_probability": c.paint_probability,
                                       "note": "clip i = generate_clip((seed, split_id, i))"}
    for i in range(count):
      clip = synthetic.generate_clip((c.seed, _SPLIT_IDS[split], i), height=c.height,
                                     width=c.width, num_frames=c.num_frames,
                                     paint_probability=c.paint_probability)
      name = f"synthetic-{split}-{i:05d}"
      for key, value in (("clips", name), ("num_frames", c.num_frames),
                         ("heights", c.height), ("widths", c.width)):
        entry[key].append(value)
      yield i, {"frames": clip.frames, "clip": name,
                "frame_names": [f"{t:05d}" for t in range(c.num_frames)]}


# A record holds at most this many bytes of frames (at least one frame). A training window reads
# (and decompresses) the records that hold its frames, so small records are read fast: 12-frame
# windows of 400-frame 300x300 clips, RGB out, no worker process, 5.5 windows/s (319 CPU ms each)
# with a record per clip, 11.6 with 64 MiB records, 126 (15 CPU ms) with 4 MiB; 4.3 / 7.4 / 20.4
# with Lab made in the pipeline (`benchmarks/input_pipeline_bench.py --source video_frames
# --clips 3 --frames 400 --workers 0 --record-mib 0,64,4`, AMD EPYC, 2026-12-08).
# A long clip also fits neither in one protobuf message (2 GB) nor in memory: a 1080p frame is
# 6.2 MB, and 16 s of video made a 2.5 GB record, whose build failed.
RECORD_BYTES = 4 << 20
# A clip is held whole while it takes at most this many bytes, so that any bad frame skips it; a
# longer clip is written as it is read, and a bad frame after that ends it there.
HOLD_BYTES = 1 << 30
# Record i of a split has the key i << _KEY_SHIFT. TFDS writes a split over 1 GB to 1000 files
# first, record r to file (r * 1000) >> 128, and reads each file whole to sort it: with keys 0, 1,
# ... all went to the first, which was read back into memory whole. These go 65.5 to a file
# (~260 MB of 4 MiB records); a split holds up to 2^16 records (256 GB).
_KEY_SHIFT = 112
_MAX_RECORDS = 1 << (128 - _KEY_SHIFT)


class _TooManyRecords(sources.DataError):
  """A split needs more records than its keys allow."""


def _key(i, split):
  """The key of record `i` of a split (see _KEY_SHIFT)."""
  if i >= _MAX_RECORDS:
    raise _TooManyRecords(f"video_frames[{split}]: more than {_MAX_RECORDS} records of "
                          f"{RECORD_BYTES >> 20} MiB: split the clips into several datasets")
  return i << _KEY_SHIFT


class _ClipRecords:
  """The records of one clip, made as its frames are read (`records`)."""

  def __init__(self, name, where, min_frames):
    self.name, self.where, self.min_frames = name, where, min_frames
    self.count, self.written, self.colourless = 0, 0, True
    self.shape, self.per_record = None, None
    self._full = []  # full records not yet written
    self._frames, self._names = [], []  # frames of the record being filled

  def _record(self, frames, names):
    frames = np.stack(frames)
    self.colourless = self.colourless and av_frames.colourless(frames)
    return {"frames": frames, "clip": self.name, "frame_names": names}

  def records(self, frames):
    """Yields the records of `(frame, name)` pairs (`layout.iter_clip`); raises as it does."""
    hold = None
    for frame, name in frames:
      if self.per_record is None:
        self.shape = frame.shape[:2]
        self.per_record = max(1, RECORD_BYTES // frame.nbytes)
        hold = max(1, HOLD_BYTES // (self.per_record * frame.nbytes))
      self._frames.append(frame)
      self._names.append(name)
      self.count += 1
      if len(self._frames) == self.per_record:
        self._full.append(self._record(self._frames, self._names))
        self._frames, self._names = [], []
        if self.written or len(self._full) > hold:  # too long to hold: written as read
          yield from self._take_full()
    if self.count < self.min_frames:
      n = self.count
      raise sources.DataError(f"{n} frame{'s' if n != 1 else ''} in {self.where}, fewer than "
                              f"min_frames={self.min_frames}")
    yield from self.rest()

  def _take_full(self):
    while self._full:
      self.written += 1
      yield self._full.pop(0)

  def rest(self):
    """Yields the records not yet written (after an error: the frames read before it)."""
    yield from self._take_full()
    if self._frames:
      self.written += 1
      yield self._record(self._frames, self._names)
      self._frames, self._names = [], []


@dataclasses.dataclass
class VideoFramesConfig(tfds.core.BuilderConfig):
  """How to resize and split the clips.

  Attributes:
    resize: `(height, width)` to resize frames to (bilinear, aspect ratio not kept, as the
      original's 300x300 training frames), or None to keep the native size.
    resize_splits: splits the resize applies to; None means all.
    split_lists: split -> list files in this builder's `lists/` folder; empty means splits
      come from `<manual_dir>/splits/<split>.txt`, from split folders, or all clips in "train".
    min_frames: clips with fewer frames are skipped.
  """
  resize: tuple[int, int] | None = None
  resize_splits: tuple[str, ...] | None = None
  split_lists: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  min_frames: int = 2


class VideoFrames(_ClipBuilder):
  """Video clips from frame folders or video files, stored as uint8 frames per clip."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the clips in the manual dir, in one of these layouts:
    DAVIS-2017:   <manual_dir>/JPEGImages/480p/<clip>/<frame>.jpg
    split folders (e.g. Videvo): <manual_dir>/{train,test,...}/<clip>/<frame>.png
    generic:      <manual_dir>/<clip>/<frame>.(png|jpg) and/or <manual_dir>/<clip>.mp4
  Optional: <manual_dir>/splits/<split>.txt lists the clips of each split, one per line.
  """
  BUILDER_CONFIGS = [
      VideoFramesConfig(name="folder", description="All clips at native size."),
      VideoFramesConfig(name="folder_300", description="All clips resized to 300x300.",
                        resize=(300, 300)),
      VideoFramesConfig(
          name="davis", description="DAVIS-2017 train (60, at 300x300) / test (30, native).",
          resize=(300, 300), resize_splits=("train",),
          split_lists={"train": ("DAVIS_train.txt",), "test": ("DAVIS_test.txt",)}),
      VideoFramesConfig(
          name="davis_videvo",
          description="The original's training set: DAVIS train + Videvo train at 300x300; "
                      "DAVIS test (30 clips) at native size.",
          resize=(300, 300), resize_splits=("train",),
          split_lists={"train": ("DAVIS_train.txt", "videvo_train.txt"),
                       "test": ("DAVIS_test.txt",)}),
  ]
  DEFAULT_CONFIG_NAME = "folder"

  pkg_dir_path = _PKG_DIR / "docs" / "video_frames"

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    layout = data_layout.discover(root)
    # What it is built from, so that `building.build` rebuilds it when that changes (a new one
    # starts from empty metadata, not from the dataset it replaces).
    self.info.metadata.clear()
    self.info.metadata["source"] = {"manual_dir": os.path.abspath(root),
                                    **data_layout.fingerprint(root, layout)}
    user_splits = os.path.join(root, data_layout.USER_SPLITS)
    lists = {}
    if os.path.isdir(user_splits):  # val.txt is the validation split, as a val/ folder is
      for f in sorted(os.listdir(user_splits)):
        if f.endswith(".txt"):
          split = os.path.splitext(f)[0]
          lists.setdefault("validation" if split == "val" else split, []).append(
              os.path.join(user_splits, f))
    if not lists:
      lists = {split: [os.fspath(_LISTS / f) for f in files]
               for split, files in self.builder_config.split_lists.items()}
    if lists:
      wanted = {split: [n for f in files for n in data_layout.read_list_file(f)]
                for split, files in lists.items()}
      _check_lists(wanted, layout, root)
    elif layout.split_of:
      wanted = {}
      for name, split in layout.split_of.items():
        wanted.setdefault("validation" if split == "val" else split, []).append(name)
    else:
      wanted = {"train": list(layout.clips)}
    logging.info("video_frames: %s layout under %s, splits %s", layout.kind, root,
                 {s: len(n) for s, n in wanted.items()})
    return {split: self._generate_examples(split, names, layout, root)
            for split, names in wanted.items()}

  def _generate_examples(self, split, names, layout, root):
    c = self.builder_config
    resize = c.resize if c.resize_splits is None or split in c.resize_splits else None
    entry = {"clips": [], "num_frames": [], "heights": [], "widths": [], "chunk_frames": []}
    skipped, gray, cut_short = [], [], []
    self.info.metadata.setdefault("splits", {})[split] = entry
    self.info.metadata.setdefault("skipped", {})[split] = skipped
    self.info.metadata.setdefault("cut_short", {})[split] = cut_short
    key = 0  # records of the split so far (they keep this order)
    for name in names:
      clip = layout.clips.get(name)
      read = _ClipRecords(name, clip.location if clip else root, c.min_frames)
      try:
        if clip is None:
          raise sources.DataError(f"no clip folder or video named {name!r} under {root}")
        names_kept = [name, *data_layout.frame_names(clip)]  # stored as UTF-8 text
        if problem := folders.not_utf8_problem(name, names_kept):
          raise sources.DataError(f"{problem} to keep it")
        for record in read.records(data_layout.iter_clip(clip, resize)):
          yield _key(key, split), record
          key += 1
      except reading.MediaError as e:
        if isinstance(e, _TooManyRecords):
          raise
        if not read.written:
          logging.warning("video_frames[%s]: skipping clip %r: %s", split, name, e)
          skipped.append([name.encode("utf-8", "backslashreplace").decode(), str(e)])
          continue
        # Its first records are written: it keeps the frames read before the bad one.
        logging.warning("video_frames[%s]: clip %r keeps its first %d frames: %s", split, name,
                        read.count, e)
        cut_short.append([name, read.count, str(e)])
        for record in read.rest():
          yield _key(key, split), record
          key += 1
      if read.colourless:  # kept: SRL needs no colour
        gray.append(name)
      for k, value in (("clips", name), ("num_frames", read.count), ("heights", read.shape[0]),
                       ("widths", read.shape[1]),
                       ("chunk_frames", min(read.per_record, read.count))):
        entry[k].append(int(value) if k != "clips" else value)
    if skipped:
      logging.warning("video_frames[%s]: kept %d clips, skipped %d", split,
                      len(entry["clips"]), len(skipped))
    if gray:
      logging.warning("video_frames[%s]: %d clip%s without colour (gray, R = G = B), whose "
                      "reconstruction loss teaches gray: %s", split, len(gray),
                      "s" if len(gray) > 1 else "",
                      ", ".join(gray[:5]) + (", ..." if len(gray) > 5 else ""))
    if not entry["clips"]:
      reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
      raise sources.DataError(f"video_frames[{split}]: no usable clip under {root} "
                              f"({len(skipped)} skipped: {reasons})")
