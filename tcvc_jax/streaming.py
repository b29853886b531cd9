"""Colorizing whole clips: a stream of frames, or a video file / frame folder into another.

Frames are read, colorized and written window by window (`window_stream.iter_colorize`): windows
of `interval + 2` frames share their boundary frame, and the anchor state of a window's last frame
is carried into the next window (`window_stream.AnchorCarry`), so memory does not grow with the
clip's length. Each frame's lightness is kept at full resolution; only the colour (ab) comes from
the network, which runs at `network_size`. Hard cuts are detected on the fly
(`scene_cuts.CutDetector`); a new shot starts a new window, so colours never propagate across a cut.
"""

import dataclasses
import os
import sys
import time

from absl import logging
import jax.numpy as jnp
import numpy as np
import tqdm

from tcvc_jax import allocator
from tcvc_jax import api
from tcvc_jax import atomic
from tcvc_jax import carrying
from tcvc_jax import cli
from tcvc_jax import guidance
from tcvc_jax import window_stream
from tcvc_jax.evaluation import scene_cuts
from tcvc_jax.evaluation import windows
from tcvc_jax.media import reading
from tcvc_jax.media import sound
from tcvc_jax.media import writing
from tcvc_jax.models import spec as spec_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


UsageError = cli.UsageError  # a bad option value (network size, interval, frame rate): exit 2


@dataclasses.dataclass
class Result:
  """What `colorize_file` did."""

  output: str
  frames: int
  cuts: list  # frame indices where a new shot starts
  seconds: float  # wall time of the whole run, model loading and compilation included
  warnings: tuple = ()  # sentences for the user: the audio not kept, a short read of the input
  bit_depth: int = 8  # of the written frames (16: PNG frames of a source deeper than 8 bits)


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


# Frame rates a video can be written at: 1 / fps is its time base, whose terms FFmpeg keeps in
# 32-bit integers (and `writing.VideoWriter` rounds the rate to a millionth).
MIN_FPS, MAX_FPS = 0.001, 10_000


def check_fps(fps):
  """Raises UsageError unless `fps` (None: the source's own) is a finite rate a video can have."""
  if fps is None:
    return
  try:
    ok = MIN_FPS <= float(fps) <= MAX_FPS  # False for NaN
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise UsageError(f"fps must be a number of frames per second from {MIN_FPS} to {MAX_FPS}, "
                     f"got {fps}")


def _checked_args(model, interval, network_size, hints):
  """colorize_file's (network size as (h, w), hints with int frames); UsageError / GuidanceError
  naming a bad argument."""
  if not (isinstance(model, (str, os.PathLike)) or hasattr(model, "colorize_window")):
    raise UsageError(f"model must be a checkpoint path or a Colorizer, got {type(model).__name__}")
  if isinstance(interval, bool) or not isinstance(interval, (int, np.integer)) or interval < 0:
    raise UsageError(f"interval must be a whole number >= 0, got {interval!r}")
  try:
    h, w = parse_size(network_size) if isinstance(network_size, str) else windows.size2(
        network_size)
  except (TypeError, ValueError):
    h = w = 0
  if isinstance(network_size, bool) or min(h, w) <= 0:
    raise UsageError(f"bad network size {network_size!r}: use N, (H, W) or 'HxW' with positive "
                     "integers, e.g. 256")
  if max(h, w) > windows.MAX_NETWORK_SIZE:
    raise UsageError(f"network size {network_size!r} is too large: at most "
                     f"{windows.MAX_NETWORK_SIZE} a side")
  return (h, w), (None if hints is None else guidance.check_hints(hints))


def output_dtype(bit_depth):
  """np.uint8 / np.uint16 for an output bit depth of 8 / 16; UsageError otherwise."""
  if (isinstance(bit_depth, bool) or not isinstance(bit_depth, (int, np.integer))
      or bit_depth not in windows.OUTPUT_DTYPES):
    raise UsageError(f"bit depth must be 8 or 16, got {bit_depth!r}")
  return windows.OUTPUT_DTYPES[bit_depth]


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


class _CutRecorder:
  """`is_cut(index, frame)` for `window_stream.iter_windows` that remembers where the cuts are."""

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
                    network_size=windows.DEFAULT_NETWORK_SIZE, cuts=None, gray_mode="srgb",
                    hints=None, on_planned=None, bit_depth=8):
  """Colorizes a stream of frames window by window (one-sampling); yields RGB [H, W, 3], uint8 or
  (bit_depth=16) uint16.

  Args:
    frames: iterable of frames [H, W, 1 | 3 | 4] (uint8, uint16 or float in [0, 1]), all of one
      shape; with `hints` it must be iterable twice (a `reading.FrameSource`, a list; not a one-shot
      iterator): a first pass finds the cuts and the anchors the hints are carried to.
    colorizer: an `api.Colorizer` (anything with its `colorize_window`), or a checkpoint path,
      loaded by this call (as `api.load`).
    interval: window interval T; windows hold T + 2 frames.
    network_size: int, (h, w) or 'HxW' / 'N' (as --size), the size the model runs at.
    cuts: None (no scene-cut detection) or a list that receives the detected cut indices, in order,
      as the stream is read.
    gray_mode: see `windows.frames_to_l`.
    hints: optional {frame index: guidance.FrameHint} (any resolution): user colour hints. Those
      frames become anchors and their hints are carried to every anchor of their shot (see
      tcvc_jax/carrying.py); a colorizer with hints support is needed.
    on_planned: optional `on_planned(frames, done)`, called as the first pass of a hinted run
      reads windows (frames read so far, False) and once when it ends (all frames, True).
    bit_depth: 8 (uint8 frames) or 16 (uint16, `windows.to_uint16_round`: for sources deeper than
      8 bits, whose lightness then keeps its precision).

  Raises:
    UsageError: a bad colorizer, interval, network size (or one the model cannot run at) or cuts.
    guidance.GuidanceError: bad hints (`guidance.check_hints`), or hints on a frame past the end.
    ValueError: a frame of another shape or dtype than frame 0, NaN or outside [0, 1] (naming
      it), or `frames` a one-shot iterator with hints; TypeError: a frame of a dtype that is no
      image's (int64, bool).
  """
  network_size, hints = _checked_args(colorizer, interval, network_size, hints)
  out_dtype = output_dtype(bit_depth)
  colorizer = api.load(colorizer) if isinstance(colorizer, (str, os.PathLike)) else colorizer
  if cuts is not None and not isinstance(cuts, list):
    raise UsageError(f"cuts must be None or a list (it receives the cut indices), got "
                     f"{type(cuts).__name__}")
  check_network_size(colorizer, network_size)
  carry = window_stream.AnchorCarry(colorizer)
  if hints:
    if iter(frames) is frames:
      raise ValueError("with hints, frames must be iterable twice (a list, a reading.FrameSource), "
                       "not a one-shot iterator: a first pass plans the hints")
  if not hints:
    is_cut = None if cuts is None else _CutRecorder(scene_cuts.CutDetector(), cuts)
    return window_stream.iter_colorize(frames, carry, interval, network_size,
                                       gray_mode=gray_mode, is_cut=is_cut, out_dtype=out_dtype)
  window_hints = plan_hints(frames, colorizer, hints, interval, network_size, gray_mode, cuts,
                            on_planned)
  cut_set = set(cuts or ())
  return window_stream.iter_colorize(frames, carry, interval, network_size, gray_mode=gray_mode,
                                     is_cut=lambda i, _: i in cut_set, anchors=set(hints),
                                     window_hints=window_hints, out_dtype=out_dtype)


def plan_hints(frames, colorizer, hints, interval, network_size, gray_mode, cuts,
               on_planned=None):
  """First pass of guided colorization: cuts, anchors and every anchor's hints.

  `on_planned(frames, done)`, if given, is called after each window with the number of frames
  read so far and done=False, and once more at the end with done=True.

  Returns:
    `window_hints(start, n)` for `window_stream.iter_colorize`: {"hint_ab", "hint_mask"}
    [n, h, w, *] with the hints of the window's two anchors, or None for a window without any.
  """
  hints = guidance.check_hints(hints)
  h, w = windows.size2(network_size)
  is_cut = None if cuts is None else _CutRecorder(scene_cuts.CutDetector(), cuts)
  anchor_l, shot_of, shot, count = {}, {}, 0, 0
  flows = carrying.ShotFlows(hints, colorizer.flow)
  prev_stop = None
  for start, win in window_stream.iter_windows(window_stream.checked_frames(frames), interval,
                                               is_cut, set(hints)):
    if prev_stop is not None and start != prev_stop - 1:
      shot += 1  # a window that does not start on the previous one's last frame: a new shot
      flows.start_shot()
    stop = start + len(win)
    wanted = flows.wanted(start, stop)
    l_win = np.asarray(windows.resize_l(windows.frames_to_l(
        np.stack(win if wanted else [win[0], win[-1]]), gray_mode), (h, w)))
    if wanted:
      flows.add(start, l_win)
    ends = l_win[[0, -1]]
    for t, l_frame in ((start, ends[0]), (stop - 1, ends[1])):
      anchor_l[t] = np.asarray(l_frame)
      shot_of[t] = shot
    prev_stop, count = stop, stop
    if on_planned is not None:
      on_planned(count, False)
  if on_planned is not None:
    on_planned(count, True)
  bad = sorted(f for f in hints if f >= count)
  if bad:
    raise guidance.GuidanceError(f"a hint or reference on frame {bad[0]}, but the video has "
                                 f"{count} frames (0..{count - 1})")
  user = {f: guidance.resize_hint(hint, h, w) for f, hint in hints.items()}
  per_anchor = {}
  for s in sorted(set(shot_of.values())):
    members = sorted(t for t, k in shot_of.items() if k == s)
    shot_user = {t: user[t] for t in members if t in user}
    if shot_user:
      per_anchor.update(carrying.anchor_hints(members, shot_user, anchor_l.__getitem__, flows))

  def window_hints(start, n):
    ends = (start, start + n - 1)
    if not any(t in per_anchor for t in ends):
      return None
    ab = np.zeros((n, h, w, 2), np.float32)
    mask = np.zeros((n, h, w, 1), np.float32)
    for pos, t in ((0, ends[0]), (n - 1, ends[1])):
      if t in per_anchor:
        ab[pos], mask[pos] = per_anchor[t].ab, per_anchor[t].mask
    return {"hint_ab": ab, "hint_mask": mask}

  return window_hints


def colorize_file(input_path, output_path, model, interval=windows.DEFAULT_INTERVAL,
                  network_size=windows.DEFAULT_NETWORK_SIZE, detect_cuts=True, gray_mode="srgb",
                  overwrite=False, fps=None, progress=True, dtype=jnp.float32,
                  release_memory=True, hints=None, bit_depth=None):
  """Colorizes a video file, frame folder or image into an mp4 (or other video) file, a frame
  folder or an image.

  Args:
    input_path: video file, folder of PNG / JPEG frames or one such image (gray or colour, 8 or 16
      bit). A single frame (a photo) is colorized by the anchor colorizer: a window of that frame
      twice, whose first output is kept.
    output_path: video file (`writing.VIDEO_OUTPUT_EXTENSIONS`; source fps, source audio copied),
      a folder (a path without extension; PNG frames, named as the input frames if any) or, for a
      1-frame input, an image (`writing.IMAGE_OUTPUT_EXTENSIONS`).
    model: an `api.Colorizer`, or a checkpoint path loaded after the input and output are checked.
    interval: window interval T.
    network_size: int or (h, w).
    detect_cuts: detect scene cuts and start a new window at each.
    gray_mode: see `windows.frames_to_l`.
    overwrite: replace an existing output.
    fps: frame rate for a frame-folder input (default 25); for a video, evenly spaced frames at
      this rate instead of the source's own frame times.
    progress: show a progress bar on stderr.
    dtype: compute dtype when `model` is a path.
    release_memory: give the heap's free pages back to the system once per window.
    hints: optional {frame: guidance.FrameHint}, see `colorize_frames`.
    bit_depth: of the written frames: 8, 16 (frame folders and .png images only: 16-bit PNGs)
      or None, the source's: 16 for a source deeper than 8 bits written as PNG, else 8 (videos
      and JPEGs are written at 8 bits; a deeper source then gets a note).

  Returns:
    Result.

  Raises:
    reading.MediaError, porting.ConversionError, UsageError (also an empty path, an output
    'x.mp4/', an image output for an input of several frames), atomic.OutputIsInputError (the
    output would replace the input or the checkpoint) or OSError, with a one-line message.
  """
  start = time.perf_counter()
  try:
    writing.check_paths(input_path, output_path)
  except ValueError as e:
    raise UsageError(str(e)) from None
  check_fps(fps)
  network_size, hints = _checked_args(model, interval, network_size, hints)
  ext = os.path.splitext(os.fspath(output_path))[1].lower()
  kind = writing.output_kind(output_path)
  to_video = kind == "video"
  eight_bit = ext in writing.EIGHT_BIT_OUTPUT_EXTENSIONS
  if bit_depth is not None:
    output_dtype(bit_depth)
    bit_depth = int(bit_depth)
    if bit_depth == 16 and eight_bit:
      raise UsageError(f"bit depth 16 is for a frame folder or .png output: {output_path} is "
                       f"{'a video' if to_video else 'a JPEG'}, written at 8 bits")
  checkpoint = model if isinstance(model, (str, os.PathLike)) else None
  atomic.check_keeps_inputs(output_path, [("the input", input_path),
                                          ("the checkpoint", checkpoint)])
  source = reading.open_source(input_path, fps)
  if kind == "image" and source.num_frames is not None and source.num_frames > 1:
    raise UsageError(f"{output_path} is an image file, which holds one frame; {input_path} has "
                     f"{source.num_frames} frames: give a video file or a folder")
  late = sorted(f for f in hints or () if source.num_frames is not None and f >= source.num_frames)
  if late and (source.kind != "video" or fps is None):  # before a pass over the whole video
    raise guidance.GuidanceError(f"a hint or reference on frame {late[0]}, but {input_path} has "
                                 f"{source.num_frames} frames (0..{source.num_frames - 1})")
  audio = source.path if source.kind == "video" and source.has_audio else None
  notes, tags = [], None
  deep = source.bit_depth > 8
  if deep and eight_bit and bit_depth is None:
    notes.append(f"{input_path} has {source.bit_depth}-bit samples; " + (
        "the video is written at 8 bits (a frame folder output gets 16-bit PNGs)" if to_video
        else "the JPEG is written at 8 bits (a .png output gets 16 bits)"))
  if audio and not to_video:
    notes.append(f"the audio of {input_path} is not kept in "
                 f"{'a frame folder' if kind == 'folder' else 'an image'}")
  elif audio and fps is not None:
    # Every frame is kept at the new rate: the video's length changes and its sound would not fit.
    notes.append(f"the audio of {input_path} is not kept: fps={fps} re-times its frames")
    audio = None
  for note in notes:
    logging.warning("%s", note)
  if source.kind == "video" and to_video:
    tags, dropped = sound.describe_source(source.path)
    if dropped:
      notes.append(dropped)
      logging.warning("%s", dropped)
  if bit_depth is None:
    bit_depth = 16 if deep and not eight_bit else 8
  if source.note:  # (reading logged it)
    notes.insert(0, source.note)
  cuts = [] if detect_cuts else None
  count = 0
  # A video's frames keep their own times (a variable frame rate stays in sync with its sound),
  # unless a rate is asked for.
  timed = source.kind == "video" and fps is None
  with writing.open_writer(output_path, fps=source.fps, audio_from=audio, overwrite=overwrite,
                            names=source.names,
                            sample_aspect_ratio=source.sample_aspect_ratio,
                            time_base=source.time_base if timed else None, tags=tags) as writer:
    for note in writer.notes:
      notes.append(note)
      logging.warning("%s", note)
    colorizer = api.load(model, dtype) if isinstance(model, (str, os.PathLike)) else model
    check_network_size(colorizer, network_size)
    bars = {}
    new_bar = lambda desc: tqdm.tqdm(total=source.num_frames, unit="frame", desc=desc,
                                     disable=not progress, dynamic_ncols=True, file=sys.stderr)

    def on_planned(n, done):  # the first pass of a hinted run (cuts, anchors, carried hints)
      if "planning" not in bars:
        bars["planning"] = new_bar("carrying hints")
      bars["planning"].update(n - bars["planning"].n)
      if done:
        bars["planning"].close()
        bars["colorizing"] = new_bar("colorizing")

    if not hints:
      bars["colorizing"] = new_bar("colorizing")
    try:
      # Frames as stored (uint8 for most videos): a window of 1080p frames held 470 MB as float32.
      for frame in colorize_frames(source.as_stored(), colorizer, interval, network_size, cuts,
                                   gray_mode, hints, on_planned, bit_depth):
        bar = bars["colorizing"]
        # Frame k is written after the source has yielded it (and recorded its time).
        writer.write(frame, time=source.frame_times[count] if timed else None)
        count += 1
        if count == 1:  # the first frame waited for the compilation: the rate starts after it
          bar.reset(total=source.num_frames)
        bar.update()
        if release_memory and count % (interval + 1) == 0:
          # Frame-sized buffers are allocated and freed every window, and glibc keeps the freed
          # memory in fragmented arenas: a 1000-frame run ended 22 % above a 50-frame run's
          # resident size (benchmarks/colorize_bench.py); trimming once per window keeps it flat.
          allocator.release_freed_memory()
    finally:
      for b in bars.values():
        b.close()
  if source.short_read:
    notes.append(f"{source.short_read}; colorized those")
  return Result(output=writer.path, frames=count, cuts=cuts or [],
                seconds=time.perf_counter() - start, warnings=tuple(notes), bit_depth=bit_depth)
