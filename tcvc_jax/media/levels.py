"""Decoded frames whose samples FFmpeg's converter (swscale) does not bring to full-range RGB or
gray exactly, converted here instead:

- YUV deeper than 8 bits: swscale's limited-range YUV -> 16-bit RGB comes out 0.4 % short of white
  (10-bit 940 -> 65283 of 65535, at every depth and subsampling), a gain error over the whole
  range. Here swscale only upsamples the chroma (to 4:4:4, 16 bits); range and matrix are
  applied in float32.
- Gray tagged limited range (HEVC / AV1 monochrome, 4:0:0): swscale ignores the range of gray
  formats, so 10-bit white (940) was read as 0.919 and black (64) as 0.063. Here it is expanded
  (16..235 at 8 bits -> 0..255, 64..940 at 10 bits -> 0..65535).

8-bit YUV -> RGB (rgb24) is swscale's own and exact (235 -> 255); gray not tagged limited is taken
as full range, as swscale does (PNG, FFV1 scans)."""

import re

import numpy as np

_LIMITED, _FULL = 1, 2  # AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG (0: unspecified)
# (Kr, Kb) of the YUV matrices by the frame's AVColorSpace, as swscale takes them: BT.601 where
# unspecified (2) or RGB (0), BT.709, FCC, BT.470 BG and SMPTE 170M (both BT.601), SMPTE 240M,
# BT.2020 NCL. The rest (BT.2020 CL, YCgCo, ICtCp, ...) swscale refuses; they are left to it.
_BT601 = (0.299, 0.114)
_KR_KB = {0: _BT601, 1: (0.2126, 0.0722), 2: _BT601, 4: (0.30, 0.11), 5: _BT601, 6: _BT601,
          7: (0.212, 0.087), 9: (0.2627, 0.0593)}


def plane(frame, index, dtype):
  """Plane `index` of a planar frame as stored, [height of the plane, width of the plane]."""
  p = frame.planes[index]
  rows = np.frombuffer(memoryview(p), dtype).reshape(p.height, -1)
  return rows[:, :p.width]


def _uint16(x):
  """Float samples in [0, 1] (any outside clipped) -> uint16 over the full range, rounded."""
  return np.round(np.clip(x, 0, 1) * np.float32(65535)).astype(np.uint16)


def deep_yuv_to_rgb(frame, depth):
  """A YUV frame of `depth` > 8 bits -> uint16 RGB [H, W, 3], full range; the frame's own matrix
  and range (limited unless tagged full), its chroma upsampled by swscale (alpha dropped)."""
  yuv = frame.reformat(format="yuv444p16le")  # each sample shifted left by 16 - depth bits
  y, u, v = (plane(yuv, i, "<u2").astype(np.float32) for i in range(3))
  if frame.color_range == _FULL:  # 0 .. 2^depth - 1, chroma centred on 2^(depth - 1)
    luma = chroma = np.float32(2.0 ** (16 - depth) * (2 ** depth - 1))
  else:  # limited: 16..235 (luma) and 16..240 (chroma) at 8 bits, times 2^(depth - 8)
    luma, chroma = np.float32(219 * 256), np.float32(224 * 256)
    y = y - np.float32(16 * 256)
  y, u, v = y / luma, (u - 32768) / chroma, (v - 32768) / chroma
  kr, kb = _KR_KB[frame.colorspace]
  kg = 1 - kr - kb  # each of R, G, B is Y plus chroma terms: Y itself where the chroma is 0
  r = y + np.float32(2 * (1 - kr)) * v
  g = y - np.float32(2 * (1 - kb) * kb / kg) * u - np.float32(2 * (1 - kr) * kr / kg) * v
  b = y + np.float32(2 * (1 - kb)) * u
  return np.stack([_uint16(r), _uint16(g), _uint16(b)], axis=-1)


def limited_gray(frame, depth):
  """A gray frame tagged limited range -> [H, W, 1], full range: uint8 at 8 bits, else uint16."""
  big = frame.format.name.endswith("be")
  x = plane(frame, 0, np.uint8 if depth <= 8 else (">u2" if big else "<u2")).astype(np.float32)
  step = np.float32(2.0 ** (depth - 8))
  x = (x - 16 * step) / (219 * step)
  if depth <= 8:
    return np.round(np.clip(x, 0, 1) * np.float32(255)).astype(np.uint8)[..., None]
  return _uint16(x)[..., None]


def needs_own_conversion(frame, gray, depth):
  """Whether `frame` (gray or not, of `depth` bits) is one that swscale converts inexactly."""
  if gray:
    return (frame.color_range == _LIMITED and depth >= 8
            and re.fullmatch(r"gray\d*(le|be)?", frame.format.name) is not None)  # not float
  fmt = frame.format  # deeper than 8 bits and neither RGB nor CIE XYZ (DCI): YUV, any layout
  return (depth > 8 and frame.colorspace in _KR_KB
          and not (fmt.is_rgb or fmt.has_palette or fmt.name.startswith("xyz")))
