"""Colorizing whole clips: a stream of frames, or a video file / frame folder into another.

Frames are read, colorized and written window by window (`windows.iter_colorize`): windows of
`interval + 2` frames share their boundary frame, and the anchor state of a window's last frame is
carried into the next window (`windows.AnchorCarry`), so memory does not grow with the clip's
length. Each frame's lightness is kept at full resolution; only the colour (ab) comes from the
network, which runs at `network_size`. Hard cuts are detected on the fly (`scene_cuts.CutDetector`);
a new shot starts a new window, so colours never propagate across a cut.
"""

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

from tcvc_jax import api
from tcvc_jax.evaluation import scene_cuts
from tcvc_jax.evaluation import windows
from tcvc_jax.media import reading
from tcvc_jax.media import writing
from tcvc_jax.models import spec as spec_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class UsageError(ValueError):
  """A bad option value (network size, interval)."""


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
  """Raises UsageError unless both sides of `size` suit the model (`ModelSpec.check_size`)."""
  h, w = (size, size) if isinstance(size, int) else size
  spec = getattr(colorizer, "spec", None)
  if spec is None:  # a duck-typed colorizer without a model description
    return
  try:
    spec.check_size(h, w)
  except spec_lib.SpecError as e:
    raise UsageError(f"{e}; this checkpoint cannot run at that size") from e


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


class _CutRecorder:
  """`is_cut(index, frame)` for `windows.iter_windows` that remembers where the cuts are."""

  def __init__(self, detector, cuts):
    self._detector = detector
    self.cuts = cuts

  def __call__(self, index, frame):
    cut = self._detector(index, frame)
    if cut:
      logging.info("scene cut at frame %d", index)
      self.cuts.append(index)
    return cut


def colorize_frames(frames, colorizer, interval=windows.DEFAULT_INTERVAL,
                    network_size=windows.DEFAULT_NETWORK_SIZE, cuts=None, gray_mode="srgb"):
  """Colorizes a stream of frames window by window (one-sampling); yields uint8 RGB [H, W, 3].

  Args:
    frames: iterable of frames [H, W, 1 | 3 | 4] (uint8, uint16 or float in [0, 1]).
    colorizer: an `api.Colorizer` (anything with its `colorize_window`).
    interval: window interval T; windows hold T + 2 frames.
    network_size: int or (h, w) the model runs at.
    cuts: None (no scene-cut detection) or a list that receives the detected cut indices, in order,
      as the stream is read.
    gray_mode: see `windows.frames_to_l`.
  """
  is_cut = None if cuts is None else _CutRecorder(scene_cuts.CutDetector(), cuts)
  return windows.iter_colorize(frames, windows.AnchorCarry(colorizer), interval, network_size,
                                gray_mode=gray_mode, is_cut=is_cut)


def colorize_file(input_path, output_path, model, interval=windows.DEFAULT_INTERVAL,
                  network_size=windows.DEFAULT_NETWORK_SIZE, detect_cuts=True, gray_mode="srgb",
                  overwrite=False, fps=None, progress=True, dtype=jnp.float32,
                  release_memory=True):
  """Colorizes a video file or frame folder into an mp4 (or other video) file or a frame folder.

  Args:
    input_path: video file or folder of PNG / JPEG frames (gray or colour, 8 or 16 bit).
    output_path: video file (`writing.VIDEO_OUTPUT_EXTENSIONS`; source fps, source audio copied)
      or a folder (a path without extension; PNG frames, named as the input frames if any).
    model: an `api.Colorizer`, or a checkpoint path loaded after the input and output are checked.
    interval: window interval T.
    network_size: int or (h, w).
    detect_cuts: detect scene cuts and start a new window at each.
    gray_mode: see `windows.frames_to_l`.
    overwrite: replace an existing output.
    fps: frame rate for a frame-folder input (default 25); overrides a video's own.
    progress: show a progress bar on stderr.
    dtype: compute dtype when `model` is a path.
    release_memory: call `release_free_memory` once per window.

  Returns:
    Result.

  Raises:
    reading.MediaError, porting.ConversionError, windows.ClipTooShortError, UsageError or
    OSError, with a one-line message.
  """
  start = time.perf_counter()
  source = reading.open_source(input_path, fps)
  if source.num_frames is not None and source.num_frames < 2:
    raise windows.ClipTooShortError(
        f"{input_path} has {source.num_frames} frame; colorizing needs at least 2 (two anchors)")
  audio = source.path if source.kind == "video" and source.has_audio else None
  if audio and os.path.splitext(os.fspath(output_path))[1] == "":
    logging.warning("the audio of %s is not kept in a frame folder", input_path)
  cuts = [] if detect_cuts else None
  count = 0
  with writing.open_writer(output_path, fps=source.fps, audio_from=audio, overwrite=overwrite,
                            names=source.names) as writer:
    colorizer = api.load(model, dtype) if isinstance(model, (str, os.PathLike)) else model
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
