"""Throughput of the training input pipeline (tcvc_jax.data.input_pipeline) on this machine.

Usage: python benchmarks/input_pipeline_bench.py [--clips 8] [--frames 40] [--batches 20]
    [--workers 0,1,2] [--source synthetic_clips|video_frames] [--record-mib 4]

Generates 300x300 source clips procedurally (tcvc_jax.data.synthetic, as the original's training
frames were 300x300), writes them as ArrayRecord into a temporary folder, with the synthetic_clips
builder (one record per clip) or, with `--source video_frames`, as PNG frame folders built by the
video_frames builder (records of at most `--record-mib` MiB; 0: one per clip; a comma-separated
list times each), then times the paper's training windows: N=12 frames, 256x256 random crops,
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
from tcvc_jax.data import synthetic
from tcvc_jax.media import writing

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


def _build_video_frames(data_dir, record_mib):
  """The clips as PNG frame folders, built by video_frames with records of `record_mib` MiB."""
  root = os.path.join(data_dir, "clips")
  if not os.path.isdir(root):
    for c in range(_ARGS.clips):
      clip = synthetic.generate_clip((0, 0, c), height=SOURCE_SIZE, width=SOURCE_SIZE,
                                     num_frames=_ARGS.frames)
      os.makedirs(os.path.join(root, f"clip{c:03d}"))
      for t, frame in enumerate(clip.frames):
        with open(os.path.join(root, f"clip{c:03d}", f"{t:05d}.png"), "wb") as f:
          f.write(writing.encode_png(frame))
  datasets.RECORD_BYTES = (record_mib << 20) or 1 << 62
  tfds_dir = os.path.join(data_dir, f"tfds_{record_mib}")
  start = time.perf_counter()
  data_building.build("video_frames", tfds_dir, config="folder", manual_dir=root)
  source, index = data_building.open_split("video_frames", "train", tfds_dir, config="folder")
  print(f"video_frames, records of {record_mib or 'any'} MiB: {_ARGS.clips} clips of "
        f"{_ARGS.frames} frames at {SOURCE_SIZE}x{SOURCE_SIZE} in {len(source)} records, built in "
        f"{time.perf_counter() - start:.1f} s")
  return source, index


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
  parser.add_argument("--source", choices=("synthetic_clips", "video_frames"),
                      default="synthetic_clips", help="the builder that writes the clips")
  parser.add_argument("--record-mib", type=_worker_counts, default="4",
                      help="video_frames: largest record in MiB (0: one per clip), "
                           "comma-separated to time several")
  _ARGS = parser.parse_args()
  tfds.disable_progress_bar()
  print(f"{os.cpu_count()} CPUs; windows of N={NUM_FRAMES} at {CROP}x{CROP}, batch {BATCH}")
  with tempfile.TemporaryDirectory() as data_dir:
    if _ARGS.source == "video_frames":
      builds = [lambda m=int(m): _build_video_frames(data_dir, m)
                for m in _ARGS.record_mib.split(",")]
    else:
      builds = [lambda: _build(data_dir)]
    for build in builds:
      source, index = build()
      worker_counts = [int(w) for w in _ARGS.workers.split(",")]
      lab = {w: _time(source, index, workers=w, output="lab") for w in worker_counts}
      _time(source, index, workers=max(worker_counts), output="rgb")
      best = max(lab, key=lab.get)
      print(f"best with Lab in the pipeline: {lab[best]:.1f} windows/s ({best} workers)")


if __name__ == "__main__":
  main()
