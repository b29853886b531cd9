"""video_frames: clips from a folder of frame folders or video files (DAVIS, Videvo, your own)."""

import dataclasses
import os

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from tcvc_jax import clip_io
from tcvc_jax import data_sources

_LISTS = epath.Path(__file__).parent / "lists"
# Split list files a user may put in the manual dir: <manual_dir>/splits/<split>.txt.
_USER_SPLITS = "splits"


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


class Builder(tfds.core.GeneratorBasedBuilder):
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

  # See data/synthetic_clips: tensorflow-datasets 4.9.10 would need `importlib_resources` and a
  # package to find this folder.
  pkg_dir_path = epath.Path(__file__).parent

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=data_sources.clip_features(),
        # Records keep generation order, so the clip index in the metadata lines up with them.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    layout = clip_io.discover(root)
    user_splits = os.path.join(root, _USER_SPLITS)
    if os.path.isdir(user_splits):
      lists = {os.path.splitext(f)[0]: [os.path.join(user_splits, f)]
               for f in sorted(os.listdir(user_splits)) if f.endswith(".txt")}
    else:
      lists = {split: [os.fspath(_LISTS / f) for f in files]
               for split, files in self.builder_config.split_lists.items()}
    if lists:
      wanted = {split: [n for f in files for n in clip_io.read_list_file(f)]
                for split, files in lists.items()}
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
    entry = {"clips": [], "num_frames": [], "heights": [], "widths": []}
    skipped = []
    self.info.metadata.setdefault("splits", {})[split] = entry
    self.info.metadata.setdefault("skipped", {})[split] = skipped
    for name in names:
      clip = layout.clips.get(name)
      try:
        if clip is None:
          raise clip_io.DataError(f"no clip folder or video named {name!r} under {root}")
        frames, frame_names = clip_io.load_clip(clip, resize)
        if len(frames) < c.min_frames:
          raise clip_io.DataError(f"{len(frames)} frames in {clip.location}, fewer than "
                                  f"min_frames={c.min_frames}")
      except clip_io.DataError as e:
        logging.warning("video_frames[%s]: skipping clip %r: %s", split, name, e)
        skipped.append([name, str(e)])
        continue
      for key, value in (("clips", name), ("num_frames", len(frames)),
                         ("heights", frames.shape[1]), ("widths", frames.shape[2])):
        entry[key].append(int(value) if key != "clips" else value)
      yield len(entry["clips"]) - 1, {"frames": frames, "clip": name,
                                      "frame_names": frame_names}
    if skipped:
      logging.warning("video_frames[%s]: kept %d clips, skipped %d", split,
                      len(entry["clips"]), len(skipped))
    if not entry["clips"]:
      reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
      raise clip_io.DataError(f"video_frames[{split}]: no usable clip under {root} "
                              f"({len(skipped)} skipped: {reasons})")
