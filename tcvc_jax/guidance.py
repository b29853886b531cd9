"""Guided colorization: a user's colour hints on some frames, carried through the whole shot.

SIGGRAPH17, TCVC's anchor colorizer, takes colour hints beside L (ab and a 0/1 mask). A user gives
them on particular frames, as clicks (`click_hint`) or a colour reference image of the frame
(`reference_hint`, e.g. one coloured by hand). Those frames become anchors (window boundaries, like
scene cuts), and the hints are carried from anchor to anchor of the same shot, forward and backward,
so a reference on frame 0 still governs frame 300. Nothing is carried across a cut.

The carrying rule (`carry`): the hint field of anchor A is pulled onto anchor B with the model's own
flow between the two anchor frames (FlowNet2, or the classical flow), and a pixel is kept only where
the warp is reliable:
  * it comes from inside frame A, from hinted pixels (its four bilinear neighbours all hinted);
  * photometric consistency: TCVC's own occlusion weight exp(-50 (L_B - warp(L_A))^2) > 0.97, i.e.
    the lightness agrees within about 2.5 L* units;
  * forward-backward consistency: |F_BA + warp(F_AB, F_BA)| <= 0.25 px + 5 % of the flows'
    magnitude (the standard test for occlusions and flow failures).
The thresholds were chosen on the synthetic test clips with the demo model (eval.py
--config eval:synthetic,guided): looser ones (0.5, 1 px) carried enough wrong colour to cost frames
far from the reference 0.9 dB against the automatic run; these lose 0.08 dB there and gain 0.66 dB
over all frames.
An anchor's own user hints win where they are set; elsewhere it takes the carried hints of the
nearest hinted anchor in time (forward or backward), ties going to the earlier one.
"""

import dataclasses
import json
import os

import numpy as np

from tcvc_jax.ops import color

MASK_SCALE = 50.0  # TCVC's occlusion weight exp(-50 dL^2), on normalised L
PHOTOMETRIC_MIN = 0.97
FB_ABS, FB_REL = 0.25, 0.05
DEFAULT_PATCH = 3


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
  """
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


def _check_click(c, where):
  if not isinstance(c, dict):
    raise GuidanceError(f"{where}: a click must be an object with frame, x, y, rgb")
  missing = [k for k in ("frame", "x", "y", "rgb") if k not in c]
  if missing:
    raise GuidanceError(f"{where}: missing {', '.join(missing)}")
  if not isinstance(c["frame"], int) or isinstance(c["frame"], bool) or c["frame"] < 0:
    raise GuidanceError(f"{where}: frame must be a non-negative integer, got {c['frame']!r}")
  for k in ("x", "y"):
    if not isinstance(c[k], (int, float)) or not 0 <= c[k] <= 1:
      raise GuidanceError(f"{where}: {k} must be a relative coordinate in [0, 1], got {c[k]!r}")
  rgb = c["rgb"]
  if (not isinstance(rgb, list) or len(rgb) != 3
      or not all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)):
    raise GuidanceError(f"{where}: rgb must be [r, g, b] integers 0..255, got {rgb!r}")
  patch = c.get("patch", DEFAULT_PATCH)
  if not isinstance(patch, int) or patch < 1 or patch % 2 == 0:
    raise GuidanceError(f"{where}: patch must be an odd positive integer, got {patch!r}")


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


def carry(hint: FrameHint, l_src, l_dst, flow_fn) -> FrameHint:
  """Pulls `hint` (on the frame of normalised L `l_src` [h, w, 1]) onto the frame `l_dst`.

  `flow_fn(a [1, h, w, 1], b) -> [1, h, w, 2]` is the flow from a to b in pixels (a(p) ~
  b(p + F(p))). See the module docstring for the rule.
  """
  from tcvc_jax.ops.warp import backward_warp  # pylint: disable=g-import-not-at-top
  src, dst = np.asarray(l_src, np.float32)[None], np.asarray(l_dst, np.float32)[None]
  f_ds = np.asarray(flow_fn(dst, src), np.float32)  # dst pixel -> where it is in src
  f_sd = np.asarray(flow_fn(src, dst), np.float32)
  warp = lambda x: np.asarray(backward_warp(x, f_ds))
  ab = warp(hint.ab[None])[0]
  covered = warp(hint.mask[None])[0] > 0.999
  photometric = np.exp(-MASK_SCALE * (dst[0] - warp(src)[0]) ** 2) > PHOTOMETRIC_MIN
  back = warp(f_sd)[0]
  error = np.linalg.norm(f_ds[0] + back, axis=-1, keepdims=True)
  size = np.linalg.norm(f_ds[0], axis=-1, keepdims=True) + np.linalg.norm(back, axis=-1,
                                                                          keepdims=True)
  consistent = error <= FB_ABS + FB_REL * size
  hh, ww = l_dst.shape[:2]
  ys, xs = np.mgrid[0:hh, 0:ww].astype(np.float32)
  px, py = xs + f_ds[0, ..., 0], ys + f_ds[0, ..., 1]
  inside = ((px >= 0) & (px <= ww - 1) & (py >= 0) & (py <= hh - 1))[..., None]
  keep = (covered & photometric & consistent & inside).astype(np.float32)
  return FrameHint((ab * keep).astype(np.float32), keep)


def anchor_hints(anchors, user, l_of, flow_fn):
  """Hints of every anchor of one shot.

  Args:
    anchors: the shot's anchor frame indices, in order.
    user: {frame: FrameHint at the network size} of the user's hints (frames of this shot).
    l_of: frame index -> normalised L [h, w, 1] at the network size.
    flow_fn: see `carry`.

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
        current = carry(current, l_of(source), l_of(a), flow_fn)
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
