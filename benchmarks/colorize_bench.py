"""Benchmark of `python -m tcvc_jax.colorize`: frames/s and peak memory against video length.

Generates synthetic videos (a moving colour texture with an audio track) and colorizes them through
`streaming.colorize_file`, each run in its own process so that its peak RSS (ru_maxrss) is its own:

  * speed: one process colorizes the short video twice; frames/s is taken from the second pass,
    after XLA has compiled every window shape (the first pass's time is printed too);
  * memory: one process per video length (default 50 and 1000 frames), one pass each; the streaming
    colorizer should need about the same peak memory for both (the issue asks for <= 10% more).

Weights are random (speed and memory do not depend on them): the full-size TCVC (SIGGRAPH17 +
FlowNet2) by default, `--tiny` for the narrow test variant with the classical flow (a quick run),
or `--checkpoint` for real weights. Nothing is downloaded.

  python benchmarks/colorize_bench.py --tiny
  python benchmarks/colorize_bench.py --tiny --size 64 --frame-size 1080x1920 --speed-frames 0 \
      --memory-frames 40,80  # large frames: the full-resolution work's memory
  python benchmarks/colorize_bench.py --speed-frames 20 --memory-frames ''  # full model, speed
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import av
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_checkpoint(path, tiny):
  """Saves random weights of the full TCVC (or the tiny test variant) as a converted checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from tcvc_jax import converted  # pylint: disable=g-import-not-at-top
  from tcvc_jax.models import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from tcvc_jax.models import tcvc  # pylint: disable=g-import-not-at-top
  if tiny:
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import tiny as tiny_lib  # pylint: disable=g-import-not-at-top
    model = tiny_lib.tiny_model()
    variables = tiny_lib.tiny_variables(model)
  else:
    model = tcvc.TCVC()
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3, 64, 64, 1)))
  variables = jax.tree_util.tree_map(np.asarray, dict(variables))
  spec = tiny_lib.TINY_SPEC if tiny else spec_lib.ModelSpec()
  converted.save_converted(path, variables, "tcvc", spec, overwrite=True)


def make_video(path, num_frames, size, fps=25):
  """An H.264 mp4 of a colour texture panning 2 px per frame, with a 440 Hz AAC track; size:
  (height, width)."""
  y, x = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
  with av.open(path, "w") as out:
    vs = out.add_stream("libx264", rate=fps)
    vs.height, vs.width = size
    vs.pix_fmt = "yuv420p"
    aus = out.add_stream("aac", rate=16000)
    aus.layout = "mono"
    for i in range(num_frames):
      u = x + 2 * i
      rgb = np.stack([np.sin(0.05 * u + 0.03 * y), np.sin(0.02 * u - 0.04 * y + 1),
                      np.sin(0.03 * (u + y) + 2)], -1)
      vf = av.VideoFrame.from_ndarray(np.round((rgb + 1) * 127.5).astype(np.uint8), "rgb24")
      vf.pts = i
      out.mux(vs.encode(vf))
    out.mux(vs.encode(None))
    samples = int(16000 * num_frames / fps)
    for k in range(0, samples, 1024):
      t = np.arange(k, min(k + 1024, samples)) / 16000
      wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
      af = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
      af.sample_rate, af.pts = 16000, k
      out.mux(aus.encode(af))
    out.mux(aus.encode(None))


def worker(args):
  """Colorizes args.input args.repeat times in this process; prints one JSON line."""
  from tcvc_jax import api  # pylint: disable=g-import-not-at-top
  from tcvc_jax import streaming  # pylint: disable=g-import-not-at-top
  colorizer = api.load(args.checkpoint)
  passes = []
  for r in range(args.repeat):
    out = os.path.join(args.outdir, f"out{r}.mp4")
    t0 = time.perf_counter()
    res = streaming.colorize_file(args.input, out, colorizer, interval=args.interval,
                                 network_size=args.size, progress=False, overwrite=True,
                                 release_memory=not args.no_trim)
    passes.append({"frames": res.frames, "seconds": time.perf_counter() - t0})
  print(json.dumps({"passes": passes}))


def run_worker(args, video, repeat, outdir):
  """Runs a worker process; returns (its JSON result, its peak RSS in MiB)."""
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--input", video, "--checkpoint",
         args.checkpoint, "--size", str(args.size), "--interval", str(args.interval), "--repeat",
         str(repeat), "--outdir", outdir] + (["--no-trim"] if args.no_trim else [])
  log = os.path.join(outdir, "worker.log")
  with open(log, "w") as f:
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
  with open(log) as f:
    text = f.read()
  if proc.returncode:
    raise RuntimeError(f"worker failed ({proc.returncode}):\n{text}")
  result = json.loads(text.strip().splitlines()[-1])
  return result, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main():
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tiny", action="store_true", help="narrow test model (quick)")
  parser.add_argument("--checkpoint", help="real weights instead of random ones")
  parser.add_argument("--size", type=int, default=256, help="network size (and frame size)")
  parser.add_argument("--frame-size", default=None,
                      help="the videos' frame size, HxW (e.g. 1080x1920 with --size 64: the "
                           "full-resolution work's memory); default --size")
  parser.add_argument("--interval", type=int, default=17)
  parser.add_argument("--speed-frames", type=int, default=50,
                      help="video length of the frames/s run (0: skip)")
  parser.add_argument("--memory-frames", default="50,1000",
                      help="comma-separated video lengths of the memory runs ('' to skip)")
  parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
  parser.add_argument("--no-trim", action="store_true",
                      help="no allocator.release_freed_memory once per window")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--input", help=argparse.SUPPRESS)
  parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--outdir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)
  try:
    frame_size = tuple(int(v) for v in (args.frame_size or f"{args.size}x{args.size}").split("x"))
    if len(frame_size) != 2 or min(frame_size) < 16 or any(v % 2 for v in frame_size):
      raise ValueError
  except ValueError:
    parser.error(f"--frame-size: use HxW with even sizes of at least 16, got {args.frame_size!r}")

  tmp = tempfile.mkdtemp(prefix="colorize_bench-")
  try:
    if not args.checkpoint:
      args.checkpoint = os.path.join(tmp, "ckpt")
      t0 = time.perf_counter()
      make_checkpoint(args.checkpoint, args.tiny)
      print(f"random {'tiny' if args.tiny else 'full-size'} checkpoint: "
            f"{time.perf_counter() - t0:.1f} s")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{frame_size[0]}x{frame_size[1]} video, {args.size}x{args.size} network, "
          f"interval {args.interval}")
    lengths = [int(n) for n in args.memory_frames.split(",") if n.strip()]
    if args.speed_frames:
      lengths.append(args.speed_frames)
    videos = {}
    for n in sorted(set(lengths)):
      videos[n] = os.path.join(tmp, f"video{n}.mp4")
      make_video(videos[n], n, frame_size)
    if args.speed_frames:
      outdir = tempfile.mkdtemp(dir=tmp)
      res, rss = run_worker(args, videos[args.speed_frames], 2, outdir)
      first, second = res["passes"]
      print(f"speed, {args.speed_frames} frames: first pass {first['seconds']:.1f} s (with XLA "
            f"compilation), second pass {second['seconds']:.1f} s = "
            f"{second['frames'] / second['seconds']:.2f} frames/s; peak RSS {rss:.0f} MiB")
    peaks = {}
    for n in [int(n) for n in args.memory_frames.split(",") if n.strip()]:
      outdir = tempfile.mkdtemp(dir=tmp)
      res, peaks[n] = run_worker(args, videos[n], 1, outdir)
      p = res["passes"][0]
      print(f"memory, {n} frames: peak RSS {peaks[n]:.0f} MiB; {p['seconds']:.1f} s "
            f"({p['frames'] / p['seconds']:.2f} frames/s including compilation)")
    if len(peaks) >= 2:
      lo, hi = min(peaks), max(peaks)
      print(f"peak RSS ratio {hi} / {lo} frames: {peaks[hi] / peaks[lo]:.3f}")
  finally:
    if args.keep:
      print(f"kept {tmp}")
    else:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
