"""Guided colorization: a user's colour hints on some frames, carried through the whole shot.

SIGGRAPH17, TCVC's anchor colorizer, takes colour hints beside L (ab and a 0/1 mask). A user gives
them on particular frames, as clicks (`click_hint`) or a colour reference image of the frame
(`reference_hint`, e.g. one coloured by hand). Those frames become anchors (window boundaries, like
scene cuts), and the hints are carried from anchor to anchor of the same shot, forward and backward,
so a reference on frame 0 still governs frame 300. Nothing is carried across a cut.

This module holds the hints themselves: `FrameHint`, made from clicks or a reference, checked
(`check_hints`, `read_clicks`, `parse_reference`), resized (`resize_hint`) and merged (`merge`);
tcvc_jax/carrying.py carries them through a shot (the rule, and how it was chosen).
"""

import dataclasses
import json
import os

import numpy as np

from tcvc_jax.ops import color

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


def reference_hint(image, alpha=None) -> FrameHint:
  """A hint from a colour image of the frame (uint8 RGB [h, w, 3]): its ab everywhere, or with
  `alpha` (uint8 [h, w], e.g. strokes painted on a transparent layer) where it is at least half
  opaque; transparent pixels are no hint (their colour, often black, is not the user's)."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    rgba = image.ndim == 3 and image.shape[-1] == 4
    raise GuidanceError(f"a reference must be an 8-bit RGB image, got {image.shape} {image.dtype}"
                        + (" (RGBA: reference_hint(image[..., :3], alpha=image[..., 3]))"
                           if rgba else ""))
  mask = np.ones(image.shape[:2] + (1,), np.float32)
  if alpha is not None:
    alpha = np.asarray(alpha)
    if alpha.shape != image.shape[:2]:
      raise GuidanceError(f"alpha of shape {alpha.shape} for an image of {image.shape[:2]}")
    mask = (alpha >= 128).astype(np.float32)[..., None]
    if not mask.any():
      raise GuidanceError("the reference image is transparent everywhere: no colour to use")
  _, ab = color.rgb_to_gray_ab(image, np)
  return FrameHint((ab * mask).astype(np.float32), mask)


def click_hint(clicks, height, width) -> FrameHint:
  """Hints from clicks {"x", "y" (relative, 0..1), "rgb" [r, g, b] 0..255, "patch" (odd px)}.

  Each click colours a patch x patch square (clipped at the border) with the click's ab, at the
  resolution (height, width) the model runs at; where clicks overlap, the later one's colour.

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
  for i, c in enumerate(clicks):
    if (p := c.get("patch", DEFAULT_PATCH)) > max(height, width):
      raise GuidanceError(f"click {i}: patch {p} is larger than the {height}x{width} "
                          "frame the model colours (a patch is in its pixels, e.g. at --size)")
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
  unknown = sorted(str(k) for k in c if k not in ("frame", "x", "y", "rgb", "patch"))
  if unknown:  # a misspelt key would be ignored
    raise GuidanceError(f"{where}: unknown key {', '.join(unknown)} (a click has frame, x, y, rgb "
                        "and optionally patch)")
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
  if not (mask > 0).any():  # the frame would become an anchor with no colour of the user's
    raise GuidanceError(f"{where}: the mask is 0 everywhere, no hint is given: leave the frame out "
                        "of the hints")
  given = ab[np.broadcast_to(mask > 0, ab.shape)]
  low, high = color.AB_RANGE
  tol = color.RANGE_TOLERANCE
  if given.size and (given.min() < low - tol or given.max() > high + tol):
    raise GuidanceError(f"{where}: ab must be within [{low:.5g}, {high:.5g}] where a hint is "
                        f"given (a* / 110, b* / 110), got values from {given.min():g} to "
                        f"{given.max():g}")


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


def _one_value_per_key(pairs):
  """A JSON object as a dict; a key given twice (json's default keeps the last, silently: which
  of a click's two "x" was meant?) is an error."""
  out = {}
  for key, value in pairs:
    if key in out:
      raise GuidanceError(f'"{key}" is given twice in one object')
    out[key] = value
  return out


def read_clicks(path):
  """{frame: [click, ...]} from a JSON file: a list of clicks, or {"clicks": [...], "patch": p}."""
  try:
    with open(path, encoding="utf-8-sig") as f:  # a BOM (Windows editors) is not JSON's
      data = json.load(f, object_pairs_hook=_one_value_per_key)
  except OSError as e:
    raise GuidanceError(f"{path}: cannot read ({e.strerror or e})") from e
  except GuidanceError as e:
    raise GuidanceError(f"{path}: {e}") from None
  except ValueError as e:
    raise GuidanceError(f"{path}: not valid JSON ({e})") from e
  patch = DEFAULT_PATCH
  if isinstance(data, dict):
    unknown = sorted(str(k) for k in data if k not in ("clicks", "patch"))
    if unknown:
      raise GuidanceError(f"{path}: unknown key {', '.join(unknown)}: a hints file is a list of "
                          'clicks [{"frame": 0, "x": 0.5, "y": 0.5, "rgb": [r, g, b]}, ...] or '
                          '{"clicks": [...], "patch": p}')
    patch = data.get("patch", patch)
    if not _is_int(patch) or patch < 1 or patch % 2 == 0:
      raise GuidanceError(f"{path}: \"patch\" (for every click) must be an odd positive integer, "
                          f"got {patch!r}")
    data = data.get("clicks")
  if not isinstance(data, list) or not data:
    raise GuidanceError(f"{path}: expected a non-empty list of clicks")
  out = {}
  for i, c in enumerate(data):
    c = dict({"patch": patch}, **c) if isinstance(c, dict) else c
    _check_click(c, f"{path}: click {i}")
    out.setdefault(c["frame"], []).append(c)
  return out


def parse_reference(text):
  """'FRAME:IMAGE' -> (frame, path)."""
  frame, sep, path = str(text).partition(":")
  frame = frame.strip()
  if not sep or not (frame.isascii() and frame.isdigit()) or not path:  # ('²'.isdigit() is True)
    raise GuidanceError(f"bad --reference {text!r}: use FRAME:IMAGE, FRAME the frame's number "
                        "counted from 0, e.g. 0:frame0_colour.png")
  path = os.path.expanduser(path)  # (0:~/a.png: no shell expands that `~`)
  if path != path.strip() and not os.path.exists(path) and os.path.exists(path.strip()):
    path = path.strip()  # "0: a.png"
  return int(frame), path


def _resize(x, height, width):
  import jax  # pylint: disable=g-import-not-at-top
  if x.shape[:2] == (height, width):
    return np.asarray(x, np.float32)
  return np.asarray(jax.image.resize(np.asarray(x, np.float32), (height, width, x.shape[-1]),
                                     "bilinear", antialias=True))


def _peaks(weight):
  """Where `weight` [h, w, 1] is > 0.001 and the largest in its 3x3 neighbourhood."""
  padded = np.pad(weight[..., 0], 1, constant_values=-1.0)
  h, w = weight.shape[:2]
  top = np.max([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
  return ((weight[..., 0] >= top) & (weight[..., 0] > 1e-3))[..., None]


def resize_hint(hint: FrameHint, height, width) -> FrameHint:
  """The hint at (height, width): ab averaged over hinted pixels, mask where >= half hinted, and
  at the peak of each spot under half a pixel there (a click made on a 1080p frame keeps a pixel
  at 64x64; it vanished)."""
  if hint.ab.shape[:2] == (height, width):
    return hint
  weight = _resize(hint.mask, height, width)
  summed = _resize(hint.ab * hint.mask, height, width)
  mask = ((weight >= 0.5) | _peaks(weight)).astype(np.float32)
  ab = np.where(mask > 0, summed / np.maximum(weight, 1e-6), 0).astype(np.float32)
  return FrameHint(ab, mask)


def merge(user: FrameHint | None, carried: FrameHint | None) -> FrameHint | None:
  """The user's hints where given, carried ones elsewhere."""
  if user is None or carried is None:
    return user if carried is None else carried
  mask = np.maximum(user.mask, carried.mask)
  ab = np.where(user.mask > 0, user.ab, carried.ab)
  return FrameHint(ab.astype(np.float32), mask)
