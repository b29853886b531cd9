"""Colorizes any video or frame folder with a TCVC checkpoint, streaming in constant memory.

  python -m tcvc_jax.colorize INPUT OUTPUT --checkpoint PATH [options]

The video is read, colorized and written window by window (`protocol.iter_colorize`): frames
are grouped into windows of `interval + 2` frames that share their boundary frame, and the anchor
state of a window's last frame is carried into the next window (`protocol.AnchorCarry`), so memory
does not grow with the video's length. Each frame's lightness is kept at full resolution; only the
colour (ab) comes from the network, which runs at `--size`. Hard cuts are detected on the fly
(`scene_cuts.CutDetector`); a new shot starts a new window, so colours never propagate across a cut.

The output is written under a temporary name and renamed when complete; an existing output is only
replaced with `--overwrite`. Any problem with the input, output or checkpoint ends the run with a
one-line message on stderr and exit status 1 (with the traceback under `--verbose`).
"""

import argparse
import ctypes
import ctypes.util
import dataclasses
import functools
import os
import sys
import time

from absl import logging
import jax.numpy as jnp
import tqdm

import tcvc_jax
from tcvc_jax import convert
from tcvc_jax import protocol
from tcvc_jax import scene_cuts
from tcvc_jax import video_io

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class UsageError(ValueError):
  """A bad option value (network size, interval)."""


# Everything a user can cause with an argument or a file; reported in one line, not as a bug.
INPUT_ERRORS = (video_io.VideoIOError, convert.ConversionError, protocol.ClipTooShortError,
                UsageError, OSError)


@dataclasses.dataclass
class Result:
  """What `colorize_file` did."""

  output: str
  frames: int
  cuts: list  # frame indices where a new shot starts
  seconds: float  # wall time of the whole run, model loading and compilation included


def parse_size(text):
  """'256' or '256x448' (height x width) -> (h, w)."""
  try:
    parts = [int(p) for p in str(text).lower().split("x")]
  except ValueError:
    parts = []
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) <= 0:
    raise UsageError(f"bad network size {text!r}: use N or HxW with positive integers, e.g. 256")
  return tuple(parts)


def check_network_size(colorizer, size):
  """Raises UsageError unless both sides of `size` suit the model's flow network."""
  multiple = 64 if colorizer.model.flow_type == "flownet2" else 8
  h, w = (size, size) if isinstance(size, int) else size
  if h % multiple or w % multiple:
    raise UsageError(f"network size {h}x{w} does not suit this checkpoint: its "
                     f"{colorizer.model.flow_type} flow needs multiples of {multiple}")


@functools.cache
def _libc():
  try:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None


def release_free_memory():
  """Hands the heap's free pages back to the system (glibc `malloc_trim`); a no-op elsewhere.

  Frame-sized buffers are allocated and freed for every window; glibc keeps the freed memory in
  fragmented arenas, so without this the resident size of a 1000-frame run ended 22% above that of
  a 50-frame run (benchmarks/colorize_bench.py); trimming once per window keeps it flat.
  """
  libc = _libc()
  if libc is not None and hasattr(libc, "malloc_trim"):
    libc.malloc_trim(0)


def load_colorizer(checkpoint, dtype=jnp.float32):
  """`tcvc_jax.load`; any checkpoint problem raises `convert.ConversionError`."""
  return tcvc_jax.load(checkpoint, dtype=dtype)


class _CutRecorder:
  """`is_cut(index, frame)` for `protocol.iter_windows` that remembers where the cuts are."""

  def __init__(self, detector, cuts):
    self._detector = detector
    self.cuts = cuts

  def __call__(self, index, frame):
    cut = self._detector(index, frame)
    if cut:
      logging.info("scene cut at frame %d", index)
      self.cuts.append(index)
    return cut


def colorize_frames(frames, colorizer, interval=protocol.DEFAULT_INTERVAL,
                    network_size=protocol.DEFAULT_NETWORK_SIZE, cuts=None, gray_mode="srgb"):
  """Colorizes a stream of frames window by window (one-sampling); yields uint8 RGB [H, W, 3].

  Args:
    frames: iterable of frames [H, W, 1 | 3 | 4] (uint8, uint16 or float in [0, 1]).
    colorizer: an `api.Colorizer` (anything with its `colorize_window`).
    interval: window interval T; windows hold T + 2 frames.
    network_size: int or (h, w) the model runs at.
    cuts: None (no scene-cut detection) or a list that receives the detected cut indices, in order,
      as the stream is read.
    gray_mode: see `protocol.frames_to_l`.
  """
  is_cut = None if cuts is None else _CutRecorder(scene_cuts.CutDetector(), cuts)
  return protocol.iter_colorize(frames, protocol.AnchorCarry(colorizer), interval, network_size,
                                gray_mode=gray_mode, is_cut=is_cut)


def colorize_file(input_path, output_path, model, interval=protocol.DEFAULT_INTERVAL,
                  network_size=protocol.DEFAULT_NETWORK_SIZE, detect_cuts=True, gray_mode="srgb",
                  overwrite=False, fps=None, progress=True, dtype=jnp.float32,
                  release_memory=True):
  """Colorizes a video file or frame folder into an mp4 (or other video) file or a frame folder.

  Args:
    input_path: video file or folder of PNG / JPEG frames (gray or colour, 8 or 16 bit).
    output_path: video file (`video_io.VIDEO_OUTPUT_EXTENSIONS`; source fps, source audio copied)
      or a folder (a path without extension; PNG frames, named as the input frames if any).
    model: an `api.Colorizer`, or a checkpoint path loaded after the input and output are checked.
    interval: window interval T.
    network_size: int or (h, w).
    detect_cuts: detect scene cuts and start a new window at each.
    gray_mode: see `protocol.frames_to_l`.
    overwrite: replace an existing output.
    fps: frame rate for a frame-folder input (default 25); overrides a video's own.
    progress: show a progress bar on stderr.
    dtype: compute dtype when `model` is a path.
    release_memory: call `release_free_memory` once per window.

  Returns:
    Result.

  Raises:
    One of INPUT_ERRORS, with a one-line message.
  """
  start = time.perf_counter()
  source = video_io.open_source(input_path, fps)
  if source.num_frames is not None and source.num_frames < 2:
    raise protocol.ClipTooShortError(
        f"{input_path} has {source.num_frames} frame; colorizing needs at least 2 (two anchors)")
  audio = source.path if source.kind == "video" and source.has_audio else None
  if audio and os.path.splitext(os.fspath(output_path))[1] == "":
    logging.warning("the audio of %s is not kept in a frame folder", input_path)
  cuts = [] if detect_cuts else None
  count = 0
  with video_io.open_writer(output_path, fps=source.fps, audio_from=audio, overwrite=overwrite,
                            names=source.names) as writer:
    colorizer = load_colorizer(model, dtype) if isinstance(model, (str, os.PathLike)) else model
    check_network_size(colorizer, network_size)
    with tqdm.tqdm(total=source.num_frames, unit="frame", desc="colorizing", disable=not progress,
                   dynamic_ncols=True, file=sys.stderr) as bar:
      for frame in colorize_frames(source, colorizer, interval, network_size, cuts, gray_mode):
        writer.write(frame)
        count += 1
        bar.update()
        if release_memory and count % (interval + 1) == 0:
          release_free_memory()
  return Result(output=writer.path, frames=count, cuts=cuts or [],
                seconds=time.perf_counter() - start)


def build_parser():
  """The command-line interface."""
  parser = argparse.ArgumentParser(
      prog="python -m tcvc_jax.colorize",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description=(
          "Colorize a black-and-white (or colour) video with a TCVC checkpoint.\n\n"
          "Reads a video file (any container FFmpeg reads) or a folder of PNG/JPEG frames,\n"
          "gray or colour (only the lightness is used), 8 or 16 bit, any resolution. The\n"
          "full-resolution lightness is kept; the network predicts colour at --size. Memory\n"
          "stays flat in the video's length: frames are read, colorized and written window by\n"
          "window. Scene cuts are detected, and colours never propagate across one."),
      epilog=(
          "examples:\n"
          "  python -m tcvc_jax.colorize old_film.mp4 old_film_color.mp4 --checkpoint ckpt/\n"
          "  python -m tcvc_jax.colorize frames/ colorized/ --checkpoint 80000_G.pth \\\n"
          "      --size 256x448\n\n"
          "exit status: 0 on success, 1 on bad input, output or checkpoint (one-line message),\n"
          "130 when interrupted."))
  parser.add_argument("input",
                      help="video file, or folder of *.png / *.jpg frames (sorted by name)")
  parser.add_argument("output", help="output video (.mp4 .m4v .mov .mkv: H.264, source fps and "
                      "audio) or a folder for PNG frames (a path without extension)")
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="converted checkpoint directory (python -m tcvc_jax.convert) or an "
                      "original full TCVC .pth")
  parser.add_argument("--size", default=str(protocol.DEFAULT_NETWORK_SIZE), metavar="N|HxW",
                      help="network size: frames are resized to this for the model (multiples of "
                      "64 with FlowNet2, of 8 with the classical flow); default %(default)s")
  parser.add_argument("--interval", type=int, default=protocol.DEFAULT_INTERVAL, metavar="T",
                      help="frames between two anchors; windows hold T + 2 frames "
                      "(default %(default)s, as the paper)")
  parser.add_argument("--no-scene-cuts", action="store_true",
                      help="do not detect scene cuts (by default a cut starts a new window, so "
                      "colours never cross it)")
  parser.add_argument("--gray-mode", choices=protocol.GRAY_MODES, default="srgb",
                      help="one-channel input: 'srgb' takes gray as an sRGB level (true "
                      "lightness), 'original' as the original no-GT script did (gray - 0.5); "
                      "default %(default)s")
  parser.add_argument("--fps", type=float, default=None,
                      help="frame rate of the output video for a frame-folder input (default 25); "
                      "overrides a video's own rate")
  parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                      help="compute precision (default %(default)s)")
  parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  parser.add_argument("--verbose", action="store_true",
                      help="log details and show tracebacks on errors")
  return parser


def main(argv=None):
  """Runs the CLI; returns the exit status."""
  args = build_parser().parse_args(argv)
  logging.set_verbosity(logging.INFO if args.verbose else logging.ERROR)
  try:
    if args.interval < 0:
      raise UsageError(f"--interval must be >= 0, got {args.interval}")
    if args.fps is not None and args.fps <= 0:
      raise UsageError(f"--fps must be positive, got {args.fps}")
    result = colorize_file(
        args.input, args.output, args.checkpoint, interval=args.interval,
        network_size=parse_size(args.size), detect_cuts=not args.no_scene_cuts,
        gray_mode=args.gray_mode, overwrite=args.overwrite, fps=args.fps,
        progress=not args.quiet, dtype=DTYPES[args.dtype])
  except INPUT_ERRORS as e:
    if args.verbose:
      raise
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return EXIT_ERROR
  except KeyboardInterrupt:
    print("interrupted; no output written", file=sys.stderr)
    return EXIT_INTERRUPTED
  cuts = ", ".join(map(str, result.cuts)) if result.cuts else "none"
  print(f"wrote {result.output}: {result.frames} frames in {result.seconds:.1f} s "
        f"({result.frames / max(result.seconds, 1e-9):.2f} frames/s overall); scene cuts: {cuts}")
  return EXIT_OK


def _one_line(err):
  text = " ".join(str(err).split())
  return text or type(err).__name__


if __name__ == "__main__":
  sys.exit(main())
