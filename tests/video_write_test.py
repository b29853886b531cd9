"""Tests for tcvc_jax/media/writing.py: mp4 / folders out, audio, frame times, errors."""

import ctypes
import fractions
import functools
import hashlib
import os
import platform
import subprocess
import sys
import textwrap

from absl.testing import absltest
import av
import numpy as np
from PIL import Image
from PIL import JpegImagePlugin

from tcvc_jax import atomic
from tcvc_jax.media import reading
from tcvc_jax.media import sound
from tcvc_jax.media import writing

import data_testlib as dt  # tests/, beside this file

# An H.264 video with 0.5 s of AAC audio unless told otherwise.
_make_video = functools.partial(dt.write_video, codec="libx264", fps=12, audio_seconds=0.5)


def _gradient_frames(n, h, w):
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([np.stack([(x * 7 + 20 * t) % 256, (y * 9) % 256, np.full_like(x, 40 * t % 256)],
                            -1) for t in range(n)]).astype(np.uint8)


def _leave_garbage_on_the_heap(seed):
  """Allocates, fills with bytes of `seed` and frees blocks of frame-buffer sizes (glibc)."""
  libc = ctypes.CDLL(None)
  libc.malloc.restype = ctypes.c_void_p
  libc.free.argtypes = (ctypes.c_void_p,)
  rng = np.random.default_rng(seed)
  sizes = rng.integers(500, 300_000, 80)
  blocks = [libc.malloc(int(n)) for n in sizes]
  for b, n, v in zip(blocks, sizes, rng.integers(0, 256, 80), strict=True):
    ctypes.memset(b, int(v), int(n))
  for b in blocks:
    libc.free(b)


class WriteTest(absltest.TestCase):

  def test_the_same_frames_make_the_same_video_whatever_the_heap_held(self):
    # libx264 reads memory it never wrote: without allocator.filled_allocations the six files
    # below came out in 2-4 versions, their later frames up to 16/255 apart (2026-12-06).
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
      self.skipTest("filled allocations are a glibc setting")
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    texture = np.random.default_rng(1).integers(0, 256, (440, 520, 3)).astype(np.float32)
    texture = ndimage.gaussian_filter(texture, (3, 3, 0))
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255
    frames = [np.ascontiguousarray(texture[int(1.3 * t):int(1.3 * t) + 240,
                                           int(2.1 * t):int(2.1 * t) + 320].astype(np.uint8))
              for t in range(30)]
    digests = set()
    for run in range(6):
      path = os.path.join(self.dir, f"run{run}.mp4")
      with writing.VideoWriter(path, fps=25) as w:
        for k, frame in enumerate(frames):
          _leave_garbage_on_the_heap(100 * run + k)
          w.write(frame)
      with open(path, "rb") as f:
        digests.add(hashlib.sha256(f.read()).hexdigest())
    self.assertLen(digests, 1)


  def setUp(self):
    super().setUp()
    self.dir = dt.tempdir(self)

  def _listing(self):
    return sorted(os.listdir(self.dir))

  def _write_and_read_back(self, names, want):
    """Writes three frames named `names` into a folder; checks its file names are `want` and that
    it reads back the frames, in order."""
    frames = np.random.default_rng(len(want)).integers(0, 256, (3, 6, 9, 3), dtype=np.uint8)
    out = os.path.join(self.dir, "out")
    with writing.open_writer(out, names=names) as w:
      for f in frames:
        w.write(f)
    self.assertEqual(sorted(os.listdir(out)), want)
    np.testing.assert_array_equal(reading.open_source(out).read_all(), frames)

  def test_folder_round_trip_and_names(self):
    self._write_and_read_back(["x1.jpg", "x2.jpg", "x3.jpg"], ["x1.png", "x2.png", "x3.png"])
    self.assertEqual(self._listing(), ["out"])  # no temporary left over

  def test_folder_names_never_collide(self):
    # f1.png and f1.jpg would both become f1.png: the second frame overwrote the first.
    self.assertEqual(writing.png_names(["f1.jpg", "f1.png", "f2.png"]),
                     ["f1.jpg.png", "f1.png.png", "f2.png"])
    self.assertEqual(writing.png_names(["a/x1.jpg", "a/x2.jpeg"]), ["x1.png", "x2.png"])
    # Names that differ only in case are one file on a case-insensitive disk.
    self.assertEqual(writing.png_names(["x.PNG", "x.png", "y.png"]),
                     ["00000.png", "00001.png", "00002.png"])
    self._write_and_read_back(["f1.jpg", "f1.png", "f2.png"],
                              ["f1.jpg.png", "f1.png.png", "f2.png"])

  def test_video_round_trip_odd_size(self):
    frames = _gradient_frames(4, 25, 33)
    out = os.path.join(self.dir, "o.mp4")
    with writing.open_writer(out, fps=fractions.Fraction(30000, 1001)) as w:
      for f in frames:
        w.write(f.astype(np.float32) / 255)
    src = reading.open_source(out)
    self.assertEqual((src.fps, src.num_frames, src.width, src.height),
                     (fractions.Fraction(30000, 1001), 4, 33, 25))
    self.assertFalse(src.has_audio)
    self.assertLess(np.abs(src.read_all().astype(int) - frames).mean(), 3)
    # The exact size in 4:2:0, the pixel format players accept (VP9: H.264 4:2:0 needs even sizes).
    with av.open(out) as c:
      stream = c.streams.video[0]
      self.assertEqual((stream.codec_context.name, stream.codec_context.pix_fmt),
                       ("vp9", "yuv420p"))

  def test_the_film_is_read_not_a_thumbnail_stream_before_it(self):
    # A small one-picture video stream (a thumbnail or cover) ahead of the film, as some files
    # have: the largest picture is the film, as the ffmpeg tool picks it.
    path = os.path.join(self.dir, "thumb.mkv")
    frames = _gradient_frames(5, 24, 32)
    with av.open(path, "w") as out:
      thumb = out.add_stream("mjpeg", rate=1)
      thumb.width, thumb.height, thumb.pix_fmt = 16, 16, "yuvj420p"
      film = out.add_stream("libx264", rate=12)
      film.width, film.height, film.pix_fmt = 32, 24, "yuv420p"
      out.mux(thumb.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), "rgb24")))
      out.mux(thumb.encode(None))
      for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts = i
        out.mux(film.encode(vf))
      out.mux(film.encode(None))
    src = reading.open_source(path)
    self.assertEqual((src.width, src.height, src.fps), (32, 24, 12))
    got = src.read_all()
    self.assertEqual(got.shape, frames.shape)
    self.assertLess(np.abs(got.astype(int) - frames).mean(), 6)

  def test_anamorphic_video_keeps_its_pixel_aspect_ratio(self):
    # A 16:9 DVD is stored 720x480 with pixels 32:27 wide; written back without that ratio, it is
    # shown squeezed to 3:2. Here 32x24 pixels of 4:3 make 16:9.
    frames = _gradient_frames(2, 24, 32)
    src_path = os.path.join(self.dir, "dvd.mp4")
    _make_video(src_path, frames, audio_seconds=0, sar=fractions.Fraction(4, 3))
    src = reading.open_source(src_path)
    self.assertEqual(src.sample_aspect_ratio, fractions.Fraction(4, 3))
    for ext in (".mp4", ".mkv", ".mov"):
      # An odd size too (VP9, which Matroska gave no aspect ratio: the picture played squeezed).
      out = os.path.join(self.dir, "odd" + ext)
      with writing.open_writer(out, fps=12, sample_aspect_ratio=src.sample_aspect_ratio) as w:
        w.write(_gradient_frames(1, 25, 33)[0])
      self.assertEqual(reading.open_source(out).sample_aspect_ratio, fractions.Fraction(4, 3), ext)
    for ext in (".mp4", ".mkv"):
      out = os.path.join(self.dir, "out" + ext)
      with writing.open_writer(out, fps=12, sample_aspect_ratio=src.sample_aspect_ratio) as w:
        for f in src.iter_frames(np.uint8):
          w.write(f)
      with av.open(out) as c:
        self.assertEqual(c.streams.video[0].display_aspect_ratio, fractions.Fraction(16, 9), ext)
      self.assertEqual(reading.open_source(out).sample_aspect_ratio, fractions.Fraction(4, 3))
    # Turned a quarter, the pixels' ratio turns too; square pixels and folders read 1.
    turned = os.path.join(self.dir, "turned.mp4")
    _make_video(turned, frames, audio_seconds=0, sar=fractions.Fraction(4, 3), rotation=90)
    self.assertEqual(reading.open_source(turned).sample_aspect_ratio, fractions.Fraction(3, 4))
    plain = os.path.join(self.dir, "plain.mp4")
    _make_video(plain, frames, audio_seconds=0)
    self.assertEqual(reading.open_source(plain).sample_aspect_ratio, 1)

  def test_videos_are_coded_and_tagged_bt709(self):
    # Players read an untagged HD video as BT.709 and FFmpeg's default conversion is BT.601: a red
    # (200, 40, 40) was shown as (213, 55, 37). Every size and codec is coded and tagged BT.709.
    red = np.zeros((2, 36, 64, 3), np.uint8) + np.array([200, 40, 40], np.uint8)
    for name, size in (("h264.mp4", (36, 64)), ("vp9.mp4", (35, 63)), ("h264_444.mov", (35, 63))):
      out = os.path.join(self.dir, name)
      with writing.open_writer(out, fps=12) as w:
        for f in red[:, :size[0], :size[1]]:
          w.write(f)
      with av.open(out) as c:
        frame = next(c.decode(video=0))
      self.assertEqual((frame.colorspace, frame.color_primaries, frame.color_trc,
                        frame.color_range), (1, 1, 1, 1), name)  # BT.709, limited range
      y, cb, cr = (np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:4, :4].mean()
                   for p in frame.planes)
      y, cb, cr = (y - 16) / 219, (cb - 128) / 224, (cr - 128) / 224
      r, b = y + 1.5748 * cr, y + 1.8556 * cb  # the BT.709 decoding a player does
      g = (y - 0.2126 * r - 0.0722 * b) / 0.7152
      np.testing.assert_allclose(np.array([r, g, b]) * 255, [200, 40, 40], atol=3, err_msg=name)

  def test_sound_that_starts_before_the_first_picture_is_kept_in_sync(self):
    # In this MPEG-TS file the pictures start at 1/6 s and the sound at 0.039 s. The output starts
    # where the sound does: its first picture comes as long after the sound's start as in the
    # source (what played with it still does), and no sound is cut (it lost 0.128 s before).
    src_path = os.path.join(self.dir, "rec.ts")
    _make_video(src_path, _gradient_frames(12, 24, 32), fps=12)
    first_pts = lambda c, **kw: [float(p.pts * p.time_base) for p in c.demux(**kw)
                                 if p.pts is not None]
    with av.open(src_path) as c:
      v0 = min(first_pts(c, video=0))
    with av.open(src_path) as c:
      src_audio = first_pts(c, audio=0)
    self.assertGreater(v0, min(src_audio) + 0.1)  # the case at hand
    base = min(src_audio)
    for ext in (".mp4", ".mkv"):
      out = os.path.join(self.dir, "out" + ext)
      src = reading.open_source(src_path)
      with writing.open_writer(out, fps=src.fps, audio_from=src_path,
                               time_base=src.time_base) as w:
        for i, f in enumerate(src.iter_frames(np.uint8)):
          w.write(f, time=src.frame_times[i])  # (known once the frame is read)
      with av.open(out) as c:
        got = first_pts(c, audio=0)
      with av.open(out) as c:
        got_v0 = min(first_pts(c, video=0))
      np.testing.assert_allclose(got, [t - base for t in src_audio][:len(got)], atol=2e-3,
                                 err_msg=ext)
      self.assertGreaterEqual(len(got), len(src_audio) - 1, ext)
      self.assertAlmostEqual(got_v0, v0 - base, delta=2e-3, msg=ext)

  def test_sound_listed_late_in_a_matroska_file_is_kept_whole(self):
    """Pictures from 1 s to 31 s, sound from 0 s, in an .mkv muxed pictures first, whose audio
    stream FFmpeg lists as starting at 1 s (its probe sees pictures only): an .mp4 output lost the
    first second of its sound."""
    src_path = os.path.join(self.dir, "late.mkv")
    with av.open(src_path, "w") as out:
      video = out.add_stream("libx264", rate=10)
      video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
      audio = out.add_stream("aac", rate=16000)
      for i in range(300):
        vf = av.VideoFrame.from_ndarray(np.full((24, 32, 3), i % 256, np.uint8), format="rgb24")
        vf.pts, vf.time_base = 10 + i, fractions.Fraction(1, 10)
        for pkt in video.encode(vf):
          out.mux(pkt)
      for pkt in video.encode():
        out.mux(pkt)
      for pos in range(0, 32 * 16000, 1024):  # 32 s of a tone
        t = np.arange(pos, pos + 1024) / 16000
        af = av.AudioFrame.from_ndarray(np.sin(2 * np.pi * 440 * t).astype(np.float32)[None],
                                        format="fltp", layout="mono")
        af.sample_rate, af.pts = 16000, pos
        for pkt in audio.encode(af):
          out.mux(pkt)
      for pkt in audio.encode():
        out.mux(pkt)
    with av.open(src_path) as c:
      self.assertGreater(c.streams.audio[0].start_time * c.streams.audio[0].time_base, 0.9)
      lead = 1 - next(p.pts * p.time_base for p in c.demux(audio=0) if p.pts is not None)
    out_path = os.path.join(self.dir, "out.mp4")
    src = reading.open_source(src_path)
    with writing.open_writer(out_path, fps=src.fps, audio_from=src_path,
                             time_base=src.time_base) as w:
      for i, f in enumerate(src.iter_frames(np.uint8)):
        w.write(f, time=src.frame_times[i])
    with av.open(out_path) as c:
      sound = [p.pts * p.time_base for p in c.demux(audio=0) if p.pts is not None]
    with av.open(out_path) as c:
      first_picture = min(p.pts * p.time_base for p in c.demux(video=0) if p.pts is not None)
    self.assertGreater(float(max(sound) - min(sound)), 31.9)  # all 32 s (it kept 31 s)
    self.assertAlmostEqual(float(first_picture - min(sound)), float(lead), delta=2e-3)  # in sync

  def test_a_variable_frame_rate_keeps_its_times(self):
    # A phone in low light or a screen recording: frames 1/30 s apart, then 1/5 s, then 1/30 s.
    # Written at an even 1 / (average rate), frame 10 came 0.55 s late against the sound; the
    # source's times are read and written back as they are.
    third, fifth = fractions.Fraction(1, 30), fractions.Fraction(1, 5)
    times = [i * third for i in range(4)] + [3 * third + i * fifth for i in range(1, 5)]
    times += [times[-1] + i * third for i in range(1, 4)]
    frames = _gradient_frames(len(times), 24, 32)
    src_path = os.path.join(self.dir, "vfr.mp4")
    _make_video(src_path, frames, times=times)
    src = reading.open_source(src_path)
    for _ in range(2):  # every pass gives the times of the frames it yielded
      self.assertLen(src.read_all(), len(times))
      self.assertEqual(src.frame_times, times)
    for ext, tick in ((".mp4", fractions.Fraction(0)), (".mkv", fractions.Fraction(1, 1000))):
      out = os.path.join(self.dir, "out" + ext)
      with writing.open_writer(out, fps=src.fps, audio_from=src_path,
                               time_base=src.time_base) as w:
        for f, t in zip(src.iter_frames(np.uint8), src.frame_times, strict=True):
          w.write(f, time=t)
      got = reading.open_source(out)
      self.assertLen(got.read_all(), len(times), ext)
      for a, b in zip(got.frame_times, times, strict=True):
        self.assertLessEqual(abs(a - b), tick / 2, ext)
    # Frames without times are one period apart, a time that does not move forward is put just
    # after the previous frame, and folders keep no times.
    out = os.path.join(self.dir, "uneven.mp4")
    tb = fractions.Fraction(1, 1000)
    with writing.open_writer(out, fps=10, time_base=tb) as w:
      for f, t in zip(frames, (None, None, fractions.Fraction(1, 2), 0.5, 0.25, None),
                      strict=False):
        w.write(f, time=t)
    got = reading.open_source(out)
    got.read_all()
    self.assertEqual(got.frame_times, [0, tb * 100, tb * 500, tb * 501, tb * 502, tb * 602])
    folder = os.path.join(self.dir, "frames")
    with writing.open_writer(folder) as w:
      w.write(frames[0], time=0.5)
    self.assertIsNone(reading.open_source(folder).frame_times)

  def test_audio_is_copied(self):
    src_path = os.path.join(self.dir, "src.mp4")
    _make_video(src_path, _gradient_frames(6, 24, 32), fps=12)
    src = reading.open_source(src_path)
    out = os.path.join(self.dir, "out.mp4")
    with writing.open_writer(out, fps=src.fps, audio_from=src_path) as w:
      for f in src.iter_frames(np.uint8):
        w.write(255 - f)
    with av.open(out) as c:
      self.assertEqual([s.type for s in c.streams], ["video", "audio"])
      self.assertEqual(c.streams.video[0].average_rate, 12)
      self.assertEqual(c.streams.audio[0].codec_context.name, "aac")
      got = [(bytes(p), p.pts) for p in c.demux(audio=0) if p.size]
    with av.open(src_path) as c:
      want = [(bytes(p), p.pts) for p in c.demux(audio=0) if p.size]
    self.assertNotEmpty(want)
    self.assertEqual(got, want)  # same packets, same timestamps: remuxed, not re-encoded

  def test_sound_the_container_cannot_hold_is_re_encoded(self):
    # An old camera's AVI with IMA ADPCM or 8-bit PCM sound: an mp4 cannot hold it copied (colorize
    # refused the whole video); it is re-encoded as AAC, and the writer's notes say so. Stereo
    # 16-bit PCM at 6000 Hz: its layout has no name, which mp4 refuses only at the end of the file
    # (the run was lost after its last frame), and AAC has no 6000 Hz (refused): re-encoded at
    # 7350 Hz. 16-bit PCM at 48 kHz: FFmpeg copies it into an mp4, whose sound then does not play
    # in browsers or QuickTime: re-encoded too.
    for codec, rate, layout, out_rate, how in (
        ("adpcm_ima_wav", 8000, "mono", 8000, "AAC"),
        ("pcm_u8", 8000, "mono", 8000, "AAC"),
        ("pcm_s16le", 6000, "stereo", 7350, "AAC at 7350 Hz"),
        ("pcm_s16le", 48000, "mono", 48000, "AAC")):
      src_path = os.path.join(self.dir, f"camera_{codec}_{rate}.avi")
      _make_video(src_path, _gradient_frames(6, 24, 32), codec="mjpeg", pix_fmt="yuvj420p",
                  audio_codec=codec, audio_rate=rate, audio_layout=layout)
      out = os.path.join(self.dir, f"out_{codec}_{rate}.mp4")
      src = reading.open_source(src_path)
      with writing.open_writer(out, fps=src.fps, audio_from=src_path) as w:
        for f in src.iter_frames(np.uint8):
          w.write(f)
      why = ("would not play from a .mp4 file" if codec.startswith("pcm_") else
             "cannot be copied into a .mp4 file")
      self.assertEqual(w.notes, [f"the {codec} audio of {src_path} {why}: re-encoded as {how}"
                                 + (" (a .mov or .mkv output keeps it as it is)"
                                    if codec.startswith("pcm_") else "")])
      with av.open(out) as c:
        a = c.streams.audio[0]
        self.assertEqual((a.codec_context.name, a.rate, a.channels),
                         ("aac", out_rate, 2 if layout == "stereo" else 1))
        samples = sum(f.samples for f in c.decode(audio=0))
      self.assertAlmostEqual(samples / out_rate, 0.5, delta=0.15, msg=codec)  # give or take priming
    for ext in (".mkv", ".mov"):  # they hold 16-bit PCM, and players play it: copied
      with writing.open_writer(os.path.join(self.dir, "out" + ext), fps=12,
                               audio_from=src_path) as w:
        w.write(_gradient_frames(1, 24, 32)[0])
      self.assertEqual(w.notes, [], ext)
      with av.open(os.path.join(self.dir, "out" + ext)) as c:
        self.assertEqual(c.streams.audio[0].codec_context.name, "pcm_s16le", ext)

  def test_a_recording_cut_before_a_key_frame_keeps_its_sound_in_sync(self):
    # The first 4 video packets of this MPEG-TS file come before a key frame and decode to
    # nothing: the reader's frame times start at the first picture that decodes, 1/3 s after the
    # stream's listed start, and the sound (which starts with the stream) must be placed from
    # there too (it was 333 ms early).
    src_path = os.path.join(self.dir, "cut.ts")
    with av.open(src_path, "w") as out:
      vs = out.add_stream("libx264", rate=12)
      vs.width, vs.height, vs.pix_fmt = 32, 24, "yuv420p"
      vs.options = {"g": "8", "bf": "0", "keyint_min": "8", "sc_threshold": "0"}
      aus = out.add_stream("mp2", rate=22050)
      aus.layout = "mono"
      packets = []
      for i, frame in enumerate(_gradient_frames(16, 24, 32)):
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = i
        packets += vs.encode(vf)
      packets = packets[4:] + vs.encode(None)  # the recording starts 4 frames before frame 8
      for k in range(0, 22050, 1152):
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp",
                                        layout="mono")
        af.sample_rate, af.pts = 22050, k
        packets += aus.encode(af)
      out.mux(packets + aus.encode(None))
    with av.open(src_path) as c:
      first_picture = next(f.pts * f.time_base for f in c.decode(video=0))
      listed = c.streams.video[0].start_time * c.streams.video[0].time_base
      audio = c.streams.audio[0].start_time * c.streams.audio[0].time_base
    self.assertAlmostEqual(float(first_picture - listed), 1 / 3, delta=0.01)  # the case at hand
    got = sound.SourceSound(src_path, "mp4", ".mp4")
    got.close()
    self.assertEqual(got.video_offset, first_picture - min(first_picture, audio))

  def test_the_films_tags_are_kept_and_dropped_streams_named(self):
    src_path = os.path.join(self.dir, "film.mkv")
    _make_video(src_path, _gradient_frames(3, 24, 32), audio_tracks=2,
                tags={"title": "Family film 1962"})
    tags, note = sound.describe_source(src_path)
    self.assertEqual(tags, {"title": "Family film 1962"})
    self.assertEqual(note, f"{src_path}: its 1 further audio track is not kept")
    plain = _make_video(os.path.join(self.dir, "plain.mp4"), _gradient_frames(3, 24, 32))
    self.assertEqual(sound.describe_source(plain), ({}, None))
    out = os.path.join(self.dir, "out.mp4")
    with writing.open_writer(out, fps=12, audio_from=src_path, tags=tags) as w:
      w.write(_gradient_frames(1, 24, 32)[0])
    with av.open(out) as c:
      self.assertEqual(c.metadata.get("title"), "Family film 1962")
      self.assertLen(c.streams.audio, 1)

  def test_no_overwrite_unless_asked(self):
    out = os.path.join(self.dir, "o.mp4")
    frame = np.zeros((8, 8, 3), np.uint8)
    with writing.open_writer(out, fps=5) as w:
      w.write(frame)
    with self.assertRaisesRegex(reading.MediaError, "output exists"):
      writing.open_writer(out, fps=5)
    with writing.open_writer(out, fps=5, overwrite=True) as w:
      w.write(frame)
      w.write(frame)
    self.assertEqual(reading.open_source(out).num_frames, 2)
    folder = os.path.join(self.dir, "f")
    for n in (1, 2):
      with writing.open_writer(folder, overwrite=True) as w:
        for _ in range(n):
          w.write(frame)
    self.assertLen(os.listdir(folder), 2)
    with self.assertRaisesRegex(reading.MediaError, "output exists"):
      writing.open_writer(folder)
    self.assertEqual(self._listing(), ["f", "o.mp4"])
    # --overwrite replaces an earlier folder of frames, never a folder (or file) of the user's
    # that shares the name: its other files would go with it.
    with open(os.path.join(folder, "notes.txt"), "w") as f:
      f.write("mine")
    with self.assertRaisesRegex(atomic.NotReplaceableError, r"f holds more than PNG frames "
                                r"\(notes.txt\)"):
      writing.open_writer(folder, overwrite=True)
    plain = os.path.join(self.dir, "plain")  # a file without an extension: a folder's name
    with open(plain, "w") as f:
      f.write("mine")
    with self.assertRaisesRegex(atomic.NotReplaceableError, "plain exists and is not a folder"):
      writing.open_writer(plain, overwrite=True)
    os.makedirs(os.path.join(self.dir, "v.mp4"))  # a folder where a video is to go
    with open(os.path.join(self.dir, "v.mp4", "notes.txt"), "w") as f:
      f.write("mine")
    with self.assertRaisesRegex(reading.MediaError, "v.mp4 is a folder with files in it"):
      writing.open_writer(os.path.join(self.dir, "v.mp4"), fps=5, overwrite=True)
    self.assertEqual(sorted(os.listdir(folder)), ["00000.png", "00001.png", "notes.txt"])
    self.assertEqual(os.listdir(os.path.join(self.dir, "v.mp4")), ["notes.txt"])
    self.assertEqual(self._listing(), ["f", "o.mp4", "plain", "v.mp4"])

  def test_failed_write_leaves_nothing(self):
    for name in ("o.mp4", "frames"):
      with self.assertRaisesRegex(RuntimeError, "boom"):
        with writing.open_writer(os.path.join(self.dir, name), fps=5) as w:
          w.write(np.zeros((8, 8, 3), np.uint8))
          raise RuntimeError("boom")
    self.assertEqual(self._listing(), [])

  def test_a_full_disk_names_the_output(self):
    """A write that fails mid-way (a full disk; here the file size limit, EFBIG) is one line naming
    the output: the video's said its hidden temporary file, the folder's no path at all."""
    script = textwrap.dedent(f"""
        import os, resource, signal
        import numpy as np
        from tcvc_jax.media import reading, writing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))
        noise = np.random.default_rng(0).integers(0, 256, (40, 128, 128, 3), dtype=np.uint8)
        for name in ("o.mp4", "frames"):
          try:
            with writing.open_writer(os.path.join({self.dir!r}, name), fps=5) as w:
              for frame in noise:
                w.write(frame)
          except reading.MediaError as e:
            print(e)
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.splitlines(), [
        f"cannot write {os.path.join(self.dir, n)}: File too large" for n in ("o.mp4", "frames")])
    self.assertEqual(self._listing(), [])

  def test_an_image_output_holds_one_frame(self):
    """A photo's output: PNG (8 or 16-bit, exact), JPEG (8-bit, chroma at full resolution); a
    second frame is refused and nothing is left; an existing image is replaced only when asked."""
    frame = _gradient_frames(1, 24, 40)[0]
    deep = frame.astype(np.uint16) * 257 + 3
    for name, x, dtype in (("o.png", frame, np.uint8), ("d.png", deep, None),
                           ("o.jpg", frame, np.uint8), ("o.JPEG", frame, np.uint8)):
      path = os.path.join(self.dir, name)
      with writing.open_writer(path) as w:
        self.assertIsInstance(w, writing.ImageWriter)
        w.write(x)
      got = reading.open_source(path).read_all(dtype)[0]
      if name.endswith(".png"):
        np.testing.assert_array_equal(got, x)
      else:
        self.assertLess(np.abs(got.astype(int) - x).mean(), 2, name)
        with Image.open(path) as im:
          self.assertEqual(JpegImagePlugin.get_sampling(im), 0)  # 4:4:4
    self.assertEqual(self._listing(), ["d.png", "o.JPEG", "o.jpg", "o.png"])
    for name in ("o.png", "o.jpg"):
      with self.assertRaisesRegex(reading.MediaError, "output exists"):
        writing.open_writer(os.path.join(self.dir, name))
    with writing.open_writer(os.path.join(self.dir, "o.png"), overwrite=True) as w:
      w.write(frame[::-1])
    np.testing.assert_array_equal(reading.open_source(os.path.join(self.dir, "o.png")).read_all(),
                                  frame[None, ::-1])
    for name, frames, error in (
        ("two.png", [frame, frame], "two.png is an image file, which holds one frame, and the "
         "input has more: give a video file or a folder"),
        ("deep.jpg", [deep], "a JPEG holds 8 bits per sample"),
        ("none.png", [], "no frame was written")):
      with self.assertRaisesRegex(reading.MediaError, error):
        with writing.open_writer(os.path.join(self.dir, name)) as w:
          for x in frames:
            w.write(x)
    self.assertEqual(self._listing(), ["d.png", "o.JPEG", "o.jpg", "o.png"])

  def test_writer_errors(self):
    frame = np.zeros((8, 8, 3), np.uint8)
    with self.assertRaisesRegex(reading.MediaError, "unsupported output"):
      writing.open_writer(os.path.join(self.dir, "o.gif"))
    with self.assertRaisesRegex(reading.MediaError, "does not exist"):
      writing.open_writer(os.path.join(self.dir, "missing", "o.mp4"))
    with self.assertRaisesRegex(reading.MediaError, "unsupported codec"):
      writing.VideoWriter(os.path.join(self.dir, "o.mp4"), 5, codec="no-such-codec")
    with self.assertRaisesRegex(reading.MediaError, "no frames were written"):
      with writing.open_writer(os.path.join(self.dir, "o.mp4"), fps=5):
        pass
    with self.assertRaisesRegex(reading.MediaError, "the video is 8x8"):
      with writing.open_writer(os.path.join(self.dir, "o.mp4"), fps=5) as w:
        w.write(frame)
        w.write(np.zeros((6, 8, 3), np.uint8))
    self.assertEqual(self._listing(), [])


if __name__ == "__main__":
  absltest.main()
