"""Guided colorization: a user's colour hints on some frames, carried through the whole shot.

SIGGRAPH17, TCVC's anchor colorizer, takes colour hints beside L (ab and a 0/1 mask). A user gives
them on particular frames, as clicks (`click_hint`) or a colour reference image of the frame
(`reference_hint`, e.g. one coloured by hand). Those frames become anchors (window boundaries, like
scene cuts), and the hints are carried from anchor to anchor of the same shot, forward and backward,
so a reference on frame 0 still governs frame 300. Nothing is carried across a cut.

The carrying rule (`carry`): the hint field of anchor A is pulled onto the next anchor B of the shot
(the two ends of one window) along the model's own optical flow (FlowNet2, or the classical flow),
*composed frame by frame* through the window (`window_flows`, `compose_flows`): the flows between
consecutive frames are small and reliable where one flow across the whole window is not (synthetic
validation clips, the demo's classical flow, frame 0 -> 5, the rule below: one flow kept 64 % of the
moving objects' pixels, 4.3 % of the kept ones off by > 0.1 in ab; the composed flows 93 %, 2.7 %).
A pixel is kept only where the warp is reliable:
  * it comes from inside frame A, from hinted pixels (its four bilinear neighbours all hinted);
  * photometric consistency: |L_B - warp(L_A)| <= 2.5 L* + 1.0 x the local lightness gradient
    (L* per pixel, the larger of the two frames'), so that a sub-pixel misalignment of a fine
    texture is not taken for an occlusion (TCVC's own occlusion weight exp(-50 dL^2) > 0.97 is the
    2.5 L* part alone; it rejected ~40 % of correctly warped pixels on textured objects);
  * forward-backward consistency of the composed flows: |F_BA + warp(F_AB, F_BA)| <= 2 px + 10 %
    of the flows' magnitude (the standard test for occlusions and flow failures).
The rule was chosen on the synthetic *validation* clips (synthetic_clips/painted, demo model,
interval 4) and measured on the test clips (README, "Guided colorization"): on validation the
far-frame PSNR was 26.46 dB with one flow per window and the old rule (photometric 2.5 L*, FB
0.25 px + 5 %), 27.42 composed with the old rule, 28.94 composed with the gradient term and
FB 1 px + 10 %, 29.11 with FB 2 px + 10 %, and flat beyond (no FB check at all: 29.08).
Guided runs pay for it in the first pass: the flows between consecutive frames of every window up
to the end of the last hinted shot, twice (both directions); the composed flows of hinted shots
are kept (2 flows per window at the network size).
An anchor's own user hints win where they are set; elsewhere it takes the carried hints of the
nearest hinted anchor in time (forward or backward), ties going to the earlier one.
"""

import dataclasses
import json
import os

import numpy as np

from tcvc_jax.ops import color

PHOTOMETRIC_DL, PHOTOMETRIC_GRAD = 2.5, 1.0  # L* units; x the local L* gradient per pixel
FB_ABS, FB_REL = 2.0, 0.1
DEFAULT_PATCH = 3
FLOW_CHUNK = 8  # frame pairs per flow call in `window_flows` (one compiled shape)


class GuidanceError(ValueError):
  """Bad hints or references; the message is one line and names the problem."""


@dataclasses.dataclass(frozen=True)
class FrameHint:
  """Colour hints of one frame: normalised ab [h, w, 2] (0 where mask is 0), mask [h, w, 1] 0/1."""
  ab: np.ndarray
  mask: np.ndarray

  @property
  def coverage(self) -> float:
    return float(self.mask.mean())


def reference_hint(image) -> FrameHint:
  """A dense hint from a colour image of the frame (uint8 RGB [h, w, 3]): its ab everywhere."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise GuidanceError(f"a reference must be an 8-bit RGB image, got {image.shape} {image.dtype}")
  _, ab = color.rgb_to_gray_ab(image, np)
  return FrameHint(ab.astype(np.float32), np.ones(image.shape[:2] + (1,), np.float32))


def click_hint(clicks, height, width) -> FrameHint:
  """Hints from clicks {"x", "y" (relative, 0..1), "rgb" [r, g, b] 0..255, "patch" (odd px)}.

  Each click colours a patch x patch square (clipped at the border) with the click's ab, at the
  resolution (height, width) the model runs at.

  Raises:
    GuidanceError: `clicks` is no list of clicks, or a click is bad (as `read_clicks` checks them;
      "frame" is optional here), naming the click.
  """
  if isinstance(clicks, (dict, str, bytes)) or not hasattr(clicks, "__iter__"):
    raise GuidanceError(f"clicks must be a list of clicks {{x, y, rgb[, patch]}}, got "
                        f"{type(clicks).__name__}")
  clicks = list(clicks)
  for i, c in enumerate(clicks):
    _check_click(c, f"click {i}", need_frame=False)
  for name, size in (("height", height), ("width", width)):
    if not _is_int(size) or size < 1:
      raise GuidanceError(f"click_hint: {name} must be a positive integer, got {size!r}")
  ab = np.zeros((height, width, 2), np.float32)
  mask = np.zeros((height, width, 1), np.float32)
  for c in clicks:
    _, cab = color.rgb_to_gray_ab(np.asarray(c["rgb"], np.uint8).reshape(1, 1, 3), np)
    p = int(c.get("patch", DEFAULT_PATCH))
    cy, cx = int(round(c["y"] * (height - 1))), int(round(c["x"] * (width - 1)))
    y0, x0 = max(cy - p // 2, 0), max(cx - p // 2, 0)
    ab[y0:cy + p // 2 + 1, x0:cx + p // 2 + 1] = cab[0, 0]
    mask[y0:cy + p // 2 + 1, x0:cx + p // 2 + 1] = 1.0
  return FrameHint(ab, mask)


def _is_int(v):
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _one_line(v):
  return " ".join(repr(v).split())


def _check_click(c, where, need_frame=True):
  """Raises GuidanceError naming the click (`where`) unless it is a valid click."""
  keys = ("frame", "x", "y", "rgb") if need_frame else ("x", "y", "rgb")
  if not isinstance(c, dict):
    raise GuidanceError(f"{where}: a click must be an object with {', '.join(keys)}, got "
                        f"{type(c).__name__}")
  missing = [k for k in keys if k not in c]
  if missing:
    raise GuidanceError(f"{where}: missing {', '.join(missing)}")
  if "frame" in c and (not _is_int(c["frame"]) or c["frame"] < 0):
    raise GuidanceError(f"{where}: frame must be a non-negative integer, got {c['frame']!r}")
  for k in ("x", "y"):
    v = c[k]
    if (not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_))
        or not 0 <= v <= 1):
      raise GuidanceError(f"{where}: {k} must be a relative coordinate in [0, 1], got {v!r}")
  rgb = c["rgb"]
  if (not isinstance(rgb, (list, tuple, np.ndarray)) or len(rgb) != 3
      or not all(_is_int(v) and 0 <= v <= 255 for v in rgb)):
    raise GuidanceError(f"{where}: rgb must be [r, g, b] integers 0..255, got {_one_line(rgb)}")
  patch = c.get("patch", DEFAULT_PATCH)
  if not _is_int(patch) or patch < 1 or patch % 2 == 0:
    raise GuidanceError(f"{where}: patch must be an odd positive integer, got {patch!r}")


def check_hint(hint, where="hint"):
  """Raises GuidanceError naming the hint (`where`) unless it is a FrameHint of any size h x w:
  ab float [h, w, 2], finite; mask float or bool [h, w, 1] within [0, 1]."""
  if not isinstance(hint, FrameHint):
    raise GuidanceError(f"{where}: expected a guidance.FrameHint (reference_hint, click_hint), "
                        f"got {type(hint).__name__}")
  ab, mask = np.asarray(hint.ab), np.asarray(hint.mask)
  if ab.ndim != 3 or ab.shape[-1] != 2 or not ab.size:
    raise GuidanceError(f"{where}: ab must have shape [h, w, 2], got {ab.shape}")
  if mask.shape != ab.shape[:2] + (1,):
    raise GuidanceError(f"{where}: mask must have shape [h, w, 1] = {ab.shape[:2] + (1,)} (h, w "
                        f"of ab), got {mask.shape}")
  if not np.issubdtype(ab.dtype, np.floating):
    raise GuidanceError(f"{where}: ab must be float (a* / 110, b* / 110), got {ab.dtype}")
  if not np.isfinite(ab).all():
    raise GuidanceError(f"{where}: ab has NaN or inf values")
  if not (np.issubdtype(mask.dtype, np.floating) or mask.dtype == np.bool_):
    raise GuidanceError(f"{where}: mask must be float or bool (1 where a hint is given, else 0), "
                        f"got {mask.dtype}")
  if mask.dtype != np.bool_:
    if not np.isfinite(mask).all():
      raise GuidanceError(f"{where}: mask has NaN or inf values")
    if mask.min() < 0 or mask.max() > 1:
      raise GuidanceError(f"{where}: mask must be within [0, 1] (1 where a hint is given, else "
                          f"0), got values from {mask.min():g} to {mask.max():g}")


def check_hints(hints):
  """Checks {frame index: FrameHint} (`check_hint`); returns it with int frame indices.

  Raises:
    GuidanceError: `hints` is no mapping, a frame index is no integer >= 0 or a hint is bad.
  """
  if not hasattr(hints, "items"):
    raise GuidanceError(f"hints must be a dict {{frame index: FrameHint}}, got "
                        f"{type(hints).__name__}")
  out = {}
  for frame, hint in hints.items():
    if not _is_int(frame):
      raise GuidanceError(f"hints: frame indices must be integers, got {frame!r}")
    if frame < 0:
      raise GuidanceError(f"hints on frame {frame}: frames are numbered from 0")
    check_hint(hint, f"hints on frame {frame}")
    out[int(frame)] = hint
  return out


def read_clicks(path):
  """{frame: [click, ...]} from a JSON file: a list of clicks, or {"clicks": [...], "patch": p}."""
  try:
    with open(path) as f:
      data = json.load(f)
  except OSError as e:
    raise GuidanceError(f"{path}: cannot read ({e.strerror or e})") from e
  except ValueError as e:
    raise GuidanceError(f"{path}: not valid JSON ({e})") from e
  patch = DEFAULT_PATCH
  if isinstance(data, dict):
    patch = data.get("patch", patch)
    data = data.get("clicks")
  if not isinstance(data, list) or not data:
    raise GuidanceError(f"{path}: expected a non-empty list of clicks")
  out = {}
  for i, c in enumerate(data):
    c = dict({"patch": patch}, **c) if isinstance(c, dict) else c
    _check_click(c, f"{os.path.basename(path)}: click {i}")
    out.setdefault(c["frame"], []).append(c)
  return out


def parse_reference(text):
  """'FRAME:IMAGE' -> (frame, path)."""
  frame, sep, path = str(text).partition(":")
  if not sep or not frame.strip().isdigit() or not path:
    raise GuidanceError(f"bad --reference {text!r}: use FRAME:IMAGE, e.g. 0:frame0_colour.png")
  return int(frame), path


def _resize(x, height, width):
  import jax  # pylint: disable=g-import-not-at-top
  if x.shape[:2] == (height, width):
    return np.asarray(x, np.float32)
  return np.asarray(jax.image.resize(np.asarray(x, np.float32), (height, width, x.shape[-1]),
                                     "bilinear", antialias=True))


def resize_hint(hint: FrameHint, height, width) -> FrameHint:
  """The hint at (height, width): ab averaged over hinted pixels, mask where >= half hinted."""
  if hint.ab.shape[:2] == (height, width):
    return hint
  weight = _resize(hint.mask, height, width)
  summed = _resize(hint.ab * hint.mask, height, width)
  mask = (weight >= 0.5).astype(np.float32)
  ab = np.where(mask > 0, summed / np.maximum(weight, 1e-6), 0).astype(np.float32)
  return FrameHint(ab, mask)


def merge(user: FrameHint | None, carried: FrameHint | None) -> FrameHint | None:
  """The user's hints where given, carried ones elsewhere."""
  if user is None or carried is None:
    return user if carried is None else carried
  mask = np.maximum(user.mask, carried.mask)
  ab = np.where(user.mask > 0, user.ab, carried.ab)
  return FrameHint(ab.astype(np.float32), mask)


def _warp(x, flow):
  from tcvc_jax.ops.warp import backward_warp  # pylint: disable=g-import-not-at-top
  return np.asarray(backward_warp(np.asarray(x, np.float32)[None],
                                  np.asarray(flow, np.float32)[None]))[0]


def compose_flows(flows):
  """The flow across consecutive flows: [f_01, f_12, ...] ([h, w, 2] each) -> F_0n [h, w, 2].

  f_t,t+1 maps frame t to frame t+1 (frame_t(p) ~ frame_t+1(p + f(p))); so does the result, from
  frame 0 to the last: F_0,t+1(p) = F_0t(p) + f_t,t+1(p + F_0t(p)), bilinear and border-clamped as
  TCVC warps.
  """
  total = np.asarray(flows[0], np.float32)
  for f in flows[1:]:
    total = total + _warp(f, total)
  return total


def window_flows(l_frames, flow_fn, chunk=FLOW_CHUNK):
  """Composed flows between the two ends of a window, through every frame of it.

  Args:
    l_frames: normalised L [n, h, w, 1] of the window's frames, n >= 2.
    flow_fn: `(a [B, h, w, 1], b) -> [B, h, w, 2]`, the flow from a to b in pixels (a(p) ~
      b(p + F(p))), e.g. `api.Colorizer.flow`; called on `chunk` pairs at a time (the last chunk
      padded), so one shape is compiled.

  Returns:
    (F_last->first, F_first->last), each [h, w, 2].
  """
  l_frames = np.asarray(l_frames, np.float32)
  n = len(l_frames)
  a = np.concatenate([l_frames[1:], l_frames[:-1]])  # (t+1 -> t) for t < n-1, then (t -> t+1)
  b = np.concatenate([l_frames[:-1], l_frames[1:]])
  out = []
  for k in range(0, len(a), chunk):
    pad = max(k + chunk - len(a), 0)
    fa, fb = a[k:k + chunk], b[k:k + chunk]
    if pad:
      fa = np.concatenate([fa, np.repeat(fa[-1:], pad, 0)])
      fb = np.concatenate([fb, np.repeat(fb[-1:], pad, 0)])
    out.append(np.asarray(flow_fn(fa, fb), np.float32)[:chunk - pad])
  flows = np.concatenate(out)
  backward = [flows[t] for t in range(n - 2, -1, -1)]  # f_{n-1,n-2}, ..., f_{1,0}
  forward = [flows[n - 1 + t] for t in range(n - 1)]  # f_{0,1}, ..., f_{n-2,n-1}
  return compose_flows(backward), compose_flows(forward)


class ShotFlows:
  """The composed flows (`window_flows`) of the windows of hinted shots, gathered in one pass.

  Windows arrive in order (`start_shot` before the first window of each shot). A window's flows are
  computed when its shot already has a hint or a hinted frame lies at or after its start (it may
  still join a hinted shot), and dropped when its shot ends without a hint. Call with `(a, b)`,
  the ends of a kept window, for `anchor_hints`.
  """

  def __init__(self, hinted_frames, flow_fn):
    self._hinted_frames = sorted(hinted_frames)
    self._flow_fn = flow_fn
    self._flows, self._shot_windows, self._shot_hinted = {}, [], False

  def start_shot(self):
    if not self._shot_hinted:
      for key in self._shot_windows:
        del self._flows[key]
    self._shot_windows, self._shot_hinted = [], False

  def wanted(self, start, stop):
    """Whether the window [start, stop) needs its flows; notes whether it holds a hinted frame."""
    self._shot_hinted |= any(start <= f < stop for f in self._hinted_frames)
    later = bool(self._hinted_frames) and self._hinted_frames[-1] >= start
    return stop - start >= 2 and (self._shot_hinted or later)

  def add(self, start, l_frames):
    """Computes the flows of the window starting at `start` from its L frames [n, h, w, 1]."""
    key = (start, start + len(l_frames) - 1)
    self._flows[key] = window_flows(l_frames, self._flow_fn)
    self._shot_windows.append(key)

  def __call__(self, a, b):
    return self._flows[(a, b)]


def _gradient(x):
  """Central-difference gradient magnitude of x [h, w, 1] (0 on the border)."""
  gy, gx = np.zeros_like(x), np.zeros_like(x)
  gy[1:-1] = (x[2:] - x[:-2]) / 2
  gx[:, 1:-1] = (x[:, 2:] - x[:, :-2]) / 2
  return np.sqrt(gx * gx + gy * gy)


def carry(hint: FrameHint, l_src, l_dst, f_ds, f_sd) -> FrameHint:
  """Pulls `hint` (on the frame of normalised L `l_src` [h, w, 1]) onto the frame `l_dst`.

  `f_ds` [h, w, 2] is the flow from the destination frame to the source (dst(p) ~ src(p + f_ds(p))),
  `f_sd` the flow back, both in pixels (e.g. `window_flows`). See the module docstring for the rule.
  """
  src, dst = np.asarray(l_src, np.float32), np.asarray(l_dst, np.float32)
  f_ds, f_sd = np.asarray(f_ds, np.float32), np.asarray(f_sd, np.float32)
  ab = _warp(hint.ab, f_ds)
  covered = _warp(hint.mask, f_ds) > 0.999
  warped = _warp(src, f_ds)
  # In L* units (normalised L x 100).
  gradient = np.maximum(_gradient(warped), _gradient(dst)) * 100
  photometric = np.abs(dst - warped) * 100 <= PHOTOMETRIC_DL + PHOTOMETRIC_GRAD * gradient
  back = _warp(f_sd, f_ds)
  error = np.linalg.norm(f_ds + back, axis=-1, keepdims=True)
  size = (np.linalg.norm(f_ds, axis=-1, keepdims=True)
          + np.linalg.norm(back, axis=-1, keepdims=True))
  consistent = error <= FB_ABS + FB_REL * size
  hh, ww = dst.shape[:2]
  ys, xs = np.mgrid[0:hh, 0:ww].astype(np.float32)
  px, py = xs + f_ds[..., 0], ys + f_ds[..., 1]
  inside = ((px >= 0) & (px <= ww - 1) & (py >= 0) & (py <= hh - 1))[..., None]
  keep = (covered & photometric & consistent & inside).astype(np.float32)
  return FrameHint((ab * keep).astype(np.float32), keep)


def anchor_hints(anchors, user, l_of, flows):
  """Hints of every anchor of one shot.

  Args:
    anchors: the shot's anchor frame indices, in order.
    user: {frame: FrameHint at the network size} of the user's hints (frames of this shot).
    l_of: frame index -> normalised L [h, w, 1] at the network size.
    flows: `(a, b) -> (F_b->a, F_a->b)` for consecutive anchors a < b (the ends of one window),
      e.g. from `window_flows`.

  Returns:
    {anchor: FrameHint} for the anchors that get hints.
  """
  anchors = sorted(anchors)
  out = {}
  for direction in (1, -1):
    order = anchors if direction == 1 else anchors[::-1]
    current, source = None, None
    for a in order:
      if current is not None:
        f_back, f_fwd = flows(min(source, a), max(source, a))
        f_ds, f_sd = (f_back, f_fwd) if a > source else (f_fwd, f_back)
        current = carry(current, l_of(source), l_of(a), f_ds, f_sd)
      current = merge(user.get(a), current)
      source = a
      if current is None:
        continue
      if a not in out or _nearer(a, direction, user):
        out[a] = current
  return out


def _nearer(a, direction, user):
  """Whether the backward sweep's hints for `a` come from a nearer keyframe than the forward's."""
  if a in user:
    return False
  before = [k for k in user if k < a]
  after = [k for k in user if k > a]
  if direction == -1 and after and (not before or min(after) - a < a - max(before)):
    return True
  return False
