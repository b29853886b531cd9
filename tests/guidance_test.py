"""Guided colorization: hinted frames become anchors; hints reach the shot's anchors, not a cut."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax import carrying
from tcvc_jax import colorize
from tcvc_jax import converted
from tcvc_jax import guidance
from tcvc_jax import streaming
from tcvc_jax import window_stream
from tcvc_jax.data import synthetic
from tcvc_jax.evaluation import windows
from tcvc_jax.media import av_frames
from tcvc_jax.media import reading
from tcvc_jax.media import writing

import cli_testlib
import data_testlib
import tiny
import xla_flags

T = 4


@pytest.mark.parametrize("n,cuts,anchors", [
    (30, (), (7,)), (30, (12,), (3, 20, 21)), (25, (10, 11), (5, 10, 24)), (9, (), (1, 8)),
])
def test_streamed_windows_equal_planned_windows(n, cuts, anchors):
  planned = [(w.start, w.stop) for w in windows.plan_windows(n, T, cuts, anchors)]
  streamed = [(s, s + len(b)) for s, b in window_stream.iter_windows(
      range(n), T, lambda i, _: i in cuts, set(anchors))]
  assert streamed == planned
  bounds = {w.start for w in windows.plan_windows(n, T, cuts, anchors)}
  assert {a for a in anchors if a < n - 1} <= bounds


@pytest.fixture(scope="module")
def colorizer():
  model = tiny.tiny_model()
  return api.Colorizer(model, tiny.tiny_variables(model, size=64))


def _clip():
  """Two shots: a slowly panning textured background, then a different scene from frame 14."""
  clip = synthetic.generate_clip((0, 7), height=64, width=64, num_frames=24, max_cuts=0,
                                 max_speed=1.0)
  frames = clip.frames.copy()
  frames[14:] = 255 - frames[14:, ::-1]  # a hard cut
  return list(frames)


def test_reference_on_frame_0_reaches_the_last_anchor_and_stops_at_the_cut(colorizer):
  frames = _clip()
  rs = np.random.RandomState(0)
  reference = rs.randint(0, 255, (32, 40, 3), np.uint8)  # another size: resized to the network's
  hints = {0: guidance.reference_hint(reference)}
  cuts = []
  plan = streaming.plan_hints(frames, colorizer, hints, T, 64, "srgb", cuts)
  assert cuts == [14]
  first_shot = [w for w in windows.plan_windows(24, T, cuts, hints) if w.stop <= 14]
  assert first_shot[-1].stop == 14  # the shot's last anchor is frame 13
  for w in first_shot:
    h = plan(w.start, len(w))
    assert h is not None and h["hint_mask"][-1].mean() > 0.3, (w, h["hint_mask"][-1].mean())
  assert all(plan(w.start, len(w)) is None for w in windows.plan_windows(24, T, cuts, hints)
             if w.start >= 14)
  # The output: the first shot changes, the second is exactly the unguided one.
  guided = np.stack(list(streaming.colorize_frames(frames, colorizer, T, 64, [], hints=hints)))
  plain = np.stack(list(streaming.colorize_frames(frames, colorizer, T, 64, [])))
  assert np.abs(guided[13].astype(int) - plain[13]).max() > 0
  np.testing.assert_array_equal(guided[14:], plain[14:])


class _CountingFlows:
  """A colorizer whose flow calls are counted (the plan pass uses nothing else)."""

  def __init__(self, colorizer):
    self._colorizer, self.calls = colorizer, 0

  def flow(self, a, b):
    self.calls += 1
    return self._colorizer.flow(a, b)


@pytest.mark.parametrize("hinted", [0, 20])
def test_flows_are_computed_for_hinted_shots_only(colorizer, hinted):
  frames = _clip()
  counting = _CountingFlows(colorizer)
  hints = {hinted: guidance.reference_hint(frames[hinted])}
  plan = streaming.plan_hints(frames, counting, hints, T, 64, "srgb", [])
  chunks = lambda w: -(-2 * (len(w) - 1) // carrying.FLOW_CHUNK)
  planned = windows.plan_windows(24, T, [14], hints)
  if hinted == 0:  # the first shot's windows only: the second shot has no hint
    assert counting.calls == sum(chunks(w) for w in planned if w.stop <= 14)
    assert plan(planned[-1].start, len(planned[-1])) is None
  else:  # windows before the hint may belong to its shot: all of them are measured
    assert counting.calls == sum(chunks(w) for w in planned)
    assert all(plan(w.start, len(w)) is None for w in planned if w.stop <= 14)
    assert plan(planned[-1].start, len(planned[-1]))["hint_mask"][-1].mean() > 0.3


def test_the_first_pass_reports_its_progress(colorizer):
  frames = _clip()
  reports = []
  streaming.plan_hints(frames, colorizer, {0: guidance.reference_hint(frames[0])}, T, 64, "srgb",
                       [], lambda n, done: reports.append((n, done)))
  counts = [n for n, _ in reports]
  assert counts == sorted(counts) and reports[-1] == (24, True)
  assert [done for _, done in reports].count(True) == 1 and len(reports) > 3


def test_hints_beyond_the_video_are_an_error(colorizer):
  frames = _clip()[:8]
  hints = {30: guidance.reference_hint(np.zeros((8, 8, 3), np.uint8))}
  with pytest.raises(guidance.GuidanceError, match="frame 30, but the video has 8 frames"):
    list(streaming.colorize_frames(frames, colorizer, T, 64, [], hints=hints))


def test_hints_beyond_a_listed_length_are_refused_before_any_work(tmp_path):
  # A folder's (or a video container's) frame count is known at the start: no pass over the video
  # (or the checkpoint, which does not exist here) before the one-line error.
  with writing.FolderWriter(str(tmp_path / "clip")) as w:
    for frame in _clip()[:3]:
      w.write(frame)
  hints = {5: guidance.reference_hint(np.zeros((8, 8, 3), np.uint8))}
  with pytest.raises(guidance.GuidanceError, match=r"frame 5, but .*clip has 3 frames \(0..2\)"):
    streaming.colorize_file(str(tmp_path / "clip"), str(tmp_path / "out.mp4"),
                            str(tmp_path / "no_checkpoint"), hints=hints, progress=False)
  assert sorted(os.listdir(tmp_path)) == ["clip"]


@pytest.mark.parametrize("kwargs,message", [
    ({"model": None}, "model must be a checkpoint path or a Colorizer, got NoneType"),
    ({"interval": -1}, "interval must be a whole number >= 0, got -1"),
    ({"interval": 2.5}, "interval must be a whole number >= 0, got 2.5"),
    ({"network_size": "sixty"}, "bad network size 'sixty'"),
    ({"network_size": (64,)}, r"bad network size \(64,\)"),
    ({"network_size": 0}, "bad network size 0"),
    ({"hints": [1, 2]}, "hints must be a dict"),
    ({"hints": {"0": None}}, "frame indices must be integers, got '0'"),
    ({"input_path": np.zeros((2, 8, 8, 3), np.uint8)},  # frames in memory: colorize_frames
     r"the input must be a path \(a video file or a folder of frames\), got ndarray"),
])
def test_colorize_file_names_a_bad_argument(tmp_path, kwargs, message):
  """Before anything is read: the input and checkpoint need not exist."""
  args = dict(input_path=str(tmp_path / "in.mp4"), output_path=str(tmp_path / "out.mp4"),
              model=str(tmp_path / "ck"))
  with pytest.raises((streaming.UsageError, guidance.GuidanceError), match=message):
    streaming.colorize_file(**dict(args, **kwargs))
  assert os.listdir(tmp_path) == []


def test_carry_keeps_reliable_pixels_only():
  """A pure shift: carried hints equal the shifted hints except where the warp leaves the frame."""
  rs = np.random.RandomState(0)
  ys, xs = np.mgrid[0:32, 0:32]
  l_src = (0.3 * np.sin(2 * np.pi * xs / 24 + 1) * np.cos(2 * np.pi * ys / 20))[..., None]
  l_src = l_src.astype(np.float32)
  l_dst = np.roll(l_src, 3, axis=1)
  shift = lambda dx: np.broadcast_to(np.array([dx, 0.0], np.float32), (32, 32, 2))
  hint = guidance.FrameHint(rs.uniform(-0.5, 0.5, (32, 32, 2)).astype(np.float32),
                            np.ones((32, 32, 1), np.float32))
  out = carrying.carry(hint, l_src, l_dst, shift(-3.0), shift(3.0))  # dst(p) ~ src(p - 3 px)
  np.testing.assert_allclose(out.ab[:, 3:], hint.ab[:, :-3], atol=1e-6)
  assert out.mask[:, 3:].all() and not out.mask[:, :3].any()  # from outside frame A: dropped
  # A flow 6 px off (a quarter period of the texture) fails the photometric check.
  wrong = carrying.carry(hint, l_src, l_dst, shift(-9.0), shift(9.0))
  assert wrong.mask.mean() < 0.3
  # A flow that disagrees with the flow back (an occlusion) is dropped: the backward flow here
  # says "+10 px" on the right half.
  back = shift(3.0).copy()
  back[:, 16:] = [10.0, 0.0]
  occluded = carrying.carry(hint, l_src, l_dst, shift(-3.0), back)
  assert not occluded.mask[:, 20:].any() and occluded.mask[:, 3:12].all()


def test_resized_hints_keep_clicks_smaller_than_a_pixel_at_the_network_size():
  """Clicks made on the video's frame (640x640, 3x3 px) and the model run at 64x64: each keeps its
  peak pixel, in its colour (they vanished: the mask kept only pixels at least half hinted)."""
  clicks = [{"x": 0.5, "y": 0.5, "rgb": [0, 0, 255]}, {"x": 0.1, "y": 0.9, "rgb": [255, 0, 0]}]
  small = guidance.resize_hint(guidance.click_hint(clicks, 640, 640), 64, 64)
  at_size = guidance.click_hint([dict(c, patch=1) for c in clicks], 64, 64)
  np.testing.assert_array_equal(small.mask, at_size.mask)
  np.testing.assert_allclose(small.ab, at_size.ab, atol=1e-5)
  # Spots of at least half a pixel are resized as they were; a whole-frame reference stays whole.
  big = guidance.resize_hint(guidance.click_hint([dict(clicks[0], patch=61)], 640, 640), 64, 64)
  assert big.mask.sum() == 36 and big.mask[29:35, 29:35].all()
  whole = guidance.FrameHint(np.full((640, 480, 2), 0.2, np.float32),
                             np.ones((640, 480, 1), np.float32))
  resized = guidance.resize_hint(whole, 64, 48)
  assert resized.mask.all() and np.allclose(resized.ab, 0.2)


def test_anchor_hints_take_the_nearer_keyframe_first_and_the_other_elsewhere():
  """A reference on frame 0 and a click on frame 8 (a static shot, zero flows): anchor 6 takes the
  click where it was made and the reference everywhere else. It took the click's few pixels alone
  (the nearer keyframe's), dropping the reference: its colours flickered (a probe: mean a* of a
  red-referenced shot 30 -> 4 -> 16 over the anchor and the frames around it)."""
  h = w = 16
  ys, xs = np.mgrid[0:h, 0:w]
  l_frame = (0.2 * np.sin(xs / 3.0) * np.cos(ys / 4.0))[..., None].astype(np.float32)
  reference = guidance.FrameHint(np.broadcast_to(np.float32([0.3, 0.2]), (h, w, 2)).copy(),
                                 np.ones((h, w, 1), np.float32))
  click_mask = np.zeros((h, w, 1), np.float32)
  click_mask[6:9, 6:9] = 1
  click = guidance.FrameHint((click_mask * np.float32([-0.4, -0.1])).astype(np.float32),
                             click_mask)
  zero = np.zeros((h, w, 2), np.float32)
  out = carrying.anchor_hints([0, 6, 8, 12], {0: reference, 8: click}, lambda t: l_frame,
                              lambda a, b: (zero, zero))
  for anchor in (6, 8):  # 8: its own click, the reference carried forward elsewhere
    np.testing.assert_array_equal(out[anchor].mask, np.ones((h, w, 1)))
    np.testing.assert_allclose(out[anchor].ab, np.where(click_mask > 0, click.ab, reference.ab))
  np.testing.assert_allclose(out[12].ab, out[8].ab)  # after the last keyframe: carried forward
  out = carrying.anchor_hints([0, 2, 8], {0: reference, 8: click}, lambda t: l_frame,
                              lambda a, b: (zero, zero))
  np.testing.assert_allclose(out[2].ab, reference.ab)  # nearer to the reference: it wins


def test_compose_flows_follows_the_motion_through_every_frame():
  # Frame 0 -> 1: everything moves 2 px right; 1 -> 2: the right half (x >= 16) moves 3 px down.
  f01 = np.zeros((32, 32, 2), np.float32)
  f01[..., 0] = 2.0
  f12 = np.zeros((32, 32, 2), np.float32)
  f12[:, 16:, 1] = 3.0
  total = carrying.compose_flows([f01, f12])
  # A pixel at x lands at x + 2 in frame 1; it moves down in 1 -> 2 iff x + 2 >= 16.
  np.testing.assert_allclose(total[:, :13, 1], 0.0)
  np.testing.assert_allclose(total[:, 14:30, 1], 3.0)
  np.testing.assert_allclose(total[..., 0], 2.0)
  np.testing.assert_array_equal(carrying.compose_flows([f01]), f01)


def test_window_flows_compose_the_consecutive_flows_in_chunks():
  # A fake flow function that tells frames apart by their constant value t / 10: flow (t' - t, 0).
  n = 6
  frames = np.stack([np.full((8, 8, 1), t / 10.0, np.float32) for t in range(n)])
  calls = []

  def flow_fn(a, b):
    calls.append(a.shape[0])
    d = np.round((b[:, 0, 0, 0] - a[:, 0, 0, 0]) * 10)
    return np.broadcast_to(np.stack([d, 0 * d], -1)[:, None, None], a.shape[:3] + (2,))

  back, fwd = carrying.window_flows(frames, flow_fn, chunk=4)
  assert calls == [4, 4, 4]  # 10 pairs in chunks of 4, the last one padded: one shape
  np.testing.assert_allclose(back[..., 0], -(n - 1))  # border-clamped warps keep constant flows
  np.testing.assert_allclose(fwd[..., 0], n - 1)


def _run(args, cwd):
  env = xla_flags.child_env()
  env["XDG_CACHE_HOME"] = os.path.join(cwd, "cache")
  return subprocess.run([sys.executable, "-m", "tcvc_jax.colorize", *args], capture_output=True,
                        text=True, env=env, cwd=cwd, check=False)


def test_cli_guided_run_and_bad_references(colorizer, tmp_path, monkeypatch):
  ckpt = str(tmp_path / "ckpt")
  converted.save_converted(ckpt, jax.tree_util.tree_map(np.asarray, colorizer.variables), "tcvc",
                           tiny.TINY_SPEC)
  src = tmp_path / "clip"
  src.mkdir()
  for i, f in enumerate(_clip()[:10]):
    (src / f"{i:02d}.png").write_bytes(writing.encode_png(f))
  (tmp_path / "ref.png").write_bytes(writing.encode_png(np.full((30, 30, 3), (200, 90, 40),
                                                                np.uint8)))  # any size, one shape
  (tmp_path / "wide.png").write_bytes(writing.encode_png(np.full((20, 60, 3), (200, 90, 40),
                                                                 np.uint8)))
  (tmp_path / "gray.png").write_bytes(writing.encode_png(np.full((20, 30, 3), 200, np.uint8)))
  (tmp_path / "clicks.json").write_text(json.dumps(
      [{"frame": 5, "x": 0.5, "y": 0.5, "rgb": [200, 30, 40], "patch": 5}]))
  base = [str(src), "out", "--checkpoint", ckpt, "--size", "64", "--quiet"]
  proc = _run(base + ["--reference", f"0:{tmp_path / 'ref.png'}", "--hints",
                      str(tmp_path / "clicks.json")], str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  assert len(os.listdir(tmp_path / "out")) == 10
  assert "warning" not in proc.stderr
  # A gray reference is allowed (it asks for gray) but is most likely a mistake: a warning.
  proc = _run(base[:1] + ["out_gray"] + base[2:] + ["--reference", f"3:{tmp_path / 'gray.png'}"],
              str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  assert "3:" in proc.stderr and "has no colour" in proc.stderr, proc.stderr
  # A reference of another shape (a crop? another frame?) is used, stretched, with a warning.
  proc = _run(base[:1] + ["out_wide"] + base[2:] + ["--reference", f"2:{tmp_path / 'wide.png'}"],
              str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == (f"warning: --reference 2:{tmp_path / 'wide.png'}: the image is 60x20, the "
                         "frames 64x64: another shape, so it is stretched onto the frame (a crop, "
                         "or another frame?)\n"), proc.stderr
  (tmp_path / "bad.json").write_text("[{\"frame\": 1}]")
  (tmp_path / "clear.png").write_bytes(data_testlib.encode_image(np.zeros((20, 30, 4), np.uint8)))
  # "0: ref.png" (a space after the colon) is ref.png.
  proc = _run(base[:1] + ["out_space"] + base[2:] + ["--reference", "0: ref.png"], str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  cases = {
      "out of range": (["--reference", f"40:{tmp_path / 'ref.png'}"], "frame 40, but " + str(src)),
      "unreadable": (["--reference", f"0:{tmp_path / 'nothing.png'}"], "nothing.png"),
      "syntax": (["--reference", "ref.png"], "use FRAME:IMAGE"),  # a usage error: exit 2
      "syntax2": (["--reference", "\u00b2:ref.png"], "FRAME the frame's number counted from 0"),
      "transparent": (["--reference", "0:clear.png"],
                      "--reference 0:clear.png: the reference image is transparent everywhere"),
      "bad click": (["--hints", str(tmp_path / "bad.json")], "missing x, y, rgb"),
  }
  for case, (extra, text) in cases.items():
    monkeypatch.chdir(tmp_path)  # (the references' relative paths)
    proc = cli_testlib.call_main(colorize.main, [str(src), f"o_{case.replace(' ', '_')}",
                                                 "--checkpoint", ckpt, "--size", "64", "--quiet"]
                                 + extra)
    assert proc.returncode == (2 if case.startswith("syntax") else 1), (case, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (case, lines)
    assert not os.path.exists(tmp_path / f"o_{case.replace(' ', '_')}")


def test_a_reference_painted_on_a_transparent_layer_hints_only_where_painted(tmp_path):
  rgba = np.zeros((16, 24, 4), np.uint8)  # transparent black ...
  rgba[4:8, 6:12] = (220, 30, 30, 255)  # ... with one opaque red stroke
  rgba[10:12, 2:4] = (30, 30, 220, 100)  # and a faint one, under half opaque: no hint
  path = str(tmp_path / "strokes.png")
  data_testlib.write_image(path, rgba)
  alpha = av_frames.image_alpha(path)
  np.testing.assert_array_equal(alpha, rgba[..., 3])
  hint = guidance.reference_hint(reading.read_image(path), alpha)
  want = np.zeros((16, 24, 1), np.float32)
  want[4:8, 6:12] = 1
  np.testing.assert_array_equal(hint.mask, want)
  assert (hint.ab[4:8, 6:12, 0] > 0.1).all() and not hint.ab[want[..., 0] == 0].any()
  # An opaque image (or one without alpha) hints everywhere.
  data_testlib.write_image(path, rgba[..., :3])
  assert av_frames.image_alpha(path) is None
  assert guidance.reference_hint(reading.read_image(path)).mask.all()


def test_an_rgba_reference_says_how_to_pass_its_alpha():
  rgba = np.zeros((8, 8, 4), np.uint8)
  with pytest.raises(guidance.GuidanceError, match=r"got \(8, 8, 4\) uint8 \(RGBA: reference_hint"
                     r"\(image\[..., :3\], alpha=image\[..., 3\]\)\)$"):
    guidance.reference_hint(rgba)
  rgba[:2, :2] = 255
  hint = guidance.reference_hint(rgba[..., :3], alpha=rgba[..., 3])
  assert hint.mask.sum() == 4
  with pytest.raises(ValueError, match=r"^frame 0 has shape \(8, 8\), expected \[H, W, 1\|3\|4\] "
                     r"\(a gray frame \[H, W\]: add the channel, frame\[..., None\]\)$"):
    windows.check_frame(rgba[..., 0], 0)


def test_click_hint_checks_its_clicks_as_read_clicks_does():
  good = {"x": 0.5, "y": 0.25, "rgb": [200, 30, 40], "patch": 3}
  hint = guidance.click_hint([good, dict(good, x=1.0, rgb=(10, 200, 30), patch=1)], 16, 16)
  assert hint.mask.sum() == 9 + 1 and hint.mask[4, 15] == 1
  np.testing.assert_array_equal(
      guidance.click_hint([dict(good, rgb=np.array([200, 30, 40]), patch=np.int64(3))], 16, 16).ab,
      guidance.click_hint([good], 16, 16).ab)
  later = dict(good, x=9 / 15, rgb=(10, 200, 30))  # its 3x3 patch overlaps good's by 3x2 pixels
  both = guidance.click_hint([good, later], 16, 16)
  assert both.mask.sum() == 9 + 9 - 6
  alone = [guidance.click_hint([c], 16, 16).ab for c in (good, later)]
  np.testing.assert_array_equal(both.ab[3:6, 8:11], alone[1][3:6, 8:11])  # the later one's colour
  np.testing.assert_array_equal(both.ab[3:6, 7], alone[0][3:6, 7])
  bad = {
      "x": (dict(good, x=-0.5), r"^click 0: x must be a relative coordinate in \[0, 1\], got -0.5"),
      "x > 1": (dict(good, x=1.5), "^click 0: x must be a relative coordinate"),
      "nan y": (dict(good, y=float("nan")), "^click 0: y must be a relative coordinate"),
      "0..1 rgb": (dict(good, rgb=[0.8, 0.1, 0.1]),
                   r"^click 0: rgb must be \[r, g, b\] integers 0..255, got \[0.8, 0.1, 0.1\]"),
      "rgb 300": (dict(good, rgb=[300, 0, 0]), r"^click 0: rgb must be \[r, g, b\]"),
      "2 values": (dict(good, rgb=[3, 4]), r"^click 0: rgb must be \[r, g, b\]"),
      "even patch": (dict(good, patch=4), "^click 0: patch must be an odd positive integer, got 4"),
      "patch 0": (dict(good, patch=0), "^click 0: patch must be an odd positive integer"),
      "missing y": ({"x": 0.5, "rgb": [1, 2, 3]}, "^click 0: missing y$"),
      "not a dict": ([0.5, 0.5], "^click 0: a click must be an object with x, y, rgb"),
      "bad frame": (dict(good, frame=-1), "^click 0: frame must be a non-negative integer"),
      "misspelt patch": (dict(good, pacth=5), "^click 0: unknown key pacth"),
      "patch 17": (dict(good, patch=17), "^click 0: patch 17 is larger than the 16x16 frame the "
                   "model colours"),  # 15 covers every pixel from the centre: allowed
  }
  for case, (click, pattern) in bad.items():
    with pytest.raises(guidance.GuidanceError, match=pattern) as e:
      guidance.click_hint([click], 16, 16)
    assert "\n" not in str(e.value), case
  with pytest.raises(guidance.GuidanceError, match="^click 1: missing x$"):
    guidance.click_hint([good, {"y": 0.5, "rgb": [1, 2, 3]}], 16, 16)
  with pytest.raises(guidance.GuidanceError, match="^clicks must be a list of clicks .*got dict$"):
    guidance.click_hint(good, 16, 16)
  with pytest.raises(guidance.GuidanceError, match="^click_hint: width must be a positive integer"):
    guidance.click_hint([good], 16, 0)


def test_read_clicks(tmp_path):
  clicks = [{"frame": 3, "x": 0.5, "y": 0.5, "rgb": [200, 30, 40]}, {"frame": 3, "x": 0.1,
                                                                    "y": 0.9, "rgb": [0, 0, 9]}]
  path = tmp_path / "clicks.json"
  path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"clicks": clicks, "patch": 5}).encode())  # a BOM
  assert guidance.read_clicks(str(path)) == {3: [dict(c, patch=5) for c in clicks]}
  path.write_text(json.dumps({"frame": 3, "x": 0.5}))  # one click, not in a list
  with pytest.raises(guidance.GuidanceError, match=re.escape(
      f"{path}: unknown key frame, x: a hints file is a list of clicks [{{")):
    guidance.read_clicks(str(path))
  path.write_text(json.dumps([dict(clicks[0], rgb=[1, 2])]))
  with pytest.raises(guidance.GuidanceError, match=re.escape(f"{path}: click 0: rgb must be")):
    guidance.read_clicks(str(path))
  for patch in (2, 0, "3"):  # the file's patch is named as such, not as click 0's
    path.write_text(json.dumps({"clicks": clicks, "patch": patch}))
    with pytest.raises(guidance.GuidanceError, match=re.escape(
        f'{path}: "patch" (for every click) must be an odd positive integer, got {patch!r}')):
      guidance.read_clicks(str(path))
  # A key given twice: JSON's reader kept the last one, silently (which "x" was meant?).
  path.write_text('[{"frame": 3, "x": 0.2, "y": 0.5, "x": 0.8, "rgb": [1, 2, 3]}]')
  with pytest.raises(guidance.GuidanceError, match=re.escape(
      f'{path}: "x" is given twice in one object')):
    guidance.read_clicks(str(path))


class _NoModel:
  """A colorizer that must not be called: bad hints are refused before any model work."""

  def flow(self, a, b):
    raise AssertionError("flow called")

  def colorize_window(self, gray, **kwargs):
    raise AssertionError("colorize_window called")


def test_bad_hints_are_refused_before_any_work():
  frames = _clip()[:8]
  ok = guidance.reference_hint(frames[0])
  ab, mask = ok.ab, ok.mask
  nan_ab = ab.copy()
  nan_ab[3, 4] = np.nan
  bad = {
      "negative frame": ({-1: ok}, "^hints on frame -1: frames are numbered from 0$"),
      "string frame": ({"2": ok}, "^hints: frame indices must be integers, got '2'$"),
      "not a hint": ({2: {"ab": ab, "mask": mask}},
                     "^hints on frame 2: expected a guidance.FrameHint .*got dict$"),
      "nan ab": ({2: guidance.FrameHint(nan_ab, mask)}, "^hints on frame 2: ab has NaN"),
      "2-D mask": ({2: guidance.FrameHint(ab, mask[..., 0])},
                   r"^hints on frame 2: mask must have shape \[h, w, 1\] = \(64, 64, 1\) .*got "
                   r"\(64, 64\)$"),
      "mask of another size": ({2: guidance.FrameHint(ab, mask[:32])},
                               r"^hints on frame 2: mask must have shape"),
      "3-channel ab": ({2: guidance.FrameHint(np.zeros((64, 64, 3), np.float32), mask)},
                       r"^hints on frame 2: ab must have shape \[h, w, 2\], got \(64, 64, 3\)$"),
      "255 mask": ({2: guidance.FrameHint(ab, mask * 255)},
                   r"^hints on frame 2: mask must be within \[0, 1\]"),
      "uint8 mask": ({2: guidance.FrameHint(ab, mask.astype(np.uint8))},
                     "^hints on frame 2: mask must be float or bool"),
      "no hint": ({2: guidance.FrameHint(ab, mask * 0)},
                  "^hints on frame 2: the mask is 0 everywhere, no hint is given: leave the frame "
                  "out of the hints$"),
      "no click": ({2: guidance.click_hint([], 64, 64)}, "the mask is 0 everywhere"),
      "a list": ([ok], r"^hints must be a dict \{frame index: FrameHint\}, got list$"),
      "a* not / 110": ({2: guidance.FrameHint(ab * 110, mask)},
                       r"^hints on frame 2: ab must be within \[-1.1636, 1.1545\] where a hint "
                       r"is given \(a\* / 110, b\* / 110\), got values from"),
  }
  for case, (hints, pattern) in bad.items():
    with pytest.raises(guidance.GuidanceError, match=pattern) as e:
      list(streaming.colorize_frames(frames, _NoModel(), T, 64, [], hints=hints))
    assert "\n" not in str(e.value), case
  # The first pass needs frames it can read twice; a one-shot iterator is refused (not read as an
  # empty second pass).
  with pytest.raises(ValueError, match="with hints, frames must be iterable twice"):
    list(streaming.colorize_frames(iter(frames), _NoModel(), T, 64, [], hints={0: ok}))
  # Colours where the mask is 0 are no hints: any value there is taken.
  half = mask.copy()
  half[:32] = 0
  guidance.check_hints({2: guidance.FrameHint(np.where(half > 0, ab, 50.0), half)})


def test_valid_hint_variants_are_taken(colorizer):
  frames = _clip()[:6]
  ref = guidance.reference_hint(frames[0])
  want = np.stack(list(streaming.colorize_frames(frames, colorizer, T, 64, [], hints={0: ref})))
  as_bool = guidance.FrameHint(ref.ab, ref.mask.astype(bool))
  for hints in ({np.int64(0): ref}, {0: as_bool}):
    got = np.stack(list(streaming.colorize_frames(frames, colorizer, T, 64, [], hints=hints)))
    np.testing.assert_array_equal(got, want)
