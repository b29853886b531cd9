"""Tests for tcvc_jax/media/reading.py: frame folders and videos in, rotation, bad input."""

import fractions
import functools
import io
import os
import re
import struct

from absl.testing import absltest
import av
import numpy as np

from tcvc_jax import window_stream
from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.media import av_frames
from tcvc_jax.media import folders
from tcvc_jax.media import reading
from tcvc_jax.media import writing

import data_testlib as dt  # tests/, beside this file


def _write_png(path, array):
  with open(path, "wb") as f:
    f.write(writing.encode_png(array))


# An H.264 video with 0.5 s of AAC audio unless told otherwise.
_make_video = functools.partial(dt.write_video, codec="libx264", fps=12, audio_seconds=0.5)


def _gradient_frames(n, h, w):
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([np.stack([(x * 7 + 20 * t) % 256, (y * 9) % 256, np.full_like(x, 40 * t % 256)],
                            -1) for t in range(n)]).astype(np.uint8)


def _cut_copy(path, fraction):
  """A copy of the file `path` cut off after `fraction` of its bytes: name_cut.ext."""
  with open(path, "rb") as f:
    data = f.read()
  base, ext = os.path.splitext(path)
  with open(base + "_cut" + ext, "wb") as f:
    f.write(data[:int(len(data) * fraction)])
  return base + "_cut" + ext


class ReadFolderTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = dt.tempdir(self)
    self.rng = np.random.default_rng(0)

  def _folder(self, name, arrays, ext=".png"):
    path = os.path.join(self.dir, name)
    os.makedirs(path)
    for i, a in enumerate(arrays):
      _write_png(os.path.join(path, f"{i:05d}{ext}"), a)
    return path

  def test_8bit_rgb_exact(self):
    frames = self.rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    src = reading.open_source(self._folder("c", frames))
    self.assertEqual((src.kind, src.width, src.height, src.num_frames), ("folder", 7, 5, 3))
    self.assertEqual((src.is_gray, src.bit_depth, src.fps), (False, 8, 25))
    np.testing.assert_array_equal(src.read_all(np.uint8), frames)
    np.testing.assert_array_equal(np.stack(list(src)), frames.astype(np.float32) / 255)

  def test_16bit_rgb_and_gray(self):
    rgb = self.rng.integers(0, 65536, (2, 4, 6, 3), dtype=np.uint16)
    src = reading.open_source(self._folder("rgb16", rgb))
    self.assertEqual((src.bit_depth, src.is_gray), (16, False))
    got = src.read_all(np.float32)
    np.testing.assert_array_equal(got, rgb.astype(np.float32) / 65535)  # real depth, not / 255
    np.testing.assert_array_equal(src.read_all(np.uint8),
                                  np.round(rgb.astype(np.float32) / 257).astype(np.uint8))
    gray = self.rng.integers(0, 65536, (2, 4, 6, 1), dtype=np.uint16)
    src = reading.open_source(self._folder("gray16", gray))
    self.assertEqual((src.bit_depth, src.is_gray), (16, True))
    np.testing.assert_array_equal(src.read_all(np.float32), gray.astype(np.float32) / 65535)

  def test_frames_as_stored_give_the_same_lightness_in_a_quarter_of_the_memory(self):
    """colorize reads frames as stored (uint8 / uint16): the lightness equals that of the float32
    frames bit for bit, and the frames can be read twice (guided runs plan in a first pass)."""
    for name, frames in [("s8", self.rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)),
                         ("s16", self.rng.integers(0, 65536, (2, 4, 6, 1), dtype=np.uint16))]:
      src = reading.open_source(self._folder(name, frames))
      stored = src.as_stored()
      self.assertEqual(stored.num_frames, len(frames))
      first, again = np.stack(list(stored)), np.stack(list(stored))
      np.testing.assert_array_equal(first, frames)
      np.testing.assert_array_equal(again, frames)
      self.assertEqual(first.dtype, frames.dtype)
      np.testing.assert_array_equal(protocol.frames_to_l(first),
                                    protocol.frames_to_l(np.stack(list(src))))

  def test_rgba_drops_alpha(self):
    rgba = self.rng.integers(0, 256, (2, 4, 5, 4), dtype=np.uint8)
    src = reading.open_source(self._folder("rgba", rgba))
    np.testing.assert_array_equal(src.read_all(np.uint8), rgba[..., :3])
    rgba16 = self.rng.integers(0, 65536, (2, 4, 5, 4), dtype=np.uint16)
    src = reading.open_source(self._folder("rgba16", rgba16))
    np.testing.assert_array_equal(src.read_all(np.float32),
                                  rgba16[..., :3].astype(np.float32) / 65535)

  def test_16bit_gray_with_alpha_reads_the_same_every_time(self):
    """ya16 PNGs (gray + alpha): FFmpeg's conversion to gray16 got rows wrong in 128 of 300 reads at
    360 px wide; read from the plane, every read is the stored gray, also as an RGB frame."""
    ya = self.rng.integers(0, 65536, (2, 40, 360, 2), dtype=np.uint16)
    os.makedirs(os.path.join(self.dir, "ya16"))
    for i, image in enumerate(ya):
      frame = av.VideoFrame(360, 40, "ya16be")
      line = frame.planes[0].line_size
      rows = np.zeros((40, line), np.uint8)
      rows[:, :360 * 4] = image.astype(">u2").view(np.uint8).reshape(40, -1)
      frame.planes[0].update(rows.tobytes())
      ctx = av.CodecContext.create("png", "w")
      ctx.width, ctx.height, ctx.pix_fmt = 360, 40, "ya16be"
      with open(os.path.join(self.dir, "ya16", f"{i}.png"), "wb") as f:
        f.write(b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)]))
    src = reading.open_source(os.path.join(self.dir, "ya16"))
    self.assertEqual((src.bit_depth, src.is_gray), (16, True))
    for _ in range(15):
      np.testing.assert_array_equal(src.read_all(None), ya[..., :1])
    path = os.path.join(self.dir, "ya16", "0.png")
    for _ in range(15):
      np.testing.assert_array_equal(reading.read_image(path),
                                    np.repeat(av_frames.convert(ya[0, ..., :1], np.uint8), 3, -1))

  def test_gray_and_mixed_folders(self):
    gray = self.rng.integers(0, 256, (2, 4, 5, 1), dtype=np.uint8)
    src = reading.open_source(self._folder("gray", gray))
    self.assertTrue(src.is_gray)
    np.testing.assert_array_equal(src.read_all(), gray)
    colour = self.rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    src = reading.open_source(self._folder("mixed", [gray[0], colour]))
    self.assertFalse(src.is_gray)
    np.testing.assert_array_equal(src.read_all(), [np.repeat(gray[0], 3, -1), colour])
    # 8-bit frames among 16-bit ones are widened (exactly: v * 257 / 65535 == v / 255).
    deep = self.rng.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    src = reading.open_source(self._folder("depths", [colour, deep]))
    self.assertEqual(src.bit_depth, 16)
    np.testing.assert_array_equal(list(src.as_stored()), [colour.astype(np.uint16) * 257, deep])
    np.testing.assert_array_equal(src.read_all(np.float32)[0], colour.astype(np.float32) / 255)

  def test_jpeg_and_sorted_names(self):
    path = os.path.join(self.dir, "jpg")
    os.makedirs(path)
    frame = _gradient_frames(1, 16, 24)[0]
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 24, 16, "yuvj444p"
    ctx.time_base = fractions.Fraction(1, 25)
    vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuvj444p")
    data = b"".join(bytes(p) for p in ctx.encode(vf)) + b"".join(bytes(p) for p in ctx.encode(None))
    for name in ("b.jpg", "a.JPEG"):
      with open(os.path.join(path, name), "wb") as f:
        f.write(data)
    with open(os.path.join(path, "notes.txt"), "w") as f:
      f.write("ignored")
    src = reading.open_source(path)
    self.assertEqual(src.names, ["a.JPEG", "b.jpg"])
    self.assertIsNone(src.note)  # no numbered names: nothing to tell
    self.assertEqual((src.width, src.height), (24, 16))
    self.assertLess(np.abs(src.read_all().astype(int) - frame).mean(), 4)

  def test_jpeg_exif_orientation(self):
    # A phone's photo: stored sideways, with an EXIF Orientation tag saying how to show it.
    stored = _gradient_frames(1, 16, 24)[0]
    stored[2:6, 3:9] = (250, 10, 10)  # a mark in one corner
    jpeg = dt.encode_image(stored, "mjpeg")
    h, w = stored.shape[:2]

    def with_exif(orientation, order):  # APP1 right after SOI: TIFF header, IFD0 with one entry
      e = "<" if order == b"II" else ">"
      tiff = order + struct.pack(e + "HI", 42, 8) + struct.pack(e + "HHHIHHI", 1, 0x0112, 3, 1,
                                                                 orientation, 0, 0)
      app1 = b"Exif\0\0" + tiff
      return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]

    # Where the stored row 0 / column 0 are shown (EXIF 2.3): displayed[i, j] = stored[rows, cols].
    i, j = np.mgrid[0:w, 0:h]  # for the transposed ones, 5..8
    ii, jj = np.mgrid[0:h, 0:w]
    where = {1: (ii, jj), 2: (ii, w - 1 - jj), 3: (h - 1 - ii, w - 1 - jj), 4: (h - 1 - ii, jj),
             5: (j, i), 6: (h - 1 - j, i), 7: (h - 1 - j, w - 1 - i), 8: (j, w - 1 - i)}
    decoded = reading.read_image(self._write(os.path.join(self.dir, "plain.jpg"), jpeg))
    for orientation, (rows, cols) in where.items():
      for order in (b"II", b"MM"):
        path = self._write(os.path.join(self.dir, f"o{orientation}.jpg"),
                           with_exif(orientation, order))
        np.testing.assert_array_equal(reading.read_image(path), decoded[rows, cols],
                                      err_msg=f"orientation {orientation}")
        self.assertEqual(reading.image_header(path)[:2], (w, h) if orientation < 5 else (h, w))
    folder = os.path.join(self.dir, "phone")
    os.makedirs(folder)
    for k in range(2):
      self._write(os.path.join(folder, f"img_{k}.jpg"), with_exif(6, b"MM"))
    src = reading.open_source(folder)
    self.assertEqual((src.width, src.height), (h, w))
    np.testing.assert_array_equal(src.read_all(), [decoded[where[6]]] * 2)
    # One photo is a 1-frame source, read as a folder's frame (FFmpeg ignores the orientation).
    src = reading.open_source(os.path.join(folder, "img_1.jpg"))
    self.assertEqual((src.kind, src.names, src.num_frames), ("image", ["img_1.jpg"], 1))
    self.assertEqual((src.width, src.height, src.has_audio), (h, w, False))
    np.testing.assert_array_equal(src.read_all(), [decoded[where[6]]])

  def test_an_animated_png_is_a_video_and_a_still_one_an_image(self):
    frames = _gradient_frames(3, 16, 24)
    path = os.path.join(self.dir, "anim.png")
    with av.open(path, "w", format="apng") as c:
      stream = c.add_stream("apng", rate=10)
      stream.width, stream.height, stream.pix_fmt = 24, 16, "rgb24"
      for f in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
          c.mux(packet)
      for packet in stream.encode(None):
        c.mux(packet)
    src = reading.open_source(path)
    self.assertEqual(src.kind, "video")
    np.testing.assert_array_equal(src.read_all(), frames)
    still = self._write(os.path.join(self.dir, "still.PNG"), dt.encode_image(frames[1]))
    src = reading.open_source(still)
    self.assertEqual((src.kind, src.num_frames, src.fps), ("image", 1, reading.DEFAULT_FOLDER_FPS))
    np.testing.assert_array_equal(src.read_all(), frames[1:2])
    # Named like an image but holding a video: read as the video it is.
    video = dt.write_video(os.path.join(self.dir, "v.mp4"), list(frames), codec="libx264", fps=10,
                           audio_seconds=0)
    os.rename(video, os.path.join(self.dir, "v.jpg"))
    src = reading.open_source(os.path.join(self.dir, "v.jpg"))
    self.assertEqual((src.kind, len(src.read_all())), ("video", 3))

  def _write(self, path, data):
    with open(path, "wb") as f:
      f.write(data)
    return path

  def test_names_unlike_the_others_are_frames_and_told(self):
    path = self._folder("shot", self.rng.integers(0, 256, (4, 4, 5, 1), dtype=np.uint8))
    self.assertIsNone(reading.open_source(path).note)
    _write_png(os.path.join(path, "cover.png"), np.zeros((4, 5, 1), np.uint8))
    with self.assertLogs(level="WARNING") as logs:
      src = reading.open_source(path)
    self.assertEqual(src.names, ["00000.png", "00001.png", "00002.png", "00003.png", "cover.png"])
    self.assertEqual(src.note, f"{path}: files named unlike its other frames (00000.png) are "
                     "read as frames too, in name order (1 of 5): cover.png")
    self.assertEqual(logs.output, [f"WARNING:absl:{src.note}"])
    with open(os.path.join(path, "00004.tif"), "wb") as f:
      f.write(b"II*\0")  # a TIFF: not read, named
    with open(os.path.join(path, "notes.txt"), "w") as f:
      f.write("not an image: not named")
    with self.assertLogs(level="WARNING"):
      src = reading.open_source(path)
    self.assertEqual(src.num_frames, 5)
    self.assertEqual(src.note, f"{path}: 1 image in a format frame folders do not read (only "
                     "PNG and JPEG) is not used as a frame: 00004.tif (convert it to PNG); files "
                     "named unlike its other frames (00000.png) are read as frames too, in name "
                     "order (1 of 5): cover.png")
    only = os.path.join(self.dir, "bmp")
    os.makedirs(only)
    for name in ("b10.BMP", "b9.bmp"):
      open(os.path.join(only, name), "wb").close()
    with self.assertRaisesRegex(reading.MediaError, re.escape(
        f"no frames (*.png, *.jpg) in folder {only}; 2 images in a format frame folders do not "
        "read (only PNG and JPEG) are not used as frames: b9.bmp, b10.BMP (convert them to PNG)")):
      reading.open_source(only)
    note = folders.odd_names_note
    self.assertIsNone(note("d", ["a1.png", "b1.png", "c.png"]))  # no pattern most names share
    self.assertEqual(note("d", ["f_1.png", "f_2.png", "f_3.jpg", "f_4.PNG"]),
                     "d: files named unlike its other frames (f_1.png) are read as frames too, "
                     "in name order (1 of 4): f_3.jpg")


class ReadVideoTest(absltest.TestCase):

  def test_mp4(self):
    path = os.path.join(dt.tempdir(self), "v.mp4")
    frames = _gradient_frames(5, 24, 32)
    _make_video(path, frames, fps=12)
    src = reading.open_source(path)
    self.assertEqual((src.kind, src.fps, src.num_frames, src.width, src.height),
                     ("video", 12, 5, 32, 24))
    self.assertTrue(src.has_audio)
    self.assertFalse(src.is_gray)
    got = src.read_all()
    self.assertEqual(got.shape, frames.shape)
    self.assertLess(np.abs(got.astype(int) - frames).mean(), 6)  # lossy codec

  def test_a_truncated_video_reads_its_frames_and_says_it_is_short(self):
    path = os.path.join(dt.tempdir(self), "v.mp4")
    noise = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    _make_video(path, noise, audio_seconds=0,  # frames of similar size; the frame count comes first
                options={"movflags": "faststart"})
    src = reading.open_source(path)
    self.assertEqual(len(src.read_all()), 12)
    self.assertIsNone(src.short_read)
    cut = _cut_copy(path, 0.7)
    src = reading.open_source(cut)
    self.assertEqual(src.num_frames, 12)
    n = len(src.read_all())
    self.assertBetween(n, 5, 10)
    self.assertRegex(src.short_read, f"^{re.escape(cut)}: {n} of the 12 frames its container "
                     r"lists could be decoded; 1 undecodable part\(s\) skipped \(.+\) \(a "
                     r"truncated or damaged file\?\)$")
    self.assertEqual(len(src.read_all()), n)  # told once, read alike

  def test_frames_an_edit_list_hides_are_not_counted(self):
    # A copy trimmed without re-encoding (`ffmpeg -ss 0.12 -c copy`): the file holds 12 frames, its
    # edit list shows the last 9, and the container's count says 12. Players show 9, 9 are read;
    # a warning of "9 of the 12 frames ... (a truncated or damaged file?)" was wrong.
    path = os.path.join(dt.tempdir(self), "trimmed.mp4")
    frames = _gradient_frames(12, 24, 32)
    dt.write_video(path, frames, codec="libx264", fps=25, times=[(i - 3) / 25 for i in range(12)])
    src = reading.open_source(path)
    self.assertEqual(src.num_frames, 9)
    got = src.read_all()
    self.assertLen(got, 9)
    self.assertLess(np.abs(got.astype(int) - frames[3:]).mean(), 6)  # the last 9, in order
    self.assertIsNone(src.short_read)

  def test_hdr_video_is_named_in_a_warning(self):
    # A phone's HDR clip (PQ or HLG) is read as SDR, without tone mapping: washed-out, wrong
    # colours, and nothing said so.
    for trc, name in ((16, "PQ"), (18, "HLG"), (1, None)):
      path = os.path.join(dt.tempdir(self), f"trc{trc}.mp4")
      with av.open(path, "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 24, "yuv420p"
        vs.codec_context.color_trc = trc
        for i, frame in enumerate(_gradient_frames(2, 24, 32)):
          vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
          vf.pts = i
          out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
      src = reading.open_source(path)
      if name is None:
        self.assertIsNone(src.note)
      else:
        self.assertStartsWith(src.note, f"{path} is HDR video ({name}): it is read as SDR, "
                              "without tone mapping")

  def test_interlaced_video_is_named_in_a_warning(self):
    """Old TV and camcorder video is often coded interlaced: its fields woven into each frame comb
    where anything moves, and the colour follows; the note says to deinterlace first."""
    for options, interlaced in (({"x264-params": "tff=1"}, True), ({}, False)):
      path = dt.write_video(os.path.join(dt.tempdir(self), "tv.mkv"), _gradient_frames(3, 24, 32),
                            codec="libx264", options=None, pix_fmt="yuv420p",
                            stream_options=options)
      src = reading.open_source(path)
      if interlaced:
        self.assertStartsWith(src.note, f"{path} is coded interlaced: ")
        self.assertIn("deinterlace it first", src.note)
      else:
        self.assertIsNone(src.note)
      self.assertLen(src.read_all(), 3)  # read as stored

  def test_a_cut_off_matroska_file_says_it_is_short(self):
    # Matroska / WebM list no frame count, but their tracks' DURATION tags.
    path = os.path.join(dt.tempdir(self), "v.mkv")
    noise = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    dt.write_video(path, noise, codec="ffv1", fps=10)
    src = reading.open_source(path)
    self.assertIsNone(src.num_frames)
    self.assertEqual(len(src.read_all()), 20)
    self.assertIsNone(src.short_read)
    cut = _cut_copy(path, 0.5)
    src = reading.open_source(cut)
    n = len(src.read_all())
    self.assertBetween(n, 5, 15)
    self.assertRegex(src.short_read, f"^{re.escape(cut)}: {n} frames \\({n / 10:.2f} s of the "
                     r"2.00 s its container lists\) could be decoded")

  def test_a_rotated_video_reads_upright(self):
    # A phone's portrait video: stored 32 wide and 24 high, shown turned a quarter.
    frames = _gradient_frames(3, 24, 32)
    for rotation, turns in ((90, 1), (180, 2), (270, 3)):
      path = os.path.join(dt.tempdir(self), f"r{rotation}.mp4")
      _make_video(path, frames, audio_seconds=0, rotation=rotation)
      src = reading.open_source(path)
      upright = np.rot90(frames, turns, axes=(1, 2))
      self.assertEqual((src.rotation, src.height, src.width), (rotation, *upright.shape[1:3]))
      got = src.read_all()
      self.assertEqual(got.shape, upright.shape)
      self.assertLess(np.abs(got.astype(int) - upright).mean(), 6)  # lossy codec
    plain = os.path.join(dt.tempdir(self), "plain.mp4")
    _make_video(plain, frames, audio_seconds=0)
    self.assertEqual(reading.open_source(plain).rotation, 0)

  def test_gray_and_16bit_video(self):
    tmp = dt.tempdir(self)
    gray = np.repeat(_gradient_frames(3, 16, 16)[..., :1], 3, -1)
    path = os.path.join(tmp, "g.mkv")
    _make_video(path, gray, audio_seconds=0, codec="ffv1", pix_fmt="gray")
    src = reading.open_source(path)
    self.assertEqual((src.is_gray, src.bit_depth), (True, 8))
    np.testing.assert_array_equal(src.read_all(), gray[..., :1])  # ffv1 is lossless
    path16 = os.path.join(tmp, "g16.mkv")
    _make_video(path16, gray, audio_seconds=0, codec="ffv1", pix_fmt="gray16le")
    src = reading.open_source(path16)
    self.assertEqual((src.is_gray, src.bit_depth), (True, 16))
    self.assertLessEqual(np.abs(src.read_all().astype(int) - gray[..., :1]).max(), 1)


class BadInputTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = dt.tempdir(self)

  def _raises(self, path, pattern):
    with self.assertRaisesRegex(reading.MediaError, pattern) as cm:
      reading.open_source(path)
    self.assertNotIn("\n", str(cm.exception))

  def test_missing(self):
    self._raises(os.path.join(self.dir, "nothing.mp4"), "no such file or folder")

  def test_empty_folder(self):
    os.makedirs(os.path.join(self.dir, "e", "sub"))
    with open(os.path.join(self.dir, "e", "readme.txt"), "w") as f:
      f.write("x")
    self._raises(os.path.join(self.dir, "e"), re.escape("no frames (*.png, *.jpg) in folder"))

  def test_mixed_sizes(self):
    path = os.path.join(self.dir, "m")
    os.makedirs(path)
    _write_png(os.path.join(path, "0.png"), np.zeros((4, 6, 3), np.uint8))
    _write_png(os.path.join(path, "1.png"), np.zeros((4, 7, 3), np.uint8))
    self._raises(path, "frames differ in size .*0.png is 6x4, 1.png is 7x4")

  def test_unreadable_frame(self):
    path = os.path.join(self.dir, "bad")
    os.makedirs(path)
    _write_png(os.path.join(path, "0.png"), np.zeros((4, 6, 3), np.uint8))
    with open(os.path.join(path, "1.png"), "wb") as f:
      f.write(b"not a png at all")
    self._raises(path, "1.png: not a valid PNG or JPEG image")
    # A valid header over corrupt data fails when the frame is decoded.
    with open(os.path.join(path, "1.png"), "wb") as f:
      f.write(writing.encode_png(np.zeros((4, 6, 3), np.uint8))[:40])
    src = reading.open_source(path)
    with self.assertRaisesRegex(reading.MediaError, "cannot decode .*1.png"):
      src.read_all()

  def _jpegs(self):
    """{name: JPEG bytes} of valid files of one 48x64 picture, and the picture."""
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)
    base = dt.encode_image(image, "mjpeg")
    # An EXIF-like APP1 segment holding a whole JPEG (a thumbnail, with its own SOS and EOI).
    app1 = b"Exif\x00\x00" + dt.encode_image(image[::4, ::4], "mjpeg")
    thumb = base[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + base[2:]
    out = {"baseline": base, "thumbnail": thumb,
           "trailing junk": base + b"\xff\xda\x00\x10junk after the end\xff\xd8"}
    try:
      from PIL import Image  # pylint: disable=g-import-not-at-top
    except ImportError:  # matplotlib's dependency; without it, FFmpeg-made files only
      return out, image
    for name, mode, kw in (("progressive", "RGB", {"progressive": True}),
                           ("cmyk", "CMYK", {}),
                           ("restart markers", "RGB", {"restart_marker_blocks": 2})):
      buf = io.BytesIO()
      Image.fromarray(image).convert(mode).save(buf, "JPEG", quality=95, **kw)
      out[name] = buf.getvalue()
    return out, image

  def test_a_truncated_jpeg_is_an_error_and_valid_ones_read(self):
    # FFmpeg's decoder conceals the missing part of a cut-off JPEG without an error.
    jpegs, image = self._jpegs()
    for name, data in jpegs.items():
      path = os.path.join(self.dir, "ok.jpg")
      with open(path, "wb") as f:
        f.write(data)
      self.assertLess(np.abs(reading.read_image(path).astype(int) - image).mean(), 4, name)
      for cut in (len(data) // 2, len(data) - 2):
        if name == "trailing junk":
          cut = min(cut, len(jpegs["baseline"]) - 2)
        with open(path, "wb") as f:
          f.write(data[:cut])
        with self.assertRaisesRegex(
            reading.MediaError, f"^cannot decode {re.escape(path)}: truncated JPEG"):
          reading.read_image(path)
    # In a folder: the header is fine, the frame fails when it is decoded.
    folder = os.path.join(self.dir, "frames")
    os.makedirs(folder)
    for i in range(2):
      with open(os.path.join(folder, f"{i}.jpg"), "wb") as f:
        f.write(jpegs["baseline"][:None if i == 0 else 600])
    src = reading.open_source(folder)
    with self.assertRaisesRegex(reading.MediaError, "1.jpg: truncated JPEG"):
      src.read_all()

  def test_unreadable_video(self):
    path = os.path.join(self.dir, "junk.mp4")
    with open(path, "wb") as f:
      f.write(b"hello world" * 20)
    self._raises(path, "cannot read .*junk.mp4: not a video PyAV can open")
    empty = os.path.join(self.dir, "empty.mp4")
    open(empty, "wb").close()
    self._raises(empty, "^cannot read .*empty.mp4: the file is empty$")
    # A recording cut short before its index (MP4 writes it last, unless made for streaming):
    # no frame can be found without it.
    whole = _make_video(os.path.join(self.dir, "rec.mp4"), _gradient_frames(6, 24, 32))
    cut = _cut_copy(whole, 0.6)
    self._raises(cut, f"^cannot read {re.escape(cut)}: an MP4 / MOV file without its index")
    self.assertEqual(av_frames.open_failure(whole, PermissionError(13, "Permission denied")),
                     "no permission to read it")

  def test_no_video_stream(self):
    path = os.path.join(self.dir, "audio.m4a")
    with av.open(path, "w", format="mp4") as out:
      s = out.add_stream("aac", rate=8000)
      s.layout = "mono"
      af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
      af.sample_rate, af.pts = 8000, 0
      out.mux(s.encode(af))
      out.mux(s.encode(None))
    self._raises(path, "no video stream")

  def test_one_frame_video(self):
    # Readable; the protocol needs two anchors (a one-line ClipTooShortError), the colorize
    # tool's stream takes it as a photo.
    path = os.path.join(self.dir, "one.mp4")
    _make_video(path, _gradient_frames(1, 16, 16), audio_seconds=0)
    src = reading.open_source(path)
    self.assertEqual(src.num_frames, 1)
    model = lambda g: np.zeros(g.shape[:3] + (2,), np.float32)
    with self.assertRaisesRegex(protocol.ClipTooShortError, "at least 2 frames .*, got 1$"):
      protocol.colorize_clip(src.read_all(), model, (17,), 16)
    self.assertLen(list(window_stream.iter_colorize(iter(src), model, 17, 16)), 1)

  def test_unsupported_codec(self):
    # An AVI whose video fourcc no decoder knows: PyAV opens the container but cannot decode it.
    path = os.path.join(self.dir, "v.avi")
    _make_video(path, _gradient_frames(2, 16, 16), audio_seconds=0, codec="mpeg4")
    with open(path, "rb") as f:
      data = f.read()
    self.assertIn(b"FMP4", data)
    with open(path, "wb") as f:
      f.write(data.replace(b"FMP4", b"QQQQ"))
    self._raises(path, "unsupported codec")


if __name__ == "__main__":
  absltest.main()
