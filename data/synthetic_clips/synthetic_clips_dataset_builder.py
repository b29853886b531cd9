"""synthetic_clips: procedural colour clips (tcvc_jax.synthetic), the embedded default dataset."""

import dataclasses

from etils import epath
import tensorflow_datasets as tfds

from tcvc_jax import data_sources
from tcvc_jax import synthetic

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


class Builder(tfds.core.GeneratorBasedBuilder):
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
  ]
  DEFAULT_CONFIG_NAME = "default"

  # tensorflow-datasets 4.9.10 finds a builder's folder (README.md, checksums) from its module's
  # package, which needs `importlib_resources` and a package; the file's own folder is the same
  # answer for both `tfds build` and a plain import by path.
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
        homepage="https://github.com/lyh-18/TCVC-Temporally-Consistent-Video-Colorization",
    )

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
                                       "note": "clip i = generate_clip((seed, split_id, i))"}
    for i in range(count):
      clip = synthetic.generate_clip((c.seed, _SPLIT_IDS[split], i), height=c.height,
                                     width=c.width, num_frames=c.num_frames)
      name = f"synthetic-{split}-{i:05d}"
      for key, value in (("clips", name), ("num_frames", c.num_frames),
                         ("heights", c.height), ("widths", c.width)):
        entry[key].append(value)
      yield i, {"frames": clip.frames, "clip": name,
                "frame_names": [f"{t:05d}" for t in range(c.num_frames)]}
