"""Metric writers without TensorFlow: console, JSON lines, TensorBoard event files and PNG images.

`MetricWriter` is the one interface the trainer writes through (like clu's writers, whose
module needs TensorFlow). TensorBoard files come from tensorboardX, a pure-Python writer; if it
is not installed, the other outputs still work. Only the process that owns the writer
(process 0) writes files; the others log to the console only.
"""

import json
import math
import os
from typing import Any
from typing import Mapping

from absl import logging
import numpy as np

from tcvc_jax import atomic

IMAGES_DIR = "images"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _to_float(value) -> float:
  return float(np.asarray(value).reshape(()))


def _hparam_value(value):
  if isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten_dict(value, name + "."))
    else:
      out[name] = value
  return out


class MetricWriter:
  """Writes scalars, images and hyperparameters of a run.

  Args:
    workdir: the run's folder: `metrics.jsonl`, `tensorboard/` and `images/` go there.
    write_files: False on processes > 0 (console only).
    tensorboard: also write TensorBoard event files.
  """

  def __init__(self, workdir: str, *, write_files: bool = True, tensorboard: bool = True):
    self._workdir = workdir
    self._write_files = write_files
    self._jsonl = None
    self._tb = None
    self._summary = None
    if not write_files:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
      except ImportError:
        logging.warning("tensorboardX is not installed: no TensorBoard event files "
                        "(pip install tensorboardX)")
      else:
        self._tb = tensorboardX.FileWriter(os.path.join(workdir, TENSORBOARD_DIR))
        self._summary = tensorboardX.summary

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes scalars (numbers or 0-d arrays) for `step` to every output."""
    values = {k: _to_float(v) for k, v in scalars.items()}
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    if not self._write_files:
      return
    record = {"step": int(step)}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_summary(self._summary.scalar(k, v), int(step))

  def resume_at(self, step: int) -> None:
    """The run goes on from `step` (its checkpoint): drops the records of later steps, which a run
    that stopped after that checkpoint wrote and this one writes again.

    metrics.jsonl is rewritten without them (a line cut off by a crash goes too); TensorBoard is
    told to drop its later events, as a restarted TensorFlow run tells it.
    """
    if not self._write_files:
      return
    path = os.path.join(self._workdir, METRICS_FILE)
    self._jsonl.close()
    with open(path) as f:
      lines = f.readlines()
    kept = []
    for line in lines:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and isinstance(record.get("step"), int) and (
          record["step"] <= step):
        kept.append(json.dumps(record) + "\n")
    if len(kept) != len(lines):
      atomic.write_text(path, "".join(kept), overwrite=True)
      logging.info("%s: dropped %d record(s) after step %d", path, len(lines) - len(kept), step)
    self._jsonl = open(path, "a")
    if self._tb is not None and step > 0:
      # TensorBoard drops the events from this step on (tensorboardX's purge_step does the same).
      from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
      self._tb.add_event(event_pb2.Event(step=int(step) + 1, session_log=event_pb2.SessionLog(
          status=event_pb2.SessionLog.START)))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Writes uint8 RGB images [H, W, 3] as `images/<name>_<step>.png` and to TensorBoard."""
    if not self._write_files:
      return
    from tcvc_jax.media import writing  # pylint: disable=g-import-not-at-top
    folder = os.path.join(self._workdir, IMAGES_DIR)
    os.makedirs(folder, exist_ok=True)
    for name, image in images.items():
      image = np.ascontiguousarray(np.asarray(image, np.uint8))
      png = writing.encode_png(image)
      path = os.path.join(folder, f"{name.replace('/', '_')}_{int(step):07d}.png")
      atomic.write_bytes(path, png, overwrite=True)
      if self._tb is not None:
        proto = self._summary.Summary(value=[self._summary.Summary.Value(
            tag=name, image=self._summary.Summary.Image(
                height=image.shape[0], width=image.shape[1], colorspace=image.shape[2],
                encoded_image_string=png))])
        self._tb.add_summary(proto, int(step))
    logging.info("step %d: wrote images %s to %s", step, ", ".join(images), folder)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Writes the flattened hyperparameters once (TensorBoard's HParams tab)."""
    if not self._write_files or self._tb is None:
      return
    flat = {k: _hparam_value(v) for k, v in flatten_dict(hparams).items()}
    for proto in self._summary.hparams(flat, {}):
      self._tb.add_summary(proto)

  def flush(self) -> None:
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self.flush()
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
