"""Frame streams in windows: checking, grouping and colorizing frames one window at a time.

`iter_windows` groups a stream of frames into the windows of `windows.plan_windows` (`interval + 2`
frames, neighbours sharing their boundary frame, a new window at each scene cut or forced anchor)
while holding at most T + 3 frames; `checked_frames` refuses, naming it, a frame of another shape
or type than frame 0. `iter_colorize` runs a `windows.ColorizeWindowFn` on each window and yields
the frames in order, the same frames as the in-memory protocol, and `AnchorCarry` wraps a colorizer
so that a window starting on the previous window's last frame reuses that anchor's state instead of
computing it again. Scene cuts, user hints, files and progress bars are in tcvc_jax/streaming.py.
"""

from typing import Callable
from typing import Iterable
from typing import Iterator

import numpy as np

from tcvc_jax.evaluation import windows


def checked_frames(frames):
  """Yields the frames (as numpy arrays), each checked as `windows.check_frame` does, and of frame
  0's shape and dtype (any float dtypes may mix); an error names the frame."""
  first = None
  for i, frame in enumerate(frames):
    frame = np.asarray(frame)
    if frame.dtype.name == "bfloat16":  # (not a NumPy float type) exactly float32's values
      frame = frame.astype(np.float32)
    windows.check_frame(frame, i)
    if first is None:
      first = (frame.shape, frame.dtype)
    elif frame.shape != first[0]:
      raise ValueError(f"frame {i} has shape {frame.shape}, frame 0 {first[0]}: all frames must "
                       "have one size and channel count")
    elif frame.dtype != first[1] and not (np.issubdtype(frame.dtype, np.floating)
                                          and np.issubdtype(first[1], np.floating)):
      raise ValueError(f"frame {i} is {frame.dtype}, frame 0 {first[1]}: all frames must have one "
                       "type (uint8, uint16 or float)")
    yield frame


def iter_windows(frames: Iterable[np.ndarray], interval_length=windows.DEFAULT_INTERVAL,
                 is_cut: Callable[[int, np.ndarray], bool] | None = None, anchors=()
                 ) -> Iterator[tuple[int, list[np.ndarray]]]:
  """Groups a frame stream into the windows of `windows.plan_windows`, holding at most T + 3 frames.

  Args:
    frames: iterable of frames (any array type).
    interval_length: T.
    is_cut: optional `is_cut(index, frame) -> bool`, called once per frame in order; True means a
      new shot starts at that frame.
    anchors: frame indices that must be window boundaries (see `windows.plan_windows`).

  Yields:
    (start index, list of the window's frames). A 1-frame stream (a photo) and a 1-frame shot
    give a 1-frame window (`windows.iter_rgb255` runs it as that frame twice).

  Raises:
    windows.ClipTooShortError: the stream has no frames.
  """
  windows._check_interval(interval_length)
  full = interval_length + 2
  buf, start, fresh, count = [], 0, True, 0  # fresh: buf[0] not yet part of any window
  for i, frame in enumerate(frames):
    count += 1
    cut = bool(is_cut(i, frame)) if is_cut is not None else False
    if cut and i > 0:
      if len(buf) >= 2 or fresh:
        yield start, buf
      buf, start, fresh = [], i, True
    elif len(buf) == full:
      yield start, buf
      buf, start, fresh = buf[-1:], start + full - 1, False
    buf.append(frame)
    if i in anchors and len(buf) >= 2:  # a forced anchor ends the window here
      yield start, buf
      buf, start, fresh = buf[-1:], i, False
  if not count:
    raise windows.ClipTooShortError("no frames to colorize")
  if len(buf) >= 2 or fresh:
    yield start, buf


def iter_colorize(frames: Iterable[np.ndarray], colorize_window: windows.ColorizeWindowFn,
                  interval_length=windows.DEFAULT_INTERVAL,
                  network_size=windows.DEFAULT_NETWORK_SIZE, gray_mode="srgb", is_cut=None,
                  anchors=(), window_hints=None, out_dtype=np.uint8) -> Iterator[np.ndarray]:
  """One-sampling colorization of a frame stream, window by window; yields `out_dtype` (uint8 or
  uint16, `windows.to_uint_round`) [H, W, 3] in order.

  Gives the same frames as `colorize_clip(..., (interval_length,), cuts=...)` while holding one
  window of frames. `frames`, `is_cut` and `anchors` are as in `iter_windows` /
  `windows.frames_to_l` (one frame [H, W, C]); `colorize_window` may keep state between calls (e.g.
  to carry the last anchor). `window_hints(start, n)`: optional colour hints of a window (see
  `windows.iter_rgb255`). A frame `checked_frames` refuses raises a ValueError (TypeError for
  its dtype) that names it.
  """
  windows.to_uint_round(np.zeros((1, 1, 3), np.float32), out_dtype)  # a bad dtype: before reading
  # (index, output frame): a window's last frame, dropped if the next window starts on it.
  pending = None
  if hasattr(frames, "num_frames"):  # a FrameSource (None where the container does not say)
    num_frames = frames.num_frames
  else:
    num_frames = len(frames) if hasattr(frames, "__len__") else None
  windows.announce_interval(colorize_window, interval_length, num_frames)
  try:
    for start, win in iter_windows(checked_frames(frames), interval_length, is_cut, anchors):
      l_full = windows.frames_to_l(np.stack(win), gray_mode)
      hints = None if window_hints is None else window_hints(start, len(win))
      out = [windows.to_uint_round(rgb, out_dtype)  # frame by frame: no float copy of the window
             for rgb in windows.iter_rgb255(l_full, colorize_window, network_size, hints)]
      if pending is not None and pending[0] != start:
        yield pending[1]
      yield from out[:-1]
      pending = (start + len(out) - 1, out[-1])
    if pending is not None:
      yield pending[1]
  finally:  # the model's own window padding back as it was (a stream's is for its pass only)
    getattr(colorize_window, "end_pass", lambda: None)()


class AnchorCarry:
  """A `windows.ColorizeWindowFn` over a model that can carry the last anchor into the next window.

  Wraps an object with `colorize_window(gray, first_anchor=None, return_last_anchor=False)` (an
  `api.Colorizer`). The state of an anchor is a function of that frame's gray input alone, so when a
  window starts on exactly the gray frame the previous call ended on (the boundary frame windows
  share), the stored state is passed as `first_anchor` and the colorizer skips that frame; results
  are identical. After a scene cut, in a new pass or a new clip the frames differ and the window
  starts afresh, so one wrapper may serve any sequence of calls.

  Attributes:
    calls: model calls made.
    reused: calls that reused the previous anchor.
  """

  def __init__(self, model):
    self._model = model
    self._last_gray = None  # float32 [h, w, 1]: the previous window's last (anchor) frame
    self._state = None
    self.calls = 0
    self.reused = 0

  def set_interval(self, interval_length, num_frames=None):
    """Windows of the coming pass hold at most T + 2 frames, and no more than the clip's
    `num_frames` (if known): one compiled program for them all, no larger than the clip.

    A longer window than that (a clip longer than its container said) still runs, unpadded.
    """
    pad = getattr(self._model, "pad_windows", None)
    if pad is not None:
      if not hasattr(self, "_padding_before"):
        self._padding_before = getattr(self._model, "window_frames", None)
      full = interval_length + 2
      pad(min(full, max(int(num_frames), 2)) if num_frames else full)

  def end_pass(self):
    """Gives the model back the window padding it had before `set_interval`."""
    if hasattr(self, "_padding_before"):
      self._model.pad_windows(self._padding_before)
      del self._padding_before

  def __call__(self, gray, **hints):
    gray = np.asarray(gray)
    first = None
    if self._last_gray is not None and np.array_equal(gray[0], self._last_gray):
      first = self._state
      self.reused += 1
    ab, self._state = self._model.colorize_window(gray, first_anchor=first,
                                                  return_last_anchor=True, **hints)
    self._last_gray = np.array(gray[-1])
    self.calls += 1
    return ab
