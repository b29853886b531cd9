"""Tests for tcvc_jax/protocol.py: windowing, the golden one-sampling and ensemble runs, streaming.

The golden run (tests/golden/protocol.npz, from the original scripts with interval 4, and 4 + 5 for
the ensemble, at network size 64) stores the exact L each model call received and the ab it
returned. The fake model below answers a call only if the L our pipeline produced matches a stored
window's L, which checks windowing and the L resize; the uint8 frames then check the ab resize, the
Lab recombination, lab -> rgb and the rounding / truncation.

Tolerance on the uint8 frames: the original's own float32 and float64 runs differ by 1 LSB in 6
(one-sampling) and 8 (ensemble) of 247,104 values, so at most 8 values may differ, by at most 1.
"""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tcvc_jax import streaming
from tcvc_jax import window_stream
from tcvc_jax.evaluation import metrics
from tcvc_jax.evaluation import windows as protocol

_GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
_MAX_LSB_VALUES = 8


def _load_golden():
  z = np.load(os.path.join(_GOLDEN, "protocol.npz"))
  with open(os.path.join(_GOLDEN, "protocol.json")) as f:
    meta = json.load(f)
  windows = []  # (L [N, 64, 64, 1], ab [N, 64, 64, 2]) in call order: one-sampling, then interval 5
  for prefix, ks in (("one", (0, 1, 2)), ("multi", (3, 4))):
    for k in ks:
      windows.append((z[f"{prefix}_window{k}_L"].transpose(0, 2, 3, 1),
                      z[f"{prefix}_window{k}_out_ab"].transpose(0, 2, 3, 1)))
  arrays = {k: z[k] for k in ("input_frames", "output_frames_one", "output_frames_multi")}
  return arrays, windows, meta


class _StoredModel:
  """Returns the stored ab of the window whose stored L equals (allclose) the given L."""

  def __init__(self, windows):
    self.windows = windows
    self.calls = []
    self.max_l_diff = 0.0

  def __call__(self, gray):
    g = np.asarray(gray)
    for i, (stored_l, ab) in enumerate(self.windows):
      if stored_l.shape == g.shape and np.allclose(stored_l, g, rtol=0, atol=1e-6):
        self.calls.append(i)
        self.max_l_diff = max(self.max_l_diff, float(np.abs(stored_l - g).max()))
        return ab
    raise AssertionError(f"no stored window matches the L of shape {g.shape}")


def _toy_model(gray):
  """A deterministic stand-in: ab from the gray value and the frame position."""
  g = np.asarray(gray)
  t = np.linspace(-0.3, 0.3, g.shape[0], dtype=np.float32)[:, None, None, None]
  return np.concatenate([0.4 * g + t, -0.3 * g - t], axis=-1).astype(np.float32)


def _lsb_diff(a, b):
  d = np.abs(a.astype(np.int32) - b.astype(np.int32))
  return int(d.max()), int((d != 0).sum())


class GoldenTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.arrays, cls.windows, cls.meta = _load_golden()

  def test_one_sampling_matches_original(self):
    model = _StoredModel(self.windows)
    out = protocol.colorize_clip(self.arrays["input_frames"], model, (4,), 64)
    self.assertEqual(model.calls, [0, 1, 2])
    self.assertLess(model.max_l_diff, 1e-6)  # measured 1.5e-7 (float32 pow differences in L)
    max_diff, count = _lsb_diff(out, self.arrays["output_frames_one"])
    self.assertLessEqual(max_diff, 1)
    self.assertLessEqual(count, _MAX_LSB_VALUES)  # measured: 3 values

  def test_ensemble_matches_original(self):
    model = _StoredModel(self.windows)
    out = protocol.colorize_clip(self.arrays["input_frames"], model, (4, 5), 64)
    self.assertEqual(model.calls, [0, 1, 2, 3, 4])
    max_diff, count = _lsb_diff(out, self.arrays["output_frames_multi"])
    self.assertLessEqual(max_diff, 1)
    self.assertLessEqual(count, _MAX_LSB_VALUES)  # measured: 2 values

  def test_metrics_of_our_outputs_match_original(self):
    gt = self.arrays["input_frames"]
    for run, intervals in (("one_f32", (4,)), ("multi_f32", (4, 5))):
      ref = self.meta["runs"][run]
      out = protocol.colorize_clip(gt, _StoredModel(self.windows), intervals, 64)
      p = metrics.psnr_clip(gt, out, protocol.psnr_interval(intervals))
      # The original's f32 vs f64 runs differ by up to 1.1e-6 dB and 2.7e-6 in CDC.
      self.assertAlmostEqual(p.avg, ref["psnr_avg"], delta=1e-5)
      self.assertAlmostEqual(p.key, ref["psnr_key_avg"], delta=1e-5)
      self.assertAlmostEqual(p.inter, ref["psnr_inter_avg"], delta=1e-5)
      c = metrics.cdc([metrics.cdc_clip(out)])
      self.assertAlmostEqual(c["cdc"], ref["CDC"], delta=1e-5)

  def test_streaming_equals_in_memory(self):
    frames = self.arrays["input_frames"]
    whole = protocol.colorize_clip(frames, _StoredModel(self.windows), (4,), 64)
    model = _StoredModel(self.windows)
    streamed = np.stack(list(window_stream.iter_colorize(iter(frames), model, 4, 64)))
    self.assertEqual(model.calls, [0, 1, 2])
    np.testing.assert_array_equal(streamed, whole)


def _original_windows(n, t):
  """The original's loop, transcribed as the list of frame ranges it feeds the model."""
  keys = list(range(0, n, t + 1))
  if keys[-1] == n - 1:
    keys = keys[:-1]
  return [(k, min(k + t + 2, n)) for k in keys]


class WindowingTest(parameterized.TestCase):

  @parameterized.parameters(
      (13, 4, [(0, 6), (5, 11), (10, 13)]),  # the golden clip
      (11, 4, [(0, 6), (5, 11)]),  # keyframe 10 == n - 1 is dropped
      (12, 4, [(0, 6), (5, 11), (10, 12)]),  # last window of 2 frames
      (16, 4, [(0, 6), (5, 11), (10, 16)]),  # divides evenly
      (6, 4, [(0, 6)]),
      (2, 4, [(0, 2)]),
      (3, 4, [(0, 3)]),
      (19, 17, [(0, 19)]),
      (20, 17, [(0, 19), (18, 20)]),
      (37, 17, [(0, 19), (18, 37)]),
      (40, 19, [(0, 21), (20, 40)]),
      (5, 0, [(0, 2), (1, 3), (2, 4), (3, 5)]),
  )
  def test_plan_windows(self, n, t, expected):
    got = [(w.start, w.stop) for w in protocol.plan_windows(n, t)]
    self.assertEqual(got, expected)

  def test_plan_windows_matches_original_loop(self):
    for t in (0, 1, 2, 4, 17, 19):
      for n in range(2, 60):
        windows = protocol.plan_windows(n, t)
        self.assertEqual([(w.start, w.stop) for w in windows], _original_windows(n, t))
        # Every frame covered; neighbours share exactly their boundary frame; 2..T+2 frames each.
        self.assertEqual(windows[0].start, 0)
        self.assertEqual(windows[-1].stop, n)
        for a, b in zip(windows[:-1], windows[1:], strict=True):
          self.assertEqual(a.stop - 1, b.start)
        self.assertTrue(all(2 <= len(w) <= t + 2 for w in windows))

  def test_one_frame_clip_is_an_error_in_the_protocol_and_a_photo_in_a_stream(self):
    with self.assertRaisesRegex(protocol.ClipTooShortError, "at least 2 frames"):
      protocol.plan_windows(1, 17)
    photo = np.random.default_rng(5).integers(0, 256, (1, 10, 12, 3), dtype=np.uint8)
    with self.assertRaises(protocol.ClipTooShortError):
      protocol.colorize_clip(photo, _toy_model, (4,), 16)
    # The colorize tool's stream: the photo twice, its first output.
    seen = []

    def model(gray):
      seen.append(np.asarray(gray))
      return _toy_model(gray)

    got = np.stack(list(window_stream.iter_colorize(iter(photo), model, 4, 16)))
    self.assertEqual(got.shape, (1, 10, 12, 3))
    self.assertLen(seen, 1)
    self.assertEqual(seen[0].shape, (2, 16, 16, 1))
    np.testing.assert_allclose(seen[0][0], seen[0][1], atol=1e-6)  # (XLA's resize, per batch row)
    twice = protocol.colorize_clip(np.concatenate([photo, photo]), _toy_model, (4,), 16)
    np.testing.assert_array_equal(got[0], twice[0])
    with self.assertRaisesRegex(protocol.ClipTooShortError, "no frames"):
      list(window_stream.iter_windows(iter([]), 4))

  @parameterized.parameters(2, 3)
  def test_two_and_three_frame_clips(self, n):
    seen = []

    def model(gray):
      seen.append(gray.shape)
      return _toy_model(gray)

    frames = np.random.default_rng(n).integers(0, 256, (n, 10, 12, 3), dtype=np.uint8)
    out = protocol.colorize_clip(frames, model, (17,), 16)
    self.assertEqual(out.shape, (n, 10, 12, 3))
    self.assertEqual(seen, [(n, 16, 16, 1)])

  def test_bad_interval(self):
    with self.assertRaises(ValueError):
      protocol.plan_windows(10, -1)
    with self.assertRaises(TypeError):
      protocol.plan_windows(10, 2.5)

  def test_cuts_split_windows(self):
    got = [(w.start, w.stop) for w in protocol.plan_windows(16, 4, cuts=[4, 9, 10])]
    # Shots [0, 4), [4, 9), [9, 10) (one frame), [10, 16); no window crosses a cut.
    self.assertEqual(got, [(0, 4), (4, 9), (9, 10), (10, 16)])

  def test_iter_windows_equals_plan_windows(self):
    for t in (0, 1, 4, 17):
      for n in range(2, 45):
        for cuts in ((), (n // 2,), (1, n - 1), (3, 4, 5)):
          cuts = tuple(c for c in cuts if 0 < c < n)
          expected = [(w.start, w.stop) for w in protocol.plan_windows(n, t, cuts)]
          got = [(s, s + len(f)) for s, f in
                 window_stream.iter_windows(iter(range(n)), t, lambda i, _, c=cuts: i in c)]
          self.assertEqual(got, expected, msg=f"n={n} t={t} cuts={cuts}")
          for s, f in window_stream.iter_windows(iter(range(n)), t, lambda i, _, c=cuts: i in c):
            self.assertEqual(list(f), list(range(s, s + len(f))))


class PipelineTest(parameterized.TestCase):

  def test_ensemble_arithmetic(self):
    a = np.array([10.6, 11.0, -7.0, 300.0, 254.9, 0.4], np.float32)
    b = np.array([11.0, 11.9, 2.0, 250.0, 255.3, 0.5], np.float32)
    # float64 mean, clip, truncate: 10.8 -> 10 (round would give 11), 11.45 -> 11, -2.5 -> 0.
    np.testing.assert_array_equal(protocol.ensemble_to_uint8([a, b]), [10, 11, 0, 255, 255, 0])
    np.testing.assert_array_equal(protocol.to_uint8_round(a), [11, 11, 0, 255, 255, 0])
    # Round half to even, as numpy's round on float32 in the original.
    np.testing.assert_array_equal(protocol.to_uint8_round(np.float32([0.5, 1.5, 2.5])), [0, 2, 2])

  def test_ensemble_is_mean_of_passes(self):
    frames = np.random.default_rng(0).integers(0, 256, (9, 12, 14, 3), dtype=np.uint8)
    l_full = protocol.frames_to_l(frames)
    passes = [protocol.run_pass(l_full, _toy_model, t, 16) for t in (2, 3)]
    expected = np.clip((passes[0].astype(np.float64) + passes[1]) / 2, 0, 255).astype(np.uint8)
    got = protocol.colorize_clip(frames, _toy_model, (2, 3), 16)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(protocol.colorize_clip(frames, _toy_model, 2, 16),
                                  protocol.to_uint8_round(passes[0]))
    # colorize_clip converts and rounds frame by frame as the pass yields them: each frame once,
    # in order, a shared boundary frame the later window's (as run_pass overwrites it).
    for cuts in ((), (4,), (4, 5)):
      pass_ = list(protocol.iter_pass(frames, _toy_model, 3, 16, cuts))
      self.assertEqual([i for i, _ in pass_], list(range(9)))
      whole = protocol.run_pass(l_full, _toy_model, 3, 16, cuts)
      np.testing.assert_array_equal(np.stack([rgb for _, rgb in pass_]), whole)
      np.testing.assert_array_equal(protocol.colorize_clip(frames, _toy_model, 3, 16, cuts=cuts),
                                    protocol.to_uint8_round(whole))

  def test_gray_and_16bit_inputs(self):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (3, 9, 11, 1), dtype=np.uint8)
    l_gray = protocol.frames_to_l(gray)
    np.testing.assert_array_equal(l_gray, protocol.frames_to_l(np.repeat(gray, 3, axis=-1)))
    np.testing.assert_allclose(protocol.frames_to_l(gray.astype(np.uint16) * 257), l_gray,
                               atol=1e-6)
    np.testing.assert_allclose(protocol.frames_to_l(gray, "original"), gray / 255.0 - 0.5,
                               atol=1e-7)
    rgba = np.concatenate([np.repeat(gray, 3, -1), np.zeros_like(gray)], axis=-1)
    np.testing.assert_array_equal(protocol.frames_to_l(rgba), l_gray)
    with self.assertRaises(ValueError):
      protocol.frames_to_l(gray, "bogus")

  def test_any_size_and_non_square_network(self):
    frames = np.random.default_rng(2).integers(0, 256, (4, 37, 50, 3), dtype=np.uint8)
    seen = []

    def model(gray):
      seen.append(gray.shape)
      return _toy_model(gray)

    out = protocol.colorize_clip(frames, model, (17,), (24, 40))
    self.assertEqual(out.shape, (4, 37, 50, 3))
    self.assertEqual(seen, [(4, 24, 40, 1)])

  def test_lightness_is_kept(self):
    # Zero ab gives back gray with the input's lightness, so a gray input comes back unchanged
    # (up to the float32 colour round trip).
    gray = np.repeat(np.random.default_rng(3).integers(0, 256, (3, 8, 8, 1), np.uint8), 3, -1)
    out = protocol.colorize_clip(gray, lambda g: np.zeros(g.shape[:3] + (2,), np.float32), 4, 8)
    self.assertLessEqual(np.abs(out.astype(int) - gray).max(), 1)

  def test_full_resolution_work_frame_by_frame_equals_the_whole_window(self):
    """The full-resolution steps after the model run one frame at a time (a window of 1080p frames
    held ~1 GB of float copies at once); each frame's values are those of the whole window at
    once (bit for bit where XLA sums the up-resize's few terms in one order, as on the Intel Xeon
    measured; within float rounding anywhere). L and the model's input are exact."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (5, 36, 52, 3), np.uint8)
    l_full = protocol.frames_to_l(frames)
    np.testing.assert_array_equal(l_full, np.asarray(protocol._rgb_to_l(frames / np.float32(255))))
    gray = protocol.resize_l(l_full, (16, 24))
    seen = []
    model = lambda g: seen.append(np.asarray(g)) or _toy_model(g)
    ab = _toy_model(gray)
    whole = np.asarray(protocol.compose_rgb255(l_full, ab))
    frames_out = list(protocol.iter_rgb255(l_full, model, (16, 24)))
    self.assertEqual(len(frames_out), 5)
    np.testing.assert_allclose(np.stack(frames_out), whole, rtol=0, atol=2e-4)  # rgb * 255
    np.testing.assert_array_equal(seen[0], gray)  # the model's input: L resized at once

  def test_model_output_shape_is_checked(self):
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with self.assertRaisesRegex(ValueError, "colorize_window returned"):
      protocol.colorize_clip(frames, lambda g: np.zeros(g.shape[:3] + (3,), np.float32), 4, 8)

  def test_single_frame_shot_is_doubled(self):
    frames = np.random.default_rng(4).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    seen = []

    def model(gray):
      seen.append(gray.shape[0])
      return _toy_model(gray)

    out = protocol.colorize_clip(frames, model, (4,), 8, cuts=[2, 3])
    self.assertEqual(seen, [2, 2, 3])  # shots [0, 2), [2, 3) doubled, [3, 6)
    self.assertEqual(out.shape, frames.shape)
    streamed = list(window_stream.iter_colorize(iter(frames), model, 4, 8,
                                           is_cut=lambda i, _: i in (2, 3)))
    np.testing.assert_array_equal(np.stack(streamed), out)

  def test_frames_must_be_in_range_and_finite(self):
    """Float frames of 0..255 came out white, NaN frames black; now a one-line error names the
    frame, in memory (`colorize_clip`) and streamed (`iter_colorize`, `colorize_frames`)."""
    rng = np.random.default_rng(5)
    good = rng.uniform(0, 1, (6, 8, 8, 3)).astype(np.float32)
    scaled = good.copy()
    scaled[4] *= 255
    nan = good.copy()
    nan[3, 2, 2, 1] = np.nan
    inf = good.copy()
    inf[2, 0, 0, 0] = np.inf
    gray255 = good[..., :1] * 255
    cases = {
        "0..255": (scaled, r"^frame 4 has values from .* to .*: float frames must be in \[0, 1\]"),
        "nan": (nan, "^frame 3 has NaN values$"),
        "inf": (inf, "^frame 2 has values from .* to inf: float frames must be in"),
        "gray 0..255": (gray255, "^frame 0 has values from"),
    }
    model = _FakeColorizer()
    for case, (frames, pattern) in cases.items():
      for run in (lambda f: protocol.colorize_clip(f, _toy_model, (4,), 8),
                  lambda f: list(window_stream.iter_colorize(iter(f), _toy_model, 4, 8)),
                  lambda f: list(streaming.colorize_frames(list(f), model, 4, 8))):
        with self.assertRaisesRegex(ValueError, pattern, msg=case):
          run(frames)
    with self.assertRaisesRegex(TypeError, "frame 0 is int64: frames must be uint8, uint16 or"):
      list(window_stream.iter_colorize(iter(good.astype(np.int64)), _toy_model, 4, 8))
    # In range (and rounding a hair outside it), any float dtype, 16 bit: as before.
    want = protocol.colorize_clip(good, _toy_model, (4,), 8)
    near = np.clip(good, 0, 1)
    near[0, 0, 0] = [1.0000001, -1e-7, 0.5]
    for frames in (good.astype(np.float64), good.astype(np.float16), near):
      self.assertEqual(protocol.colorize_clip(frames, _toy_model, (4,), 8).shape, want.shape)
    self.assertEqual(len(list(streaming.colorize_frames(list(good), model, 4, 8))), 6)
    self.assertEqual(
        len(list(streaming.colorize_frames([f.astype(np.float64) if i % 2 else f
                                            for i, f in enumerate(good)], model, 4, 8))), 6)

  def test_streamed_frames_must_share_one_shape_and_type(self):
    frames = list(np.random.default_rng(6).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    model = _FakeColorizer()
    cases = {
        "size": (frames[:3] + [np.zeros((8, 16, 3), np.uint8)] + frames[4:],
                 r"^frame 3 has shape \(8, 16, 3\), frame 0 \(8, 8, 3\): all frames must have one"),
        "channels": (frames[:5] + [np.zeros((8, 8, 1), np.uint8)],
                     r"^frame 5 has shape \(8, 8, 1\), frame 0 \(8, 8, 3\)"),
        "2-D": (frames[:2] + [np.zeros((8, 8), np.uint8)] + frames[3:],
                r"^frame 2 has shape \(8, 8\), expected \[H, W, 1\|3\|4\] \(a gray frame \[H, W\]: "
                r"add the channel, frame\[..., None\]\)$"),
        "type": (frames[:4] + [frames[4] / np.float32(255)] + frames[5:],
                 "^frame 4 is float32, frame 0 uint8: all frames must have one type"),
    }
    for case, (clip, pattern) in cases.items():
      with self.assertRaisesRegex(ValueError, pattern, msg=case):
        list(streaming.colorize_frames(clip, model, 4, 8))


class _FakeColorizer:
  """`colorize_window` with the anchor state of an `api.Colorizer`, answered by `_toy_model`."""

  def colorize_window(self, gray, first_anchor=None, return_last_anchor=False):
    del first_anchor
    ab = _toy_model(gray)
    return (ab, None) if return_last_anchor else ab


if __name__ == "__main__":
  absltest.main()
