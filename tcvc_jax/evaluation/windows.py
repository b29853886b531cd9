"""The original TCVC test protocol: windows, resizes, Lab recombination, uint8 and the ensemble.

Faithful to `test_TCVC_onesampling.py` / `test_TCVC_multisampling.py`
(docs/original.md#evaluation-protocol):

* Windows of interval length T: keyframes range(0, n, T + 1); a keyframe equal to n - 1 is dropped
  (no 1-frame window); window k holds frames [k, k + T + 2) cut at the clip end, so neighbouring
  windows share their boundary frame and the last window may be shorter (2 .. T + 2 frames). The
  first and last frame of every window are its anchors. Where a boundary frame is produced twice,
  the later window's value is kept (the original writes that file twice).
* Full-resolution normalised L from `ops.color.rgb_to_lab` (float32); L is resized to the network
  size with bilinear, no antialias (PyTorch `F.interpolate(mode="bilinear")`); the model's ab is
  resized back the same way, joined with the full-resolution L, and converted with `lab_to_rgb`.
* One-sampling: uint8 = round(clip(rgb * 255, 0, 255)) (round half to even, float32).
  Multi-sampling ensemble: one pass per interval length (default 17 and 19); the float32
  rgb * 255 of each pass, unclipped and unrounded, is averaged in float64, clipped to [0, 255]
  and TRUNCATED to uint8.

The model is a callable `colorize_window(gray) -> ab`: gray float32 [N, h, w, 1] normalised L at the
network size, ab float32 [N, h, w, 2] normalised (a* / 110, b* / 110); frames 0 and N - 1 are the
anchors.

Without ground truth (the original's *_noGT.py), the same functions take gray or colour frames of
any size and bit depth; only CDC (and a warping error) can then be measured.

Policies beyond the original (which has no such cases):

* A clip of 1 frame raises `ClipTooShortError` here, in the protocol (the original silently writes
  nothing). 2 and 3 frame clips work: one window holding the whole clip. (The colorize tool's
  streaming windows, `window_stream`, take a 1-frame clip, a photo, as a 1-frame shot.)
* With scene cuts, each shot is windowed on its own so colour never crosses a cut; a 1-frame shot is
  fed to the model as the frame repeated twice, and the first output is kept.
* Float frames must be finite and in [0, 1] (up to FLOAT_RANGE_TOLERANCE): 0..255 floats or NaN
  raise a ValueError naming the frame instead of coming out white or black.
* Gray input (one channel, the no-ground-truth path): `gray_mode="srgb"` (default) treats the value
  as an sRGB gray level, so L is its true lightness; `gray_mode="original"` reproduces the original
  no-GT script, which uses gray / max - 0.5 as normalised L.
"""

import dataclasses
import functools
from typing import Callable
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax.ops import color

ColorizeWindowFn = Callable[[jax.Array], jax.Array]

DEFAULT_INTERVAL = 17
DEFAULT_ENSEMBLE_INTERVALS = (17, 19)
DEFAULT_NETWORK_SIZE = 256
# The largest side the model runs at: a full-size window at 8192x8192 needs terabytes; far larger
# sizes overflowed XLA's shape arithmetic (an abort, not an error).
MAX_NETWORK_SIZE = 8192
GRAY_MODES = ("srgb", "original")


class ClipTooShortError(ValueError):
  """A clip (or video) has fewer frames than the protocol needs."""


@dataclasses.dataclass(frozen=True)
class Window:
  """Frames [start, stop) colorized by one model call; anchors at start and stop - 1."""

  start: int
  stop: int

  def __len__(self):
    return self.stop - self.start


# --------------------------------------------------------------------------------------------------
# Windowing arithmetic
# --------------------------------------------------------------------------------------------------


def _check_interval(interval_length):
  if isinstance(interval_length, bool) or not isinstance(interval_length, (int, np.integer)):
    raise TypeError(f"interval_length must be an int, got {interval_length!r}")
  if interval_length < 0:
    raise ValueError(f"interval_length must be >= 0, got {interval_length}")


def keyframe_indices(num_frames, interval_length=DEFAULT_INTERVAL):
  """Window start frames of the original: range(0, n, T + 1) without a final keyframe at n - 1."""
  _check_interval(interval_length)
  keys = list(range(0, num_frames, interval_length + 1))
  if keys and keys[-1] == num_frames - 1:
    keys = keys[:-1]
  return keys


def plan_windows(num_frames, interval_length=DEFAULT_INTERVAL, cuts=(), anchors=()):
  """Windows covering a clip of `num_frames` frames.

  Args:
    num_frames: clip length n.
    interval_length: T; windows hold up to T + 2 frames.
    cuts: frame indices where a new shot starts (0 < c < n); each shot is windowed on its own.
      Without cuts (and anchors) this is exactly the original's windowing.
    anchors: frames that must be window boundaries (e.g. frames with user hints): a window ends
      there and the next starts there, sharing it; windowing restarts from each.

  Returns:
    list of Window, in order. A 1-frame shot (only possible with cuts) gives a 1-frame Window.

  Raises:
    ClipTooShortError: n < 2.
  """
  _check_interval(interval_length)
  if num_frames < 2:
    raise ClipTooShortError(
        f"a clip needs at least 2 frames (two anchors) for the TCVC protocol, got {num_frames}")
  bounds = [0] + sorted({int(c) for c in cuts if 0 < int(c) < num_frames}) + [num_frames]
  windows = []
  forced = sorted({int(a) for a in anchors if 0 < int(a) < num_frames - 1})
  for s0, s1 in zip(bounds[:-1], bounds[1:], strict=True):
    if s1 - s0 == 1:
      windows.append(Window(s0, s1))
      continue
    # Segments between forced anchors, each windowed from its start; a segment's last frame is
    # the next one's first.
    ends = [a for a in forced if s0 < a < s1 - 1] + [s1 - 1]
    start = s0
    for end in ends:
      for k in keyframe_indices(end + 1 - start, interval_length):
        windows.append(Window(start + k, min(start + k + interval_length + 2, end + 1)))
      start = end
  return windows


# --------------------------------------------------------------------------------------------------
# Per-window arithmetic
# --------------------------------------------------------------------------------------------------


# Float frames may stray this far outside [0, 1] (rounding in a colour conversion or a resize).
FLOAT_RANGE_TOLERANCE = 1e-3


def _check_values(frames, first_frame=0):
  """Raises unless frames [n, ...] are uint8, uint16, or float, finite and in [0, 1] (up to
  FLOAT_RANGE_TOLERANCE); a ValueError names the first bad frame (frames[0] is `first_frame`)."""
  if frames.dtype in (np.uint8, np.uint16):
    return
  if not np.issubdtype(frames.dtype, np.floating):
    raise TypeError(f"frames must be uint8, uint16 or float in [0, 1], got {frames.dtype}")
  if not frames.size:
    return
  axes = tuple(range(1, frames.ndim))
  lo, hi = frames.min(axis=axes), frames.max(axis=axes)  # NaN where a frame has one
  bad = np.flatnonzero(~((lo >= -FLOAT_RANGE_TOLERANCE) & (hi <= 1 + FLOAT_RANGE_TOLERANCE)))
  if bad.size:
    k = bad[0]
    if np.isnan(lo[k]) or np.isnan(hi[k]):
      raise ValueError(f"frame {first_frame + k} has NaN values")
    raise ValueError(f"frame {first_frame + k} has values from {lo[k]:g} to {hi[k]:g}: float "
                     "frames must be in [0, 1] (8-bit values as uint8, or divided by 255)")


def check_frame(frame, index):
  """Raises ValueError (TypeError for a dtype) naming frame `index` unless `frames_to_l` takes
  `frame` [H, W, 1 | 3 | 4] (uint8, uint16 or float in [0, 1])."""
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4) or not frame.size:
    raise ValueError(f"frame {index} has shape {frame.shape}, expected [H, W, 1|3|4]"
                     + (" (a gray frame [H, W]: add the channel, frame[..., None])"
                        if frame.ndim == 2 else ""))
  if frame.dtype not in (np.uint8, np.uint16) and not np.issubdtype(frame.dtype, np.floating):
    raise TypeError(f"frame {index} is {frame.dtype}: frames must be uint8, uint16 or float in "
                    "[0, 1]")
  _check_values(frame[None], index)


def _as_float01(frames):
  """uint8 / uint16 / float frames -> float32 in [0, 1] (integers divided by their type's max).

  Float frames must be finite and in [0, 1] (`_check_values`, done by the caller).
  """
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames.astype(np.float32) / np.float32(255)
  if frames.dtype == np.uint16:
    return frames.astype(np.float32) / np.float32(65535)
  return frames.astype(np.float32)


def _checked_clip(frames, gray_mode):
  """`frames` as an array, checked as `frames_to_l` says (an error names the first bad frame)."""
  if gray_mode not in GRAY_MODES:
    raise ValueError(f"gray_mode must be one of {GRAY_MODES}, got {gray_mode!r}")
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
    raise ValueError(f"expected frames [n, H, W, 1|3|4], got shape {frames.shape}")
  _check_values(frames)
  return frames


def frames_to_l(frames, gray_mode="srgb"):
  """Full-resolution normalised L, float32 [n, H, W, 1].

  Args:
    frames: [n, H, W, C] with C = 3 (RGB), 4 (RGBA, alpha dropped) or 1 (gray); uint8, uint16 or
      float in [0, 1].
    gray_mode: for C = 1, "srgb" (gray level as sRGB) or "original" (gray - 0.5, the no-GT script).

  Raises:
    ValueError: a shape, or float frames not finite or outside [0, 1] (naming the first such
      frame); TypeError: a dtype other than uint8, uint16 or float.
  """
  frames = _checked_clip(frames, gray_mode)
  out = np.empty(frames.shape[:3] + (1,), np.float32)
  for i in range(len(frames)):  # frame by frame: a clip's float copies stay one frame big
    x = _as_float01(frames[i:i + 1])
    if x.shape[-1] == 1 and gray_mode == "original":
      out[i] = x[0] - np.float32(0.5)
      continue
    if x.shape[-1] == 1:
      x = np.repeat(x, 3, axis=-1)
    out[i] = np.asarray(_rgb_to_l(x[..., :3]))[0]
  return out


@jax.jit
def _rgb_to_l(rgb):
  return color.rgb_to_lab(rgb)[..., :1]


def size2(network_size):
  if isinstance(network_size, (int, np.integer)):
    return int(network_size), int(network_size)
  h, w = network_size
  return int(h), int(w)


@functools.partial(jax.jit, static_argnums=1)
def resize_l(l_full, size):
  """Bilinear, no-antialias resize of L [N, H, W, 1] to the network size (h, w)."""
  n = l_full.shape[0]
  return jax.image.resize(l_full, (n, size[0], size[1], 1), method="bilinear", antialias=False)


@jax.jit
def compose_rgb255(l_full, ab_small):
  """ab [N, h, w, 2] resized to L's size and joined with it -> float32 rgb * 255 [N, H, W, 3].

  Not clipped nor rounded (the ensemble averages these raw values).
  """
  n, h, w, _ = l_full.shape
  ab = jax.image.resize(ab_small.astype(jnp.float32), (n, h, w, 2), method="bilinear",
                        antialias=False)
  rgb = color.lab_to_rgb(jnp.concatenate([l_full, ab], axis=-1))
  return rgb * jnp.float32(255)


def iter_rgb255(l_full, colorize_window, network_size=DEFAULT_NETWORK_SIZE, hints=None):
  """One model call on one window: full-res L [N, H, W, 1] -> float32 rgb * 255 [H, W, 3] of each
  frame in turn.

  L is resized to the network size for the whole window at once (resized frame by frame, XLA's
  products sum in another order: 0.5 % of the values moved in their last bits) and the model runs
  on it; the work at full resolution after it (ab resized back, joined with L, converted to RGB)
  runs one frame at a time, so a window of large frames never holds more than one frame's float
  copies of it (a 1080p 19-frame window: ~1 GB less at once). Those frames' values equal the
  whole window's at once (bit for bit on the Intel Xeon measured: the up-resize sums only a few
  network pixels per output pixel, the rest is elementwise). A 1-frame window is given to the
  model as that frame twice (first output kept). `hints`: optional {"hint_ab": [N, h, w, 2],
  "hint_mask": [N, h, w, 1]} at the network size.
  """
  l_full = np.asarray(l_full, np.float32)
  n = l_full.shape[0]
  l_net = l_full if n > 1 else np.concatenate([l_full, l_full], axis=0)
  if n == 1 and hints is not None:
    hints = {k: np.concatenate([v, v]) for k, v in hints.items()}
  gray = resize_l(jnp.asarray(l_net), size2(network_size))  # [N, h, w, 1]
  ab = jnp.asarray(colorize_window(gray) if hints is None else colorize_window(gray, **hints))
  if ab.shape != gray.shape[:3] + (2,):
    raise ValueError(f"colorize_window returned shape {ab.shape}, expected {gray.shape[:3] + (2,)}")
  for i in range(n):
    yield np.asarray(compose_rgb255(l_full[i:i + 1], ab[i:i + 1]))[0]


def to_uint8_round(rgb255):
  """One-sampling uint8: round(clip(x, 0, 255)), half to even, on float32 values."""
  x = np.clip(np.asarray(rgb255, np.float32), 0, 255)
  return np.round(x).astype(np.uint8)


def to_uint16_round(rgb255):
  """One-sampling uint16 (for sources deeper than 8 bits): round(clip(x, 0, 255) * 257), half to
  even, on float32 values; x * 257 maps 0..255 onto 0..65535, so `(y + 128) // 257` is the uint8
  output up to values within 1/514 of a rounding boundary."""
  x = np.clip(np.asarray(rgb255, np.float32), 0, 255)
  return np.round(x * np.float32(257)).astype(np.uint16)


OUTPUT_DTYPES = {8: np.uint8, 16: np.uint16}
_TO_UINT = {np.uint8: to_uint8_round, np.uint16: to_uint16_round}


def to_uint_round(rgb255, dtype=np.uint8):
  """`to_uint8_round` or `to_uint16_round` by `dtype` (np.uint8 or np.uint16)."""
  try:
    return _TO_UINT[np.dtype(dtype).type](rgb255)
  except (KeyError, TypeError):
    raise ValueError(f"output dtype must be uint8 or uint16, got {dtype!r}") from None


def ensemble_to_uint8(passes):
  """Multi-sampling uint8: float64 mean of the passes' float32 rgb * 255, clip, truncate."""
  if not passes:
    raise ValueError("the ensemble needs at least one pass")
  acc = np.asarray(passes[0], np.float32).astype(np.float64)
  for p in passes[1:]:
    acc = acc + np.asarray(p, np.float32).astype(np.float64)
  avg = acc / len(passes)
  return np.clip(avg, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Whole clips (in memory, as the original)
# --------------------------------------------------------------------------------------------------


def iter_pass(frames, colorize_window, interval_length=DEFAULT_INTERVAL,
              network_size=DEFAULT_NETWORK_SIZE, cuts=(), gray_mode="srgb", lightness=None):
  """One pass over a clip, frame by frame: yields (index, float32 rgb * 255 [H, W, 3], unclipped)
  once per frame, in order: a frame two windows share is the later window's, as the original
  rewrites that file.

  Args:
    frames: [n, H, W, C] frames (see `frames_to_l`), converted to lightness a window at a time;
      or, with `lightness=True`, float32 [n, H, W, 1] normalised L (`frames_to_l`'s).
    colorize_window: the model, see the module docstring.
    interval_length: T.
    network_size: int or (h, w) the model runs at.
    cuts: shot starts, see `plan_windows` (the original protocol has none).
    gray_mode: see `frames_to_l`.
    lightness: whether `frames` is already normalised L.
  """
  announce_interval(colorize_window, interval_length)
  pending = None  # (index, frame): a window's last frame, dropped if the next window starts on it
  for win in plan_windows(len(frames), interval_length, cuts):
    if pending is not None and pending[0] != win.start:
      yield pending
    part = frames[win.start:win.stop]
    l_full = part if lightness else frames_to_l(part, gray_mode)
    for i, rgb in enumerate(iter_rgb255(l_full, colorize_window, network_size), win.start):
      if i == win.stop - 1:
        pending = (i, rgb)
      else:
        yield i, rgb
  if pending is not None:
    yield pending


def run_pass(l_full, colorize_window, interval_length=DEFAULT_INTERVAL,
             network_size=DEFAULT_NETWORK_SIZE, cuts=()):
  """One pass over a clip: float32 rgb * 255 [n, H, W, 3], unclipped.

  Args:
    l_full: float32 [n, H, W, 1] full-resolution normalised L (`frames_to_l`).
    colorize_window: the model, see the module docstring.
    interval_length: T.
    network_size: int or (h, w) the model runs at.
    cuts: shot starts, see `plan_windows` (the original protocol has none).
  """
  l_full = np.asarray(l_full, np.float32)
  out = np.empty(l_full.shape[:3] + (3,), np.float32)
  for i, rgb in iter_pass(l_full, colorize_window, interval_length, network_size, cuts,
                          lightness=True):
    out[i] = rgb
  return out


def colorize_clip(frames, colorize_window, interval_lengths=(DEFAULT_INTERVAL,),
                  network_size=DEFAULT_NETWORK_SIZE, gray_mode="srgb", cuts=()):
  """Colorizes a clip held in memory with the original protocol.

  Frames are converted and rounded as they come (a pass of 400 1080p frames held whole in float32,
  with its clipped and rounded copies, took 30 GB); the values are those of the whole clip at once.

  Args:
    frames: [n, H, W, C] (see `frames_to_l`); only their lightness is used.
    colorize_window: the model, see the module docstring.
    interval_lengths: one length -> one-sampling (rounded); several -> the ensemble (truncated),
      e.g. DEFAULT_ENSEMBLE_INTERVALS.
    network_size: int or (h, w).
    gray_mode: see `frames_to_l`.
    cuts: shot starts (not part of the original protocol).

  Returns:
    uint8 [n, H, W, 3] RGB.
  """
  if isinstance(interval_lengths, (int, np.integer)):
    interval_lengths = (interval_lengths,)
  if not len(interval_lengths):
    raise ValueError("the ensemble needs at least one pass")
  frames = _checked_clip(frames, gray_mode)  # every frame before the first window
  out = np.empty(frames.shape[:3] + (3,), np.uint8)
  if len(interval_lengths) == 1:
    for i, rgb in iter_pass(frames, colorize_window, interval_lengths[0], network_size, cuts,
                            gray_mode):
      out[i] = to_uint8_round(rgb)
    return out
  # The ensemble: the float64 sum of the passes' float32 values, pass by pass (ensemble_to_uint8).
  acc = np.empty(frames.shape[:3] + (3,), np.float64)
  for k, t in enumerate(interval_lengths):
    for i, rgb in iter_pass(frames, colorize_window, t, network_size, cuts, gray_mode):
      rgb = np.asarray(rgb, np.float32).astype(np.float64)
      acc[i] = rgb if k == 0 else acc[i] + rgb
  for i in range(len(acc)):
    out[i] = np.clip(acc[i] / len(interval_lengths), 0, 255).astype(np.uint8)
  return out


def announce_interval(colorize_window, interval_length, num_frames=None):
  """Lets a model that can (AnchorCarry over an api.Colorizer) run all windows of the pass as one
  compiled program: windows hold at most T + 2 frames, and at most `num_frames` (the clip's length,
  if known)."""
  announce = getattr(colorize_window, "set_interval", None)
  if announce is not None:
    announce(int(interval_length), num_frames)


def psnr_interval(interval_lengths: Sequence[int] | int):
  """The interval the key/inter PSNR split uses: the first one (the original uses T = 17)."""
  if isinstance(interval_lengths, (int, np.integer)):
    return int(interval_lengths)
  return int(interval_lengths[0])
