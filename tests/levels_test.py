"""Tests for tcvc_jax/media/levels.py: deep YUV and limited-range gray read to exact levels."""

import os

from absl.testing import absltest
import av
import numpy as np

from tcvc_jax.media import levels
from tcvc_jax.media import reading

import data_testlib as dt  # tests/, beside this file

_H, _W = 16, 32


def _frame(fmt, planes, dtype, color_range, colorspace=2):
  """A frame of format `fmt` holding `planes` (one array or value per plane, as stored)."""
  f = av.VideoFrame(_W, _H, fmt)
  for p, values in zip(f.planes, planes, strict=True):
    rows = np.zeros((p.height, p.line_size // np.dtype(dtype).itemsize), dtype)
    rows[:, :p.width] = values
    p.update(rows.tobytes())
  f.color_range, f.colorspace = color_range, colorspace
  return f


def _encode(path, codec, fmt, planes, dtype, options=None, frames=3):
  """A video of `frames` equal frames, coded by `codec` in `fmt`, tagged limited range."""
  with av.open(path, "w") as c:
    s = c.add_stream(codec, rate=25)
    s.width, s.height, s.pix_fmt = _W, _H, fmt
    s.codec_context.color_range = 1
    s.options = options or {}
    for _ in range(frames):
      for packet in s.encode(_frame(fmt, planes, dtype, 1)):
        c.mux(packet)
    for packet in s.encode():
      c.mux(packet)
  return path


class LevelsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = dt.tempdir(self)

  def test_10bit_limited_range_video_reads_white_and_black_exactly(self):
    """FFV1 (FFmpeg's own lossless codec) 4:2:0 10-bit, tagged limited range: 940 is white, 64
    black, 502 the middle (swscale alone: white 65283 of 65535, 0.4 % short)."""
    for luma, want in ((940, 65535), (64, 0), (502, 32768)):
      path = _encode(os.path.join(self.dir, f"y{luma}.mkv"), "ffv1", "yuv420p10le",
                     (luma, 512, 512), "<u2")
      src = reading.FrameSource(path)
      self.assertEqual((src.bit_depth, src.is_gray), (10, False))
      frames = np.stack(list(src.as_stored()))
      self.assertEqual(frames.shape, (3, _H, _W, 3))
      np.testing.assert_array_equal(frames, want)
      np.testing.assert_array_equal(np.stack(list(src)), np.float32(want / 65535))

  def test_monochrome_limited_range_video_reads_full_range(self):
    """HEVC 4:0:0 (gray10le), as B&W film is coded: swscale ignored the limited range of gray
    (white 0.919, black 0.063)."""
    if "libx265" not in av.codecs_available:
      self.skipTest("this FFmpeg has no libx265 encoder")
    for luma, want in ((940, 65535), (64, 0)):
      path = _encode(os.path.join(self.dir, f"g{luma}.mkv"), "libx265", "gray10le", (luma,),
                     "<u2", {"x265-params": "lossless=1:log-level=none"})
      src = reading.FrameSource(path)
      self.assertEqual((src.bit_depth, src.is_gray), (10, True))
      np.testing.assert_array_equal(np.stack(list(src.as_stored())), want)

  def test_deep_yuv_matches_8bit_conversion_in_every_matrix(self):
    """Random 10-bit YUV 4:4:4 holding 8-bit values (x4) reads as swscale's own exact 8-bit
    conversion of those values does, to its rounding, in each matrix swscale knows (BT.601 when
    untagged, BT.709, FCC, SMPTE 240M, BT.2020); matrices differ, so the tag is honoured."""
    rng = np.random.default_rng(0)
    y, u, v = rng.integers(16, 236, (_H, _W)), *rng.integers(16, 241, (2, _H, _W))
    got = {}
    for colorspace in (2, 1, 4, 5, 6, 7, 9):
      eight = _frame("yuv444p", (y, u, v), np.uint8, 1, colorspace).to_ndarray(format="rgb24")
      deep = _frame("yuv444p10le", (4 * y, 4 * u, 4 * v), "<u2", 1, colorspace)
      self.assertTrue(levels.needs_own_conversion(deep, False, 10))
      got[colorspace] = reading._to_array(deep, False)
      np.testing.assert_allclose(got[colorspace] / 257, eight, atol=0.52, err_msg=str(colorspace))
    self.assertGreater(np.abs(got[1].astype(int) - got[2]).max(), 40 * 257)  # BT.709 vs BT.601
    self.assertGreater(np.abs(got[9].astype(int) - got[1]).max(), 5 * 257)  # BT.2020 vs BT.709

  def test_full_range_deep_yuv_uses_the_whole_code_range(self):
    """Tagged full range, 10-bit 1023 is white and chroma centres on 512."""
    for luma, want in ((1023, 65535), (0, 0), (511, 32735)):
      f = _frame("yuv420p10le", (luma, 512, 512), "<u2", 2)
      np.testing.assert_array_equal(reading._to_array(f, False), want)

  def test_gray_not_tagged_limited_is_read_as_stored(self):
    """PNG and FFV1 scans (unspecified or full range) keep their values; only a limited-range tag
    expands them, at every depth; float gray is left to swscale."""
    for fmt, dtype, white, black in (("gray", np.uint8, 235, 16), ("gray10le", "<u2", 940, 64),
                                     ("gray12be", ">u2", 3760, 256)):
      deep = fmt != "gray"
      for color_range in (0, 1, 2):
        got = [reading._to_array(_frame(fmt, (v,), dtype, color_range), True)[0, 0, 0]
               for v in (white, black)]
        if color_range == 1:
          self.assertEqual(got, [65535, 0] if deep else [255, 0], (fmt, color_range))
        else:
          bits = 12 if fmt == "gray12be" else 10 if deep else 8
          want = [round(v * 65535 / (2**bits - 1)) if deep else v for v in (white, black)]
          self.assertEqual(got, want, (fmt, color_range))
    f = av.VideoFrame(_W, _H, "grayf32le")
    f.color_range = 1
    self.assertFalse(levels.needs_own_conversion(f, True, 32))

  def test_colour_frame_in_a_gray_source_is_refused(self):
    deep = _frame("yuv420p10le", (502, 512, 512), "<u2", 1)
    with self.assertRaisesRegex(reading.MediaError, "colour frame in a source opened as gray"):
      reading._to_array(deep, True)


if __name__ == "__main__":
  absltest.main()
