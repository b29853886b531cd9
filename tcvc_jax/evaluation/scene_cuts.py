"""Shot-boundary (hard cut) detection on gray frames, causal so it works on a stream.

Each frame is reduced to a small thumbnail (block means, about 64 px on the long side) and a 32-bin
histogram of its gray levels in [0, 1] (linear binning). The score of frame t is the mean of

* the mean absolute difference of the thumbnails of t - 1 and t (in [0, 1]), and
* the total-variation distance of their histograms (in [0, 1]),

so a cut scores high on both, while fast motion inside a shot moves only the first and a global
brightness change mostly the second. Frame t starts a new shot when its score is at least
`min_score` AND at least `ratio` times the median of the last `window` scores inside the current
shot (an adaptive threshold that follows how much the shot moves); shots are at least
`min_shot_length` frames long, so a flash does not give two cuts in a row. Scores of cut frames do
not enter the history, and the history restarts at each cut. Frame 1 of a clip (a title card or a
black frame before the film) has no shot motion to be judged against: it starts a new shot when both
parts of its score reach `min_score`, since a pan moves the picture but hardly its histogram and a
fade or a brightening sky the histogram but hardly the thumbnail (a black frame before a scene:
0.34 and 1.0; a fast pan 0.16 and 0.07; a flat frame brightening 4 levels a frame 0.02 and 0.49).

The defaults were set on synthetic clips (textures under motion and noise); they are a starting
point, not tuned on real footage.
"""

import collections

import numpy as np

_THUMB = 64
_BINS = 32


def _to_gray01(frame):
  """[H, W], [H, W, 1] or [H, W, 3] (uint8, uint16 or float in [0, 1]) -> float32 [H, W]."""
  x = np.asarray(frame)
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255
  elif x.dtype == np.uint16:
    x = x.astype(np.float32) / 65535
  elif np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  else:
    raise TypeError(f"frame must be uint8, uint16 or float, got {x.dtype}")
  if x.ndim == 3 and x.shape[-1] in (3, 4):
    # Rec. 601 luma; only the structure matters here, not exact lightness.
    x = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  elif x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 2:
    raise ValueError(f"expected a frame [H, W] or [H, W, 1|3|4], got shape {np.shape(frame)}")
  return x


def _soft_bins(levels=1024):
  """[levels, _BINS]: how gray level l / (levels - 1) is shared between the two nearest bins."""
  pos = np.arange(levels) / (levels - 1) * (_BINS - 1)  # bin centres at k / (_BINS - 1)
  low = np.minimum(pos.astype(np.int64), _BINS - 2)
  weights = np.zeros((levels, _BINS))
  weights[np.arange(levels), low] = 1 - (pos - low)
  weights[np.arange(levels), low + 1] = pos - low
  return weights


_SOFT_BINS = _soft_bins()


def _histogram(x):
  """Gray-level histogram with linear binning: a pixel's weight is shared between the two bins
  whose centres are nearest, so a slow brightness ramp moves mass smoothly (with hard bins, a flat
  frame's whole mass jumped to the next bin every 8 levels, and each jump scored as a cut). The
  levels are counted first at 1024 steps (as fast as hard bins)."""
  top = len(_SOFT_BINS) - 1
  levels = np.clip((x.ravel() * top + 0.5).astype(np.int64), 0, top)
  return np.bincount(levels, minlength=top + 1) @ _SOFT_BINS / x.size


def _features(frame):
  x = _to_gray01(frame)
  h, w = x.shape
  step = max(1, max(h, w) // _THUMB)
  sh, sw = min(step, h), min(step, w)  # blocks of a very wide or tall frame span its short side
  hh, ww = h // sh, w // sw
  thumb = x[:hh * sh, :ww * sw].reshape(hh, sh, ww, sw).mean(axis=(1, 3))
  return thumb, _histogram(x)


class CutDetector:
  """Online cut detector: call `update(frame)` once per frame, in order."""

  def __init__(self, ratio=3.0, min_score=0.08, window=8, min_shot_length=2):
    """Creates a detector.

    Args:
      ratio: a cut's score must exceed `ratio` times the median of the recent scores.
      min_score: absolute floor on a cut's score (scores are in [0, 1]).
      window: how many recent in-shot scores the median runs over.
      min_shot_length: no cut within this many frames of the previous one (>= 1; the clip's start
        is not a cut).
    """
    if ratio <= 0 or not 0 <= min_score <= 1 or window < 1 or min_shot_length < 1:
      raise ValueError("need ratio > 0, 0 <= min_score <= 1, window >= 1, min_shot_length >= 1")
    self.ratio = ratio
    self.min_score = min_score
    self.min_shot_length = min_shot_length
    self._history = collections.deque(maxlen=window)
    self._prev = None
    self._since_cut = 0
    self.scores = []  # score of every frame seen (0 for the first), for plots and tuning

  def _parts(self, frame):
    """(thumbnail difference, histogram distance, features) of `frame` against the previous frame
    given to `update` ((0, 0) for the first frame, (1, 1) for a change of frame size)."""
    thumb, hist = _features(frame)
    if self._prev is None:
      return 0.0, 0.0, (thumb, hist)
    pthumb, phist = self._prev
    if pthumb.shape != thumb.shape:
      return 1.0, 1.0, (thumb, hist)  # a change of frame size is a cut
    mad = float(np.mean(np.abs(thumb - pthumb)))
    tv = 0.5 * float(np.sum(np.abs(hist - phist)))
    return mad, tv, (thumb, hist)

  def score(self, frame):
    """Score of `frame` against the previous frame given to `update` (0 for the first frame)."""
    mad, tv, feats = self._parts(frame)
    return 0.5 * (mad + tv), feats

  def update(self, frame):
    """Feeds the next frame; returns True if a new shot starts at this frame."""
    mad, tv, feats = self._parts(frame)
    s = 0.5 * (mad + tv)
    position = len(self.scores)  # of this frame in the clip
    self._prev = feats
    self.scores.append(s)
    if position == 0:
      self._since_cut = 1
      return False
    if position == 1:  # no shot motion yet: both parts must reach the floor
      cut = s > 0 and min(mad, tv) >= self.min_score
    else:
      baseline = float(np.median(self._history)) if self._history else 0.0
      cut = (self._since_cut >= self.min_shot_length and s > 0 and s >= self.min_score
             and s >= self.ratio * baseline)
    if cut:
      self._history.clear()
      self._since_cut = 1
    else:
      self._history.append(s)
      self._since_cut += 1
    return cut

  def __call__(self, index, frame):
    """`is_cut(index, frame)` adapter for `window_stream.iter_windows` (index is unused)."""
    del index
    return self.update(frame)


def detect_cuts(frames, **kwargs):
  """Indices where a new shot starts (never 0), for an iterable of frames.

  Args:
    frames: iterable of frames (see `CutDetector.update`).
    **kwargs: CutDetector arguments.

  Returns:
    list of int.
  """
  det = CutDetector(**kwargs)
  return [i for i, f in enumerate(frames) if det.update(f)]


def shots(num_frames, cuts):
  """[(start, stop)] of the shots of a clip of `num_frames` frames with the given cut indices."""
  bounds = [0] + sorted({c for c in cuts if 0 < c < num_frames}) + [num_frames]
  return list(zip(bounds[:-1], bounds[1:], strict=True))
