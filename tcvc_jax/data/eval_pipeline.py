"""Grain evaluation pipeline: whole clips in order, without augmentation, padded to static shapes.

Evaluation elements are chunks of up to T frames of one clip (`clip_id`: the clip's first
element index in the source, `start`: the chunk's first frame): `gray [T, H, W, 1]` and `ab
[T, H, W, 2]` float32 in the model's normalised Lab, `rgb [T, H, W, 3]` uint8, padded at the end
and bottom/right with black, where `valid [T]`, `num_frames`, `height` and `width` tell the real
frames and size. Every process gets the same number of elements, a multiple of its batch size,
the rest being padding elements with `mask` False, so a multi-host evaluation runs the same
steps everywhere. `input_pipeline.get_datasets` builds them from a `config.data` block and
batches them with `input_pipeline.to_batches`; `training/validation.py` scores a model on them.
"""

import math
from typing import Sequence

import grain
import numpy as np

from tcvc_jax.data import raw_records
from tcvc_jax.data import sources as data_sources
from tcvc_jax.ops import color


class EvalChunk(grain.transforms.Map):
  """(clip, start) -> up to `num_frames` frames of the clip, padded, with masks and Lab.

  Clip -1 is a padding element: black frames, no valid frame, `mask` False.
  """

  def __init__(self, source, index, num_frames, height, width):
    self._source, self._index = source, index
    self._shape = (num_frames, height, width)

  def map(self, chunk) -> dict[str, np.ndarray]:
    t, h, w = self._shape
    rgb = np.zeros((t, h, w, 3), np.uint8)
    clip, start = chunk
    record, count, ch, cw = -1, 0, 0, 0
    if clip >= 0:
      record = int(self._index.records[clip])
      stop = min(start + t, int(self._index.num_frames[clip]))
      frames = raw_records.clip_frames(self._source, self._index, clip, start, stop)
      count, ch, cw = frames.shape[:3]
      rgb[:count, :ch, :cw] = frames
    gray, ab = color.rgb_to_gray_ab(rgb, np)  # numpy: workers never start JAX
    return {"gray": gray, "ab": ab, "rgb": rgb, "valid": np.arange(t) < count,
            "mask": np.bool_(clip >= 0), "clip_id": np.int32(record),
            "start": np.int32(start), "num_frames": np.int32(count),
            "height": np.int32(ch), "width": np.int32(cw)}


def make_eval_dataset(source, index: data_sources.ClipIndex, *, batch_size: int,
                      max_frames: int | None = None, frame_size: Sequence[int] | None = None,
                      process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Whole clips in order, without augmentation, padded to static shapes.

  Elements: `gray [T, H, W, 1]`, `ab [T, H, W, 2]`, `rgb [T, H, W, 3]` uint8, `valid [T]`,
  `mask`, `clip_id` (the clip's first element index in the source; -1 for padding), `start`,
  `num_frames`, `height`, `width`. Clips longer than `max_frames` come as consecutive chunks
  (`start` says where each begins). Frames are padded at the end and bottom/right with black;
  `valid` marks real frames, `height`/`width` the real size, and `mask` the real elements:
  every process gets the same number of elements, a multiple of `batch_size`, the rest being
  padding with `mask` False.

  Args:
    source: random-access clips.
    index: the clips' index.
    batch_size: per-process batch size.
    max_frames: chunk length; None for whole clips (padded to the longest).
    frame_size: `(height, width)` to pad to; None for the largest clip.
    process_index: this process.
    process_count: number of processes.

  Returns:
    A `grain.MapDataset` of elements; batch with
    `input_pipeline.to_batches(..., drop_remainder=False)`.
  """
  index, _ = data_sources.select_clips(index, min_frames=1, what="evaluation data")
  chunk = max_frames or int(index.num_frames.max())
  chunks = [(c, s) for c in range(len(index)) for s in range(0, int(index.num_frames[c]), chunk)]
  height, width = frame_size or (int(index.heights.max()), int(index.widths.max()))
  too_big = [n for n, h, w in zip(index.names, index.heights, index.widths, strict=False)
             if h > height or w > width]
  if too_big:
    raise data_sources.DataError(f"clips larger than frame_size {height}x{width}: {too_big}")
  per_process = math.ceil(math.ceil(len(chunks) / process_count) / batch_size) * batch_size
  mine = chunks[process_index::process_count]
  # Padding elements are (-1, 0); grain would drop None elements.
  mine = mine + [(-1, 0)] * (per_process - len(mine))
  return grain.MapDataset.source(mine).map(EvalChunk(source, index, chunk, height, width))
