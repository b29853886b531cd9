"""Tests for tcvc_jax/colorize.py: the streaming colorize CLI on videos and frame folders.

A tiny random TCVC (classical flow) runs at network size 32 with interval 4, on 40x56 clips whose
lengths reuse the same few window shapes, so XLA compiles little.
"""

import fractions
import functools
import os
import pathlib
import subprocess
import sys

import av
import jax
import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax import colorize
from tcvc_jax import converted
from tcvc_jax import porting
from tcvc_jax import streaming
from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.media import reading
from tcvc_jax.media import writing

import data_testlib as dt
import tiny
import xla_flags

torch = pytest.importorskip("torch")

H, W = 40, 56
ARGS = ("--size", "32", "--interval", "4")


@pytest.fixture(scope="module")
def tiny_sd():
  model = tiny.tiny_model()
  return porting.flax_to_torch(jax.tree_util.tree_map(np.asarray, tiny.tiny_variables(model)))


@pytest.fixture(scope="module")
def checkpoint(tiny_sd, tmp_path_factory):
  """A converted tiny checkpoint; loaded once (jit caches live on the Colorizer) for all tests."""
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny")
  variables, _ = porting.torch_to_flax(tiny_sd)
  converted.save_converted(path, variables, "tcvc", tiny.TINY_SPEC)
  return path


@pytest.fixture(scope="module")
def _loaded():
  return {}


@pytest.fixture(autouse=True)
def _cached_loader(monkeypatch, checkpoint, _loaded):
  loaded = _loaded
  real = api.load

  def load(path, *args, **kwargs):
    if os.fspath(path) != checkpoint:
      return real(path, *args, **kwargs)
    if checkpoint not in loaded:
      loaded[checkpoint] = real(path, *args, **kwargs)
    return loaded[checkpoint]

  monkeypatch.setattr(api, "load", load)
  yield


# --------------------------------------------------------------------------------------------------
# Synthetic inputs
# --------------------------------------------------------------------------------------------------


def _texture(seed):
  """Smooth random RGB texture of 3x the frame size, values in [0, 1]."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:3 * H, 0:3 * W].astype(np.float64)
  chans = []
  for _ in range(3):
    t = sum(np.sin(rng.uniform(0.05, 0.3) * x + rng.uniform(0.05, 0.3) * y + rng.uniform(0, 6))
            for _ in range(4))
    chans.append((t - t.min()) / (t.max() - t.min()))
  return np.stack(chans, -1) * rng.uniform(0.5, 0.9) + rng.uniform(0, 0.1)


def _shot(seed, n, dx=2, dy=1):
  """n uint8 RGB frames panning over one texture."""
  tex = _texture(seed)
  return [np.round(tex[H + dy * i:2 * H + dy * i, W + dx * i:2 * W + dx * i] * 255).astype(np.uint8)
          for i in range(n)]


def _folder(path, frames, fmt=None):
  os.makedirs(path)
  for i, f in enumerate(frames):
    with open(os.path.join(path, f"f{i:03d}.png"), "wb") as fh:
      fh.write(writing.encode_png(fmt(f) if fmt else f))
  return str(path)


# An H.264 video with 1 s of AAC audio unless told otherwise.
_video = functools.partial(dt.write_video, codec="libx264", fps=12, audio_seconds=1.0)


def _run(capsys, *argv):
  """colorize.main in this process: (exit status, stdout, stderr)."""
  rc = colorize.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return rc, out, err


def _read(path):
  return reading.open_source(path).read_all(np.uint8)


# --------------------------------------------------------------------------------------------------
# Working runs
# --------------------------------------------------------------------------------------------------


def test_mp4_with_audio_and_overwrite(checkpoint, tmp_path, capsys):
  src = _video(tmp_path / "in.mp4", _shot(1, 11))
  out = tmp_path / "out.mp4"
  rc, stdout, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS)
  assert rc == 0, stderr
  assert "frame/s" in stderr  # the progress bar
  assert "11 frames" in stdout
  with av.open(str(out)) as c:
    assert [s.type for s in c.streams] == ["video", "audio"]
    v = c.streams.video[0]
    assert v.average_rate == 12
    assert sum(1 for _ in c.decode(video=0)) == 11
  with av.open(str(out)) as c, av.open(src) as s:  # audio copied packet for packet
    got = [bytes(p) for p in c.demux(audio=0) if p.size]
    want = [bytes(p) for p in s.demux(audio=0) if p.size]
  assert got == want
  assert _read(str(out)).shape == (11, H, W, 3)

  before = os.path.getmtime(out)
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS)
  assert rc == 1
  assert stderr.strip().splitlines() == [stderr.strip()]
  assert stderr.startswith("error: output exists")
  assert os.path.getmtime(out) == before
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS, "--overwrite",
                       "--quiet")
  assert rc == 0, stderr
  assert stderr == ""
  assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mp4"]  # no temporary files left


def test_a_truncated_video_is_colorized_as_far_as_it_reads_and_told(checkpoint, tmp_path, capsys):
  # The container (moov at the front) lists 11 frames; the cut-off stream decodes fewer, and
  # FFmpeg's threaded decoder ends quietly there. The audio into a frame folder is told too.
  whole = _video(tmp_path / "whole.mp4", _shot(5, 11), options={"movflags": "faststart"})
  with open(whole, "rb") as f:
    data = f.read()
  src = tmp_path / "cut.mp4"
  src.write_bytes(data[:int(len(data) * 0.7)])
  rc, stdout, stderr = _run(capsys, src, tmp_path / "out", "--checkpoint", checkpoint, *ARGS,
                            "--quiet")
  assert rc == 0, stderr
  n = len(os.listdir(tmp_path / "out"))
  assert 2 <= n < 11 and f"{n} frames" in stdout
  lines = stderr.splitlines()
  assert len(lines) == 2, stderr
  assert lines[0] == f"warning: the audio of {src} is not kept in a frame folder"
  assert lines[1].startswith(f"warning: {src}: {n} of the 11 frames its container lists could be "
                             "decoded"), lines[1]
  assert lines[1].endswith("(a truncated or damaged file?); colorized those"), lines[1]


def test_a_rotated_phone_video_comes_out_upright(checkpoint, tmp_path, capsys):
  # Stored W x H with a display rotation of 90: read, colorized and written as shown (H x W), as
  # ffmpeg converts such a file; the output carries no rotation.
  frames = [np.ascontiguousarray(np.rot90(f, -1)) for f in _shot(6, 6)]  # stored turned back
  src = _video(tmp_path / "phone.mp4", frames, audio_seconds=0, rotation=90)
  out = tmp_path / "out.mp4"
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS, "--quiet")
  assert rc == 0, stderr
  with av.open(str(out)) as c:
    first = next(c.decode(video=0))
    assert (first.width, first.height, first.rotation) == (W, H, 0)
    assert c.streams.video[0].sample_aspect_ratio in (None, 1)  # square pixels stay square
  l_out = protocol.frames_to_l(_read(str(out)))
  l_in = protocol.frames_to_l(np.stack(_shot(6, 6)))  # the upright frames
  assert np.abs(l_out - l_in).mean() < 0.03


def test_a_variable_frame_rate_video_stays_in_sync(checkpoint, tmp_path, capsys):
  # Frames 1/24 s apart, then 1/4 s, then 1/24 s (a phone in low light): each colorized frame is
  # shown when its source frame was, against the same sound; at an even rate, frame 4 was late.
  fast, slow = fractions.Fraction(1, 24), fractions.Fraction(1, 4)
  times = [0, fast, 2 * fast, 2 * fast + slow, 2 * fast + 2 * slow, 3 * fast + 2 * slow,
           4 * fast + 2 * slow, 5 * fast + 2 * slow]
  src = _video(tmp_path / "vfr.mp4", _shot(8, len(times)), times=times)
  out = tmp_path / "out.mp4"
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS, "--quiet")
  assert rc == 0, stderr
  got = reading.open_source(str(out))
  assert got.has_audio and len(got.read_all()) == len(times)
  assert got.frame_times == times
  # A rate asked for is a rate given: evenly spaced frames.
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS, "--quiet", "--fps",
                       "10", "--overwrite")
  assert rc == 0, stderr
  got = reading.open_source(str(out))
  got.read_all()
  assert got.fps == 10 and got.frame_times == [fractions.Fraction(i, 10) for i in range(len(times))]
  # The video's length changed, so its sound is not copied out of sync, and the user is told.
  assert not got.has_audio
  assert "warning: the audio of" in stderr and "fps=10.0 re-times its frames" in stderr


def test_an_anamorphic_video_keeps_its_shape(checkpoint, tmp_path, capsys):
  # Pixels 4:3 wide (as a 16:9 DVD's 32:27): the output is shown at the source's shape.
  src = _video(tmp_path / "dvd.mkv", _shot(7, 6), audio_seconds=0, sar=fractions.Fraction(4, 3))
  out = tmp_path / "out.mp4"
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS, "--quiet")
  assert rc == 0, stderr
  with av.open(str(out)) as c:
    assert c.streams.video[0].display_aspect_ratio == fractions.Fraction(4 * W, 3 * H)


@pytest.mark.parametrize("kind", ["rgba8", "gray16"])
def test_png_folders(kind, checkpoint, tmp_path, capsys):
  """RGBA and 16-bit PNG folders work: same names, lightness kept, colour added."""
  frames = _shot(2, 11)

  def fmt(f):
    if kind == "rgba8":
      return np.concatenate([f, np.full(f.shape[:2] + (1,), 128, np.uint8)], -1)
    return (f.mean(-1, keepdims=True) * 257).astype(np.uint16)

  src = _folder(tmp_path / "in", frames, fmt)
  out = tmp_path / "out"
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS, "--quiet")
  assert rc == 0, stderr
  assert sorted(os.listdir(out)) == sorted(os.listdir(src))
  got = _read(str(out))
  assert got.shape == (11, H, W, 3)
  assert np.abs(got.astype(int) - np.roll(got, 1, -1)).max() > 0  # not gray
  l_in = protocol.frames_to_l(np.stack([fmt(f) for f in frames]))
  l_out = protocol.frames_to_l(got)
  assert np.abs(l_out - l_in).mean() < 0.02  # normalised L: 1 = 100 L* units


def test_a_16_bit_source_keeps_its_depth_in_a_frame_folder(checkpoint, tmp_path, capsys):
  """A 16-bit source gives 16-bit PNGs (more than 256 steps per channel), which round to the 8-bit
  output; a video output stays 8-bit and says so; --bit-depth 8 asks for 8-bit PNGs."""
  ramp = np.linspace(0, 1, W)[None, :] * np.linspace(0.3, 1, H)[:, None]  # 2240 distinct levels
  frames = [np.round(np.clip(ramp + 0.002 * i, 0, 1) * 65535).astype(np.uint16)[..., None]
            for i in range(11)]
  src = _folder(tmp_path / "in", frames)
  runs = {}
  for name, flags in (("deep", ()), ("eight", ("--bit-depth", "8")), ("v.mkv", ()),
                      ("v8.mkv", ("--bit-depth", "8"))):
    rc, stdout, stderr = _run(capsys, src, tmp_path / name, "--checkpoint", checkpoint, *ARGS,
                              "--quiet", *flags)
    assert rc == 0, stderr
    runs[name] = (stdout, stderr)
  assert "11 frames (16-bit PNG) in" in runs["deep"][0]
  assert "16-bit" not in runs["eight"][0] and runs["eight"][1] == ""
  assert runs["v.mkv"][1] == (f"warning: {src} has 16-bit samples; the video is written at 8 "
                              "bits (a frame folder output gets 16-bit PNGs)\n")
  assert runs["v8.mkv"][1] == ""  # 8 bits asked for: nothing to say
  deep = reading.open_source(str(tmp_path / "deep")).read_all(None)
  eight = reading.open_source(str(tmp_path / "eight")).read_all(None)
  assert (deep.dtype, eight.dtype, deep.shape) == (np.uint16, np.uint8, (11, H, W, 3))
  assert min(len(np.unique(deep[..., c])) for c in range(3)) > 256
  assert np.abs((deep.astype(int) + 128) // 257 - eight).max() <= 1


def test_output_bit_depth_in_python(checkpoint, tmp_path):
  """colorize_frames yields uint16 frames for bit_depth=16 (x * 257 of the 8-bit values, rounded
  once); other depths are refused before any frame is read."""
  model = api.load(checkpoint)
  frames = _shot(6, 6)
  got8 = list(streaming.colorize_frames(frames, model, 4, 32))
  got16 = list(streaming.colorize_frames(frames, model, 4, 32, bit_depth=16))
  assert got16[0].dtype == np.uint16 and got8[0].dtype == np.uint8
  assert np.abs((np.stack(got16).astype(int) + 128) // 257 - np.stack(got8)).max() <= 1
  # A checkpoint path, as colorize_file takes (it failed: 'str' object has no attribute ...).
  for path in (checkpoint, pathlib.Path(checkpoint)):
    np.testing.assert_array_equal(np.stack(list(streaming.colorize_frames(frames, path, 4, 32))),
                                  np.stack(got8))
  np.testing.assert_array_equal(
      protocol.to_uint16_round(np.array([-3, 0, 1, 127.5, 255, 300], np.float32)),
      [0, 0, 257, 32768, 65535, 65535])
  for bad in (12, True, "16", 16.0):
    with pytest.raises(streaming.UsageError, match="bit depth must be 8 or 16"):
      streaming.colorize_frames(iter(frames), model, 4, 32, bit_depth=bad)
  for out, kind in (("out.mp4", "a video"), ("out.jpg", "a JPEG")):
    with pytest.raises(streaming.UsageError, match="bit depth 16 is for a frame folder or .png "
                       f"output: {out} is {kind}, written at 8 bits"):
      streaming.colorize_file("in", out, model, bit_depth=16)
  with pytest.raises(reading.MediaError, match="no such file"):  # a PNG takes 16 bits
    streaming.colorize_file(str(tmp_path / "in"), tmp_path / "out.png", model, bit_depth=16)


def test_a_stray_image_in_a_frame_folder_is_a_frame_and_told(checkpoint, tmp_path, capsys):
  src = _folder(tmp_path / "in", _shot(4, 6))
  with open(os.path.join(src, "cover.png"), "wb") as f:
    f.write(writing.encode_png(_shot(5, 1)[0]))
  rc, _, stderr = _run(capsys, src, tmp_path / "out", "--checkpoint", checkpoint, *ARGS,
                       "--quiet")
  assert rc == 0, stderr
  assert len(os.listdir(tmp_path / "out")) == 7
  assert stderr == (f"warning: {src}: files named unlike its other frames (f000.png) are read as "
                    "frames too, in name order (1 of 7): cover.png\n")


def test_a_photo_is_colorized_by_the_anchor_colorizer(checkpoint, tmp_path, capsys):
  """One image (or a 1-frame video) is colorized as a window of that frame twice, whose first
  output is the anchor colorizer's; written as an image, a 1-frame folder or a 1-frame video."""
  photo = _shot(8, 1)[0]
  src_png, src_jpg = str(tmp_path / "photo.png"), str(tmp_path / "photo.jpg")
  for path, codec in ((src_png, "png"), (src_jpg, "mjpeg")):
    with open(path, "wb") as f:
      f.write(dt.encode_image(photo, codec))
  twice = _folder(tmp_path / "twice", [photo, photo])
  rc, _, stderr = _run(capsys, twice, tmp_path / "twice_out", "--checkpoint", checkpoint, *ARGS,
                       "--quiet")
  assert rc == 0, stderr
  want = _read(str(tmp_path / "twice_out"))[0]
  assert np.abs(want.astype(int) - np.roll(want, 1, -1)).max() > 8  # colour, not gray
  video = _video(tmp_path / "one.mp4", [photo], audio_seconds=0)
  for src, out in ((src_png, "c.png"), (src_png, "c.jpg"), (src_png, "c"), (src_jpg, "cj.png"),
                   (video, "c.mp4")):
    rc, stdout, stderr = _run(capsys, src, tmp_path / out, "--checkpoint", checkpoint, *ARGS,
                              "--quiet")
    assert (rc, stderr) == (0, ""), (out, stderr)
    assert stdout.startswith(f"wrote {tmp_path / out}: 1 frame in "), stdout
    got = _read(str(tmp_path / out))
    assert got.shape == (1, H, W, 3), out
    if out in ("c.png", "c"):
      np.testing.assert_array_equal(got[0], want)
    else:  # JPEG coding (of the input or the output), or H.264's 4:2:0
      assert np.abs(got[0].astype(int) - want).mean() < 4, out
  assert os.listdir(tmp_path / "c") == ["photo.png"]  # named as the input
  with av.open(str(tmp_path / "c.mp4")) as c:
    assert c.streams.video[0].frames == 1
  # A 16-bit photo: a 16-bit PNG, or an 8-bit JPEG with a note.
  deep = str(tmp_path / "deep.png")
  with open(deep, "wb") as f:
    f.write(dt.encode_image((photo.mean(-1) * 257).astype(np.uint16)))
  for out, note in (("d.png", ""), ("d.jpg", f"warning: {deep} has 16-bit samples; the JPEG is "
                                              "written at 8 bits (a .png output gets 16 bits)\n")):
    rc, stdout, stderr = _run(capsys, deep, tmp_path / out, "--checkpoint", checkpoint, *ARGS,
                              "--quiet")
    assert (rc, stderr) == (0, note), stderr
  assert reading.open_source(str(tmp_path / "d.png")).read_all(None).dtype == np.uint16
  # Guided: a reference image of the photo's one frame steers its colours.
  ref = str(tmp_path / "ref.png")
  with open(ref, "wb") as f:
    f.write(dt.encode_image(np.full_like(photo, (200, 40, 40)), "png"))
  rc, _, stderr = _run(capsys, src_png, tmp_path / "guided.png", "--checkpoint", checkpoint,
                       *ARGS, "--quiet", "--reference", f"0:{ref}")
  assert rc == 0, stderr
  assert np.any(_read(str(tmp_path / "guided.png"))[0] != want)


def test_folder_to_mp4_uses_fps_option(checkpoint, tmp_path, capsys):
  src = _folder(tmp_path / "in", _shot(3, 11))
  out = tmp_path / "out.mkv"
  rc, _, stderr = _run(capsys, src, out, "--checkpoint", checkpoint, *ARGS, "--fps", "10",
                       "--quiet")
  assert rc == 0, stderr
  with av.open(str(out)) as c:
    assert c.streams.video[0].average_rate == 10
    assert not c.streams.audio


def test_scene_cut_stops_colour_propagation(checkpoint, tmp_path):
  """Frames after a cut do not depend on frames before it; without cut detection they do."""
  colorizer = api.load(checkpoint)
  after = _shot(5, 11, dx=-2, dy=2)
  runs = {}
  for name, before, cuts in (("a", _shot(6, 6), True), ("b", _shot(7, 6, dx=1), True),
                             ("a_nocut", _shot(6, 6), False)):
    src = _folder(tmp_path / f"in_{name}", before + after)
    res = streaming.colorize_file(src, str(tmp_path / name), colorizer, interval=4, network_size=32,
                                 detect_cuts=cuts, progress=False)
    assert res.frames == 17
    assert res.cuts == ([6] if cuts else [])
    runs[name] = _read(str(tmp_path / name))
  np.testing.assert_array_equal(runs["a"][6:], runs["b"][6:])
  assert np.any(runs["a"][:6] != runs["b"][:6])
  # Without cut detection frame 6 shares a window with frames 5..10 and so depends on frame 5.
  assert np.any(runs["a_nocut"][6:11] != runs["a"][6:11])


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def _bad_inputs(tmp_path, tiny_sd, checkpoint):
  """{case: (argv, expected message start)}."""
  good = _folder(tmp_path / "good", _shot(1, 3))
  os.makedirs(tmp_path / "empty")
  mixed = _folder(tmp_path / "mixed",
                  [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)])
  with open(tmp_path / "junk.mp4", "wb") as f:
    f.write(b"definitely not a video" * 10)
  avi = _video(tmp_path / "v.avi", _shot(1, 2), audio_seconds=0, codec="mpeg4")
  mkv = _video(tmp_path / "v.mkv", _shot(1, 3), audio_seconds=0)  # Matroska lists no frame count
  assert reading.open_source(mkv).num_frames is None
  with open(avi, "rb") as f:
    data = f.read()
  with open(avi, "wb") as f:
    f.write(data.replace(b"FMP4", b"QQQQ"))  # a fourcc no decoder knows
  sig = {k[len("fea_key."):]: torch.from_numpy(np.array(v)) for k, v in tiny_sd.items()
         if k.startswith("fea_key.")}
  torch.save(sig, tmp_path / "siggraph17.pth")
  with open(tmp_path / "junk.pth", "wb") as f:
    f.write(os.urandom(256))
  tone = str(tmp_path / "tone.wav")  # FFmpeg opens it, but it holds no picture
  with av.open(tone, "w") as c:
    stream = c.add_stream("pcm_s16le", rate=8000)
    samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    samples.rate = 8000
    for packet in [*stream.encode(samples), *stream.encode(None)]:
      c.mux(packet)
  # A frame folder with a cut-off JPEG (FFmpeg's decoder would conceal the missing half).
  os.makedirs(tmp_path / "cut")
  jpeg = dt.encode_image(_shot(1, 1)[0], "mjpeg")
  for i in range(3):
    with open(tmp_path / "cut" / f"f{i}.jpg", "wb") as f:
      f.write(jpeg[:len(jpeg) // 2] if i == 1 else jpeg)
  cut_jpeg = str(tmp_path / "cut" / "f1.jpg")
  out = str(tmp_path / "o.mp4")
  ck = ("--checkpoint", checkpoint)
  nodir = tmp_path / "nodir"
  return {
      "missing": ([tmp_path / "nothing.mp4", out, *ck], "error: no such file or folder"),
      "unreadable": ([tmp_path / "junk.mp4", out, *ck], "error: cannot read"),
      "empty_folder": ([tmp_path / "empty", out, *ck], "error: no frames"),
      "mixed_sizes": ([mixed, out, *ck], "error: frames differ in size"),
      "image_output_of_a_clip": ([good, tmp_path / "o.png", *ck],
                                 f"error: {tmp_path / 'o.png'} is an image file, which holds one "
                                 f"frame; {good} has 3 frames: give a video file or a folder\n"),
      "image_output_of_an_uncounted_clip": ([mkv, tmp_path / "o.png", *ck],
                                            f"error: {tmp_path / 'o.png'} is an image file, which "
                                            "holds one frame, and the input has more: give a "
                                            "video file or a folder\n"),
      "codec": ([avi, out, *ck], "error: unsupported codec"),
      "wrong_model": ([good, out, "--checkpoint", tmp_path / "siggraph17.pth"],
                      "error: " + str(tmp_path / "siggraph17.pth") + ": holds siggraph17 weights"),
      "no_checkpoint": ([good, out, "--checkpoint", tmp_path / "junk.pth"],
                        f"error: {tmp_path / 'junk.pth'}: not a PyTorch checkpoint"),
      "missing_checkpoint": ([good, out, "--checkpoint", tmp_path / "nock"],
                             f"error: {tmp_path / 'nock'}: no such file"),
      "bad_size": ([good, out, *ck, "--size", "30"], "error: network size 30x30"),
      "bad_output_type": ([good, tmp_path / "o.gif", *ck], "error: unsupported output"),
      "output_folder_missing": ([good, nodir / "o.mp4", *ck],
                                f"error: cannot write {nodir / 'o.mp4'}: its folder {nodir} does "
                                "not exist"),
      "reference_not_an_image": ([good, out, *ck, "--reference", f"1:{tone}"],
                                 f"error: cannot decode {tone}: no image in the file"),
      "truncated_jpeg_frame": ([tmp_path / "cut", out, *ck],
                               f"error: cannot decode {cut_jpeg}: truncated JPEG"),
      "truncated_jpeg_reference": ([good, out, *ck, "--reference", f"1:{cut_jpeg}"],
                                   f"error: cannot decode {cut_jpeg}: truncated JPEG"),
  }


@pytest.mark.parametrize("flags,message", [
    *[(["--fps", v], "--fps must be a number of frames per second from 0.001 to 10000, got "
       f"{float(v)}") for v in ("nan", "inf", "0", "1e-9", "-1")],
    (["--size", "abc"], "--size: bad network size 'abc'"),
    (["--size", "0"], "--size: bad network size '0'"),
    (["--interval", "-1"], "--interval must be >= 0, got -1"),
    (["--reference", "ref.png"], "bad --reference 'ref.png': use FRAME:IMAGE"),
    (["--reference", "1:a.png", "--reference", "1:b.png"], "--reference: frame 1 is given twice"),
    (["--bit-depth", "16"], "--bit-depth 16 is for a frame folder (a path without extension) or "
     ".png output; "),
])
def test_flag_mistakes_are_usage_errors(flags, message, tmp_path, capsys):
  """Exit 2 and one line, before any file is read: the input and checkpoint need not exist."""
  rc, stdout, stderr = _run(capsys, tmp_path / "in.mp4", tmp_path / "out.mp4", "--checkpoint",
                            tmp_path / "nock", *flags)
  assert (rc, stdout) == (2, "")
  assert stderr.startswith(f"error: {message}") and len(stderr.splitlines()) == 1, stderr
  assert os.listdir(tmp_path) == []


def test_empty_paths_and_a_video_name_ending_in_a_slash_are_usage_errors(tmp_path, capsys,
                                                                         monkeypatch):
  """An unset shell variable ("$OUT") made the output the current folder: with --overwrite, a
  folder of the user's PNGs there was replaced by the colorized frames. 'out.mp4/' was written as
  a folder of PNGs named out.mp4."""
  frames = tmp_path / "my_frames"
  frames.mkdir()
  (frames / "000.png").write_bytes(b"the user's frame")
  monkeypatch.chdir(frames)
  cases = [
      (["in.mp4", "", "--overwrite"], "the output path is empty: give a video file or a folder "
       "for PNG frames"),
      (["in.mp4", " "], "the output path is empty"),
      (["", "o.mp4"], "the input path is empty: give a video file or a folder of frames"),
      (["in.mp4", "out.mp4/"], "output out.mp4/ ends with '/' (a folder of PNG frames) but is "
       "named like a video: give out.mp4 for a video, or a folder name without a video extension"),
      (["in.mp4", "o/Take.MOV//"], "output o/Take.MOV// ends with '/'"),
  ]
  for argv, message in cases:
    rc, stdout, stderr = _run(capsys, *argv, "--checkpoint", tmp_path / "nock")
    assert (rc, stdout) == (2, ""), argv
    assert stderr.startswith(f"error: {message}") and len(stderr.splitlines()) == 1, stderr
  assert os.listdir(frames) == ["000.png"]
  assert (frames / "000.png").read_bytes() == b"the user's frame"
  with pytest.raises(streaming.UsageError, match="the output path is empty"):
    streaming.colorize_file(tmp_path / "in.mp4", "", tmp_path / "nock", overwrite=True)


def test_bad_inputs(tmp_path, tiny_sd, checkpoint, capsys):
  for case, (argv, start) in _bad_inputs(tmp_path, tiny_sd, checkpoint).items():
    rc, stdout, stderr = _run(capsys, *ARGS, *argv, "--quiet")
    # A size that only this checkpoint cannot take is still a flag's impossible value: exit 2; an
    # output type not written is one too (exit 1 once, unlike convert's), as is an image output
    # for a clip.
    usage = ("bad_size", "bad_output_type", "image_output_of_a_clip")
    assert rc == (2 if case in usage else 1), case
    assert stdout == "", case
    assert stderr.startswith(start), (case, stderr)
    assert len(stderr.strip().splitlines()) == 1, (case, stderr)
    assert not os.path.exists(tmp_path / "o.mp4") and not os.path.exists(tmp_path / "o.png"), case
  leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".")]
  assert not leftovers  # no temporary outputs


def test_verbose_shows_the_traceback(tmp_path, capsys):
  rc = colorize.main([str(tmp_path / "nothing.mp4"), str(tmp_path / "o.mp4"), "--checkpoint", "x",
                      "--verbose"])
  err = capsys.readouterr().err
  assert rc == 1
  assert "Traceback" in err and "MediaError" in err and err.strip().endswith("nothing.mp4")


def test_module_entry_point(tmp_path):
  """`python -m tcvc_jax.colorize`: --help, and a bad input without a traceback."""
  env = xla_flags.child_env()
  cmd = [sys.executable, "-m", "tcvc_jax.colorize"]
  proc = subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=env, check=False)
  assert proc.returncode == 0
  assert "--checkpoint" in proc.stdout and "--no-scene-cuts" in proc.stdout
  proc = subprocess.run(cmd + [str(tmp_path / "nothing.mp4"), str(tmp_path / "o.mp4"),
                               "--checkpoint", str(tmp_path)], capture_output=True, text=True,
                        env=env, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [f"error: no such file or folder: "
                                              f"{tmp_path / 'nothing.mp4'}"]
