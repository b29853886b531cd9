"""Periodic validation during training: the original test protocol on whole validation clips.

Every clip of the validation split is colorized with `protocol.colorize_clip` (windows of
`interval_length` + 2 frames, one-sampling) and scored with PSNR and CDC (`metrics`). The gray
baseline (ab = 0: the luminance alone) is scored the same way, so a run can tell whether it
learned colour at all. Each process evaluates its share of the clips on its own first device
(no collectives in the model call, so the shares may differ in work); the per-clip numbers are
then gathered on every process.
"""

import functools
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from tcvc_jax.evaluation import metrics
from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.training import sharding
from tcvc_jax.training import train_lib

# Per-clip row: valid, psnr, cdc_r, cdc_g, cdc_b, and the same four for the gray baseline and
# the ground truth (cdc only).
_ROW = 12


def _cdc(rows: np.ndarray) -> float:
  return metrics.cdc([metrics.ClipCDC(per_channel=r.astype(np.float32), per_gap={})
                      for r in rows])["cdc"]


def _image_grid(rows: list[np.ndarray], num_frames: int) -> np.ndarray:
  """Clips [n, H, W, 3] (one per row) -> one uint8 image of `num_frames` evenly spaced frames."""
  n = rows[0].shape[0]
  picks = np.unique(np.linspace(0, n - 1, min(num_frames, n)).round().astype(int))
  return np.concatenate([np.concatenate(list(r[picks]), axis=1) for r in rows], axis=0)


class Validator:
  """Scores a model on a validation dataset.

  Args:
    model: the TCVC module.
    dataset: a `grain.IterDataset` of padded clip batches (`eval_pipeline.make_eval_dataset`
      batched); a new iterator is taken per run.
    interval_length: T of the protocol (windows of T + 2 frames).
    network_size: (h, w) the model runs at, or None for each clip's own size.
    num_images: clips of process 0 shown as images (gray / output / ground truth).
    image_frames: frames per image row.
  """

  def __init__(self, model, dataset, *, interval_length: int,
               network_size: tuple[int, int] | None = None, num_images: int = 2,
               image_frames: int = 6):
    self._dataset = dataset
    self._interval = int(interval_length)
    self._size = tuple(network_size) if network_size else None
    self._num_images = num_images
    self._image_frames = image_frames
    self._apply = jax.jit(functools.partial(train_lib.colorize, model))
    self._static = {}  # (clip_id, start) -> `_static_row`

  def _gray(self, gt, size):
    zero_ab = lambda gray: np.zeros(gray.shape[:3] + (2,), np.float32)
    return protocol.colorize_clip(gt, zero_ab, (self._interval,), network_size=size)

  def _static_row(self, key, gt, size):
    """Gray-baseline PSNR and CDC and ground-truth CDC of a clip (they never change)."""
    if key not in self._static:
      gray_out = self._gray(gt, size)
      self._static[key] = ([metrics.psnr_clip(gt, gray_out, self._interval).avg]
                           + list(metrics.cdc_clip(gray_out).per_channel)
                           + list(metrics.cdc_clip(gt).per_channel))
    return self._static[key]

  def _score(self, variables):
    """Per-clip rows of this process's share of the clips, and the images."""
    window = lambda gray: np.asarray(self._apply(variables, gray[None])[0])
    rows, images = [], {}
    for batch in iter(self._dataset):
      for i in range(len(batch["mask"])):
        row = np.zeros(_ROW, np.float64)
        if batch["mask"][i]:
          n, h, w = (int(batch[k][i]) for k in ("num_frames", "height", "width"))
          gt = np.asarray(batch["rgb"][i, :n, :h, :w])
          size = self._size or (h, w)
          out = protocol.colorize_clip(gt, window, (self._interval,), network_size=size)
          static = self._static_row((int(batch["clip_id"][i]), int(batch["start"][i])), gt, size)
          row[:] = [1.0, metrics.psnr_clip(gt, out, self._interval).avg,
                    *metrics.cdc_clip(out).per_channel, *static]
          if jax.process_index() == 0 and len(images) < self._num_images:
            images[f"eval/clip{len(images)}"] = _image_grid([self._gray(gt, size), out, gt],
                                                            self._image_frames)
        rows.append(row)
    return rows, images

  def run(self, variables: dict[str, Any]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Evaluates `variables` (replicated global arrays or host arrays).

    Returns:
      (scalars: psnr, cdc, psnr_gray, cdc_gray, cdc_gt, psnr_gain, num_clips;
       images: name -> uint8 [3H, kW, 3] on process 0, empty elsewhere).
    """
    local = sharding.local_copy(variables)  # one device: no collectives, shares may differ
    # Outside the training mesh: every computation here runs on this process's first device.
    with jax.set_mesh(sharding.local_mesh()):
      rows, images = self._score(local)
    table = np.stack(rows) if rows else np.zeros((0, _ROW))
    if jax.process_count() > 1:
      table = np.asarray(multihost_utils.process_allgather(table)).reshape(-1, _ROW)
    table = table[table[:, 0] > 0]
    if not len(table):
      return {"num_clips": 0.0}, images
    psnr = metrics.mean_over_clips(table[:, 1])
    psnr_gray = metrics.mean_over_clips(table[:, 5])
    scalars = {"psnr": psnr, "cdc": _cdc(table[:, 2:5]), "psnr_gray": psnr_gray,
               "cdc_gray": _cdc(table[:, 6:9]), "cdc_gt": _cdc(table[:, 9:12]),
               "psnr_gain": psnr - psnr_gray, "num_clips": float(len(table))}
    return scalars, images
