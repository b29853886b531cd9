"""Throughput of the training input pipeline (tcvc_jax.data.input_pipeline) on this machine.

Usage: python benchmarks/input_pipeline_bench.py [--clips 8] [--frames 40] [--batches 20]
    [--workers 0,1,2]

Generates 300x300 source clips procedurally (tcvc_jax.data.synthetic, as the original's training
frames were 300x300), writes them as ArrayRecord with the synthetic_clips builder into a
temporary folder, then times the paper's training windows: N=12 frames, 256x256 random crops,
flips, Lab, batch 4, read back through `tfds.data_source`. Prints windows/s for a few worker
counts, and for `output="rgb"` (Lab left to the accelerator) for comparison, with the CPU time
spent per window (this process and, with psutil, its workers), which other load on the
machine does not change much.
"""

import argparse
import os
import tempfile
import time

import tensorflow_datasets as tfds

from tcvc_jax.data import building as data_building
from tcvc_jax.data import datasets
from tcvc_jax.data import input_pipeline

try:
  import psutil  # pylint: disable=g-import-not-at-top
except ImportError:  # then worker CPU time is not counted
  psutil = None

_ARGS = argparse.Namespace(clips=8, frames=40, batches=20, workers="0,1,2")  # set by main()

NUM_FRAMES, CROP, BATCH, SOURCE_SIZE = 12, 256, 4, 300


def _cpu_seconds():
  """CPU time of this process and its live children (workers): a load-independent measure."""
  if psutil is None:
    return time.process_time()
  me = psutil.Process()
  procs = [me] + me.children(recursive=True)
  total = 0.0
  for p in procs:
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def _build(data_dir):
  module = datasets
  config = module.SyntheticConfig(name="bench300", height=SOURCE_SIZE, width=SOURCE_SIZE,
                                  num_frames=_ARGS.frames, num_train=_ARGS.clips,
                                  num_validation=1, num_test=1)
  start = time.perf_counter()
  data_building.build("synthetic_clips", data_dir, config=config)
  print(f"generated and wrote {_ARGS.clips} clips of {_ARGS.frames} frames at "
        f"{SOURCE_SIZE}x{SOURCE_SIZE} in {time.perf_counter() - start:.1f} s")
  return data_building.open_split("synthetic_clips", "train", data_dir, config="bench300")


def _time(source, index, *, workers, output):
  spec = input_pipeline.WindowSpec(num_frames=NUM_FRAMES, crop_size=(CROP, CROP))
  ds = input_pipeline.make_train_dataset(source, index, spec, seed=0, output=output)
  it = iter(input_pipeline.to_batches(ds, BATCH, num_workers=workers,
                                      read_threads=1 if workers else 2))
  try:
    start = time.perf_counter()
    batch = next(it)  # warm-up: worker start-up, first reads
    warm_up = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    for _ in range(_ARGS.batches):
      batch = next(it)
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
  finally:
    if workers:
      it.close()
  shapes = {k: v.shape for k, v in batch.items() if k in ("gray", "ab", "rgb")}
  windows = _ARGS.batches * BATCH / elapsed
  print(f"output={output} workers={workers}: {windows:.1f} windows/s "
        f"({elapsed / _ARGS.batches * 1e3:.0f} ms/batch, "
        f"{cpu / (_ARGS.batches * BATCH) * 1e3:.0f} CPU ms/window, warm-up {warm_up:.1f} s) "
        f"{shapes}")
  return windows


def _positive(text):
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def _worker_counts(text):
  try:
    counts = [int(w) for w in text.split(",")]
  except ValueError:
    counts = [-1]
  if not counts or min(counts) < 0:
    raise argparse.ArgumentTypeError(f"a comma-separated list of counts >= 0, got {text!r}")
  return text


def main():
  global _ARGS
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
  parser.add_argument("--clips", type=_positive, default=8, help="source clips")
  parser.add_argument("--frames", type=_positive, default=40, help="frames per source clip")
  parser.add_argument("--batches", type=_positive, default=20,
                      help="timed batches per setting (after warm-up)")
  parser.add_argument("--workers", type=_worker_counts, default="0,1,2",
                      help="worker process counts to time, comma-separated")
  _ARGS = parser.parse_args()
  tfds.disable_progress_bar()
  print(f"{os.cpu_count()} CPUs; windows of N={NUM_FRAMES} at {CROP}x{CROP}, batch {BATCH}")
  with tempfile.TemporaryDirectory() as data_dir:
    source, index = _build(data_dir)
    worker_counts = [int(w) for w in _ARGS.workers.split(",")]
    lab = {w: _time(source, index, workers=w, output="lab") for w in worker_counts}
    _time(source, index, workers=max(worker_counts), output="rgb")
    best = max(lab, key=lab.get)
    print(f"best with Lab in the pipeline: {lab[best]:.1f} windows/s ({best} workers)")


if __name__ == "__main__":
  main()
