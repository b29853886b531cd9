"""Grain input pipeline: training windows with augmentation, batching, datasets from a config.

Training elements are windows of N frames from one clip: `gray [N, H, W, 1]` and `ab
[N, H, W, 2]` float32 in the model's normalised Lab, plus where they came from (`clip_id`: the
clip's first element index in the source, `frame_ids [N]`, `key`), and with simulated hints
(`data/hints.py`) `hint_ab [N, H, W, 2]` and `hint_mask [N, H, W, 1]`. The order of operations
(STYLE.md section 7) is: sample keys -> shuffle -> repeat -> random window, crop, flips -> Lab
-> simulated hints (if on) -> host shard -> to_iter_dataset -> mp_prefetch -> batch. Every
random draw comes from the per-element generator that grain derives from the seed and the
element's global position, so the stream is a pure function of the seed, and its iterator state
(get_state / grain.checkpoint) resumes it exactly.

Sampling follows the original (docs/original.md#training): one key per frame of every clip, so
clips are drawn in proportion to their length; the key's frame starts the window when the
window fits, else a uniform valid start is drawn. The original's loader always read frames
0..N-1 (it named files by loop position); `reproduce_original_sampling=True` does that.
Evaluation elements (whole clips, padded) come from `eval_pipeline`; `get_datasets` builds both
from a `config.data` block.
"""

import dataclasses
import difflib
from typing import Any
from typing import Mapping

from absl import flags
from absl import logging
import grain
import numpy as np

from tcvc_jax.data import building as data_building
from tcvc_jax.data import eval_pipeline
from tcvc_jax.data import hints as hints_lib
from tcvc_jax.data import raw_records
from tcvc_jax.data import sources as data_sources
from tcvc_jax.ops import color

DataError = data_sources.DataError
# The configs' evaluation splits: a dataset without one trains without evaluation (a warning).
USUAL_EVAL_SPLITS = ("validation", "test")


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """How training windows are cut from clips.

  Attributes:
    num_frames: N, frames per window (keyframe_interval + 2 in TCVC).
    crop_size: `(height, width)` of the random crop, or None to keep whole frames (then all
      clips must have the same size).
    interval_list: temporal strides to draw from (only those that fit the clip).
    random_reverse: reverse the window with probability 1/2.
    hflip: horizontal flip with probability 1/2.
    rot90: 90 degree clockwise rotation with probability 1/2 (the original's effective
      "vflip + transpose"); needs a square crop.
    reproduce_original_sampling: read frames 0..N-1 of the drawn clip, as the released
      loader did; strides and reversal then have no effect.
  """
  num_frames: int
  crop_size: tuple[int, int] | None = None
  interval_list: tuple[int, ...] = (1,)
  random_reverse: bool = False
  hflip: bool = True
  rot90: bool = True
  reproduce_original_sampling: bool = False

  def __post_init__(self):
    # Messages start with the config key (`config.data.<key>`).
    if not _is_int(self.num_frames) or self.num_frames < 1:
      raise ValueError(f"num_frames must be a positive integer, got {self.num_frames!r}")
    crop = self.crop_size
    if crop is not None and (not isinstance(crop, tuple) or len(crop) != 2
                             or not all(_is_int(x) and x > 0 for x in crop)):
      raise ValueError(f"crop_size must be a positive integer, (height, width) or None (whole "
                       f"frames), got {crop!r}")
    steps = self.interval_list
    if (not isinstance(steps, tuple) or not steps
        or not all(_is_int(x) and x > 0 for x in steps)):
      raise ValueError(f"interval_list must be a non-empty tuple of positive integers (frame "
                       f"strides), got {steps!r}")
    if self.rot90 and crop and crop[0] != crop[1]:
      raise ValueError(f"rot90 needs a square crop_size, got {crop[0]}x{crop[1]} (set rot90 "
                       "to False for a rectangle)")

  @property
  def min_frames(self) -> int:
    if self.reproduce_original_sampling:
      return self.num_frames
    return (self.num_frames - 1) * min(self.interval_list) + 1


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def crop_hw(crop_size) -> tuple[int, int] | None:
  """`(height, width)` of a `crop_size` setting: an int n (n x n), a pair, or None (whole frames).

  Raises:
    ValueError: anything else, naming `crop_size`.
  """
  if crop_size is None:
    return None
  hw = (crop_size, crop_size) if _is_int(crop_size) else crop_size
  if isinstance(hw, (tuple, list)) and len(hw) == 2 and all(_is_int(x) and x > 0 for x in hw):
    return int(hw[0]), int(hw[1])
  raise ValueError(f"crop_size must be a positive integer, (height, width) or None (whole "
                   f"frames), got {crop_size!r}")


def window_spec(data_config, num_frames: int) -> WindowSpec:
  """The `WindowSpec` of a `config.data` block (see `get_datasets` for the fields read).

  Raises:
    ValueError: a bad value; the message starts with its key.
  """
  get = lambda field, default=None: _field(data_config, field, default)
  steps = get("interval_list", (1,))
  return WindowSpec(
      num_frames=num_frames, crop_size=crop_hw(get("crop_size")),
      interval_list=tuple(steps) if isinstance(steps, (tuple, list)) else steps,
      random_reverse=get("random_reverse", False), hflip=get("hflip", True),
      rot90=get("rot90", True),
      reproduce_original_sampling=get("reproduce_original_sampling", False))


def hint_spec(data_config) -> hints_lib.HintSpec | None:
  """The simulated hints of a `config.data` block (None: off).

  Raises:
    ValueError: a bad value; the message starts with its key (`simulated_hints.<field>`).
  """
  return hints_lib.HintSpec.from_config(_field(data_config, "simulated_hints"))


class SampleWindow(grain.transforms.RandomMap):
  """key -> a window of `spec.num_frames` uint8 frames, cropped and flipped as one."""

  def __init__(self, source, index: data_sources.ClipIndex, spec: WindowSpec):
    self._source, self._index, self._spec = source, index, spec
    self._offsets = index.offsets

  def _frame_ids(self, frame, length, rng):
    n = self._spec.num_frames
    if self._spec.reproduce_original_sampling:
      return np.arange(n)
    # Always N frames at the drawn stride (the original's last-frame formula gives fewer
    # than N for strides > 1; its shipped config only uses stride 1).
    fits = [i for i in self._spec.interval_list if (n - 1) * i < length]
    interval = fits[int(rng.integers(len(fits)))]
    last_start = length - 1 - (n - 1) * interval
    start = frame if frame <= last_start else int(rng.integers(0, last_start + 1))
    ids = start + interval * np.arange(n)
    if self._spec.random_reverse and rng.random() < 0.5:
      ids = ids[::-1]
    return ids

  def _augment(self, window, rng):
    # One crop and one set of flips for the whole window.
    if self._spec.crop_size:
      ch, cw = self._spec.crop_size
      top = int(rng.integers(0, window.shape[1] - ch + 1))
      left = int(rng.integers(0, window.shape[2] - cw + 1))
      window = window[:, top:top + ch, left:left + cw]
    if self._spec.hflip and rng.random() < 0.5:
      window = window[:, :, ::-1]
    if self._spec.rot90 and rng.random() < 0.5:
      window = window[:, ::-1].transpose(0, 2, 1, 3)  # out[i, j] = in[H-1-j, i]
    return np.ascontiguousarray(window)

  def random_map(self, key, rng: np.random.Generator) -> dict[str, np.ndarray]:
    clip = int(np.searchsorted(self._offsets, key, side="right")) - 1
    length = int(self._index.num_frames[clip])
    ids = self._frame_ids(int(key - self._offsets[clip]), length, rng)
    record = int(self._index.records[clip])
    first = int(ids.min())
    frames = raw_records.clip_frames(self._source, self._index, clip, first, int(ids.max()) + 1)
    return {"rgb": self._augment(frames[ids - first], rng), "clip_id": np.int32(record),
            "frame_ids": ids.astype(np.int32), "key": np.int64(key)}


class ToLab(grain.transforms.Map):
  """Adds `gray` and `ab` from `rgb`; drops `rgb` unless `keep_rgb`."""

  def __init__(self, keep_rgb: bool = False):
    self._keep_rgb = keep_rgb

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    element = dict(element)
    rgb = element["rgb"] if self._keep_rgb else element.pop("rgb")
    element["gray"], element["ab"] = color.rgb_to_gray_ab(rgb, np)  # numpy: workers never start JAX
    return element


def make_train_dataset(source, index: data_sources.ClipIndex, spec: WindowSpec, *, seed: int,
                       num_epochs: int | None = None, process_index: int = 0,
                       process_count: int = 1, output: str = "lab",
                       hints: hints_lib.HintSpec | None = None) -> grain.MapDataset:
  """Training windows of one process, before batching.

  Args:
    source: random-access clips (see `data_sources`).
    index: the clips' index; clips too short or too small for `spec` are skipped and reported.
    spec: window sampling and augmentation.
    seed: the same on every process.
    num_epochs: epochs over all keys (one key per frame), None for infinite.
    process_index: this process.
    process_count: number of processes; process p gets elements p, p + count, ... of the
      global stream, so processes are disjoint and together cover it.
    output: "lab" for gray/ab float32, "rgb" for uint8 `rgb` only (convert on device).
    hints: simulated hints to add (`hint_ab`, `hint_mask`), or None for none. Their draws have
      their own seed, so the windows are the same with and without them.

  Returns:
    A `grain.MapDataset` of windows.

  Raises:
    DataError: no usable clip, or whole frames of different sizes without a crop.
  """
  crop = spec.crop_size or (0, 0)
  index, _ = data_sources.select_clips(index, min_frames=spec.min_frames, min_height=crop[0],
                                       min_width=crop[1], what="training data")
  if not spec.crop_size and (len(set(index.heights)) > 1 or len(set(index.widths)) > 1):
    sizes = {}
    for name, h, w in zip(index.names, index.heights, index.widths, strict=True):
      sizes.setdefault(f"{int(h)}x{int(w)}", name)
    raise DataError("training clips have different frame sizes ("
                    + ", ".join(f"{n!r} {hw}" for hw, n in list(sizes.items())[:3])
                    + (", ..." if len(sizes) > 3 else "") + "); set a crop_size")
  if not spec.crop_size and spec.rot90 and index.heights[0] != index.widths[0]:
    raise DataError(f"rot90 on whole frames needs square frames, the training clips' are "
                    f"{index.heights[0]}x{index.widths[0]}; set rot90 to False or a square "
                    "crop_size")
  shuffle_seed, map_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
  ds = grain.MapDataset.range(int(index.offsets[-1]))
  ds = ds.shuffle(seed=shuffle_seed).repeat(num_epochs)
  ds = ds.random_map(SampleWindow(source, index, spec), seed=map_seed)
  if output == "lab":
    ds = ds.map(ToLab())
  elif output != "rgb":
    raise ValueError(f"output must be 'lab' or 'rgb', got {output!r}")
  if hints is not None:
    hint_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    ds = ds.random_map(hints_lib.SimulateHints(hints), seed=hint_seed)
  # Sharding last (MapDataset is lazy, so nothing is computed for other hosts): the random
  # draws then depend on the global position only, and any process count sees the same stream.
  return ds[process_index::process_count]


def to_batches(ds: grain.MapDataset, batch_size: int, *, drop_remainder: bool = True,
               num_workers: int = 0, read_threads: int = 2,
               worker_buffer: int = 4) -> grain.IterDataset:
  """to_iter_dataset -> mp_prefetch -> batch.

  Workers prefetch single elements and this process batches them: grain hands out elements
  round-robin in their original order, so the batches are the same for any `num_workers`
  (batching inside workers would batch each worker's slice instead). Restoring an iterator
  state needs the same `num_workers` it was saved with (0 versus > 0 differ in format).

  Args:
    ds: elements.
    batch_size: per-process batch size.
    drop_remainder: drop a last incomplete batch.
    num_workers: worker processes (0: in this process).
    read_threads: threads per process reading and transforming elements.
    worker_buffer: elements each worker prepares ahead.

  Returns:
    A `grain.IterDataset` of batches; `iter()` gives a checkpointable iterator.
  """
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=2 * batch_size))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # grain reads its absl flags when starting workers; outside absl.app (scripts,
      # notebooks, pytest) nobody parsed them, so take their defaults.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=worker_buffer))
  return it.batch(batch_size, drop_remainder=drop_remainder)


def _field(config, name, default=None):
  if isinstance(config, Mapping):
    return config.get(name, default)
  return getattr(config, name, default)


def get_datasets(data_config, *, num_frames: int, global_batch_size: int, seed: int,
                 process_index: int | None = None, process_count: int | None = None):
  """Training and evaluation datasets from a `config.data` block.

  Fields read (defaults in brackets): name ["synthetic_clips"], config [None], data_dir [TFDS
  default], manual_dir [None], build [True: prepare the dataset if missing], train_split
  ["train"], eval_split ["validation"; None for no evaluation], crop_size [None: whole frames;
  int or (h, w)], interval_list [(1,)], random_reverse [False], hflip [True], rot90 [True],
  reproduce_original_sampling [False], output ["lab"], simulated_hints [None: off; a block with
  `enabled` and the fields of `hints.HintSpec`], num_workers [0], read_threads [2],
  eval_batch_size [1], eval_max_frames [None]. With several processes sharing a data_dir,
  prepare the dataset once beforehand (or on process 0 behind a barrier): concurrent builds
  of the same dataset race.

  Args:
    data_config: a ConfigDict, dict or any object with those attributes.
    num_frames: frames per training window.
    global_batch_size: batch size over all processes.
    seed: pipeline seed (same on all processes).
    process_index: this process (default `jax.process_index()`).
    process_count: processes (default `jax.process_count()`).

  Returns:
    `(train, eval)`: `grain.IterDataset`s of per-process batches (eval is None without an
    eval split, or when the dataset has no such split). Call `iter()` on them; the training
    iterator is checkpointable.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index, process_count = jax.process_index(), jax.process_count()
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} is not divisible by "
                     f"{process_count} processes")
  get = lambda field, default=None: _field(data_config, field, default)
  name, config, data_dir = get("name", "synthetic_clips"), get("config"), get("data_dir")
  # The settings first: a mistake is told before a dataset is built.
  spec = window_spec(data_config, num_frames)
  hints = hint_spec(data_config)
  if get("build", True):
    data_building.build(name, data_dir, config=config, manual_dir=get("manual_dir"))
  source, index = data_building.open_split(name, get("train_split", "train"), data_dir,
                                           config=config)
  workers = get("num_workers", 0)
  threads = get("read_threads", 2)
  train = make_train_dataset(source, index, spec, seed=seed, process_index=process_index,
                             process_count=process_count, output=get("output", "lab"),
                             hints=hints)
  train = to_batches(train, global_batch_size // process_count, num_workers=workers,
                     read_threads=threads)
  logging.info("training data %s[%s]: %d clips, %d keys per epoch", name,
               get("train_split", "train"), len(index), int(index.num_frames.sum()))
  eval_split = get("eval_split", "validation")
  if eval_split is None or str(eval_split).strip() in ("", "None", "none"):  # (flags give 'None')
    return train, None
  splits = data_building.split_names(name, data_dir, config=config)
  base = eval_split.split("[", 1)[0]  # "validation[:8]": a slice of a split
  if base not in splits:
    if base not in USUAL_EVAL_SPLITS:  # a name the user typed: a typo must not silently skip
      close = difflib.get_close_matches(base, splits, n=1)
      raise DataError(f"{name} has no split {eval_split!r} (config.data.eval_split); its splits: "
                      f"{', '.join(splits)}"
                      + (f"; did you mean {close[0]!r}?" if close else "")
                      + " (no evaluation: --config.eval_every_steps=0)")
    logging.warning("%s has no split %r: no evaluation data (its splits: %s; "
                    "config.data.eval_split picks one)", name, eval_split, ", ".join(splits))
    return train, None
  source, index = data_building.open_split(name, eval_split, data_dir, config=config)
  if (check := get("eval_size_check")) is not None:  # e.g. the model's size multiple
    for clip, h, w in zip(index.names, index.heights, index.widths, strict=True):
      check(clip, int(h), int(w))
  eval_batch = get("eval_batch_size", 1)
  evaluation = eval_pipeline.make_eval_dataset(source, index, batch_size=eval_batch,
                                               max_frames=get("eval_max_frames"),
                                               process_index=process_index,
                                               process_count=process_count)
  return train, to_batches(evaluation, eval_batch, drop_remainder=False, num_workers=workers,
                           read_threads=threads)
