"""Guided colorization: hinted frames become anchors; hints reach the shot's anchors, not a cut."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax import guidance
from tcvc_jax import porting
from tcvc_jax import streaming
from tcvc_jax.data import synthetic
from tcvc_jax.evaluation import windows
from tcvc_jax.media import writing

import tiny

T = 4


@pytest.mark.parametrize("n,cuts,anchors", [
    (30, (), (7,)), (30, (12,), (3, 20, 21)), (25, (10, 11), (5, 10, 24)), (9, (), (1, 8)),
])
def test_streamed_windows_equal_planned_windows(n, cuts, anchors):
  planned = [(w.start, w.stop) for w in windows.plan_windows(n, T, cuts, anchors)]
  streamed = [(s, s + len(b)) for s, b in streaming.iter_windows(
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


def test_hints_beyond_the_video_are_an_error(colorizer):
  frames = _clip()[:8]
  hints = {30: guidance.reference_hint(np.zeros((8, 8, 3), np.uint8))}
  with pytest.raises(guidance.GuidanceError, match="frame 30, but the video has 8 frames"):
    list(streaming.colorize_frames(frames, colorizer, T, 64, [], hints=hints))


def test_carry_keeps_reliable_pixels_only():
  """A pure shift: carried hints equal the shifted hints except where the warp leaves the frame."""
  rs = np.random.RandomState(0)
  l_src = rs.uniform(-0.4, 0.4, (32, 32, 1)).astype(np.float32)
  l_dst = np.roll(l_src, 3, axis=1)
  flows = {}

  def flow_fn(a, b):  # dst(p) ~ src(p - 3 px) and back
    key = "ds" if np.array_equal(a[0], l_dst) else "sd"
    flows[key] = True
    return np.broadcast_to(np.array([-3.0 if key == "ds" else 3.0, 0.0], np.float32),
                           a.shape[:3] + (2,))

  hint = guidance.FrameHint(rs.uniform(-0.5, 0.5, (32, 32, 2)).astype(np.float32),
                            np.ones((32, 32, 1), np.float32))
  out = guidance.carry(hint, l_src, l_dst, flow_fn)
  assert flows == {"ds": True, "sd": True}
  np.testing.assert_allclose(out.ab[:, 3:], hint.ab[:, :-3], atol=1e-6)
  assert out.mask[:, 3:].all() and not out.mask[:, :3].any()  # from outside frame A: dropped


def _run(args, cwd):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["XDG_CACHE_HOME"] = os.path.join(cwd, "cache")
  return subprocess.run([sys.executable, "-m", "tcvc_jax.colorize", *args], capture_output=True,
                        text=True, env=env, cwd=cwd, check=False)


def test_cli_guided_run_and_bad_references(colorizer, tmp_path):
  ckpt = str(tmp_path / "ckpt")
  porting.save_converted(ckpt, jax.tree_util.tree_map(np.asarray, colorizer.variables), "tcvc",
                         tiny.TINY_SPEC)
  src = tmp_path / "clip"
  src.mkdir()
  for i, f in enumerate(_clip()[:10]):
    (src / f"{i:02d}.png").write_bytes(writing.encode_png(f))
  (tmp_path / "ref.png").write_bytes(writing.encode_png(np.full((20, 30, 3), 200, np.uint8)))
  (tmp_path / "clicks.json").write_text(json.dumps(
      [{"frame": 5, "x": 0.5, "y": 0.5, "rgb": [200, 30, 40], "patch": 5}]))
  base = [str(src), "out", "--checkpoint", ckpt, "--size", "64", "--quiet"]
  proc = _run(base + ["--reference", f"0:{tmp_path / 'ref.png'}", "--hints",
                      str(tmp_path / "clicks.json")], str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  assert len(os.listdir(tmp_path / "out")) == 10
  (tmp_path / "bad.json").write_text("[{\"frame\": 1}]")
  cases = {
      "out of range": (["--reference", f"40:{tmp_path / 'ref.png'}"], "frame 40, but the video"),
      "unreadable": (["--reference", f"0:{tmp_path / 'nothing.png'}"], "nothing.png"),
      "syntax": (["--reference", "ref.png"], "use FRAME:IMAGE"),
      "bad click": (["--hints", str(tmp_path / "bad.json")], "missing x, y, rgb"),
  }
  for case, (extra, text) in cases.items():
    proc = _run([str(src), f"o_{case.replace(' ', '_')}", "--checkpoint", ckpt, "--size", "64",
                 "--quiet"] + extra, str(tmp_path))
    assert proc.returncode == 1, (case, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (case, lines)
    assert not os.path.exists(tmp_path / f"o_{case.replace(' ', '_')}")
