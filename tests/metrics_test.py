"""Tests for tcvc_jax/metrics.py against the original's numbers (tests/golden/protocol.*)."""

import json
import math
import os

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
from scipy import signal
from scipy import stats

from tcvc_jax.evaluation import metrics

_GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def _golden():
  z = np.load(os.path.join(_GOLDEN, "protocol.npz"))
  with open(os.path.join(_GOLDEN, "protocol.json")) as f:
    meta = json.load(f)
  return {k: z[k] for k in ("input_frames", "output_frames_one", "output_frames_multi")}, meta


_RUNS = (("one_f32", "output_frames_one"), ("multi_f32", "output_frames_multi"))


class PSNRTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.frames, cls.meta = _golden()

  def test_golden_psnr(self):
    gt = self.frames["input_frames"]
    for run, key in _RUNS:
      ref = self.meta["runs"][run]
      p = metrics.psnr_clip(gt, self.frames[key], 4)
      np.testing.assert_array_equal(p.per_frame, ref["psnr_per_frame"])
      self.assertEqual(p.is_key.tolist(), ref["is_key_frame"])
      self.assertEqual(p.avg, ref["psnr_avg"])
      self.assertEqual(p.key, ref["psnr_key_avg"])
      # The script sums frame by frame; the stored value was averaged pairwise: 1.8e-15 apart.
      self.assertAlmostEqual(p.inter, ref["psnr_inter_avg"], delta=1e-12)
      self.assertEqual(metrics.mean_over_clips([p.avg]), ref["psnr_avg"])

  def test_psnr_definition(self):
    a = np.zeros((4, 5, 3), np.uint8)
    self.assertEqual(metrics.psnr(a, a), math.inf)
    self.assertAlmostEqual(metrics.psnr(a, a + 1), 20 * math.log10(255.0))
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255^2 / 60, over all pixels and channels
    self.assertAlmostEqual(metrics.psnr(a, b), 10 * math.log10(60))
    with self.assertRaises(ValueError):
      metrics.psnr(a, a[:2])

  def test_key_frames(self):
    self.assertEqual(np.flatnonzero(metrics.key_frame_mask(13, 4)).tolist(), [0, 5, 10, 12])
    self.assertEqual(np.flatnonzero(metrics.key_frame_mask(40, 17)).tolist(), [0, 18, 36, 39])
    self.assertEqual(np.flatnonzero(metrics.key_frame_mask(37, 17)).tolist(), [0, 18, 36])

  def test_clip_without_inter_frames(self):
    gt = np.zeros((2, 4, 4, 3), np.uint8)
    p = metrics.psnr_clip(gt, gt + 2, 17)
    self.assertTrue(math.isnan(p.inter))
    self.assertEqual(metrics.mean_over_clips([p.inter, 5.0, 7.0]), 6.0)


class CDCTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.frames, cls.meta = _golden()

  def test_golden_cdc(self):
    for run, key in _RUNS:
      ref = self.meta["runs"][run]
      c = metrics.cdc([metrics.cdc_clip(self.frames[key])])
      # float32 histograms and entropies as in the original: identical to the last bit.
      self.assertEqual(c["cdc"], ref["CDC"])
      self.assertEqual(c["js_b"], ref["JS_b"])
      self.assertEqual(c["js_g"], ref["JS_g"])
      self.assertEqual(c["js_r"], ref["JS_r"])

  def test_golden_cdc_of_input(self):
    c = metrics.cdc([metrics.cdc_clip(self.frames["input_frames"])])
    self.assertEqual(c["cdc"], 0.00953434749195973)

  def test_js_matches_scipy_on_cv2_shaped_histograms(self):
    h = metrics.channel_histograms(self.frames["output_frames_one"])
    self.assertEqual(h.dtype, np.float32)
    for i in range(4):
      for ch in range(3):
        p, q = h[i, ch][:, None], h[i + 1, ch][:, None]  # cv2.calcHist gives (256, 1)
        m = (p + q) / 2
        ref = 0.5 * stats.entropy(p, m) + 0.5 * stats.entropy(q, m)
        self.assertEqual(metrics.js_divergence(h[i], h[i + 1])[ch], ref[0])

  def test_js_properties(self):
    rng = np.random.default_rng(0)
    p, q = rng.random((2, 256)).astype(np.float32)
    self.assertEqual(metrics.js_divergence(p, p), 0)
    self.assertAlmostEqual(metrics.js_divergence(p, q), metrics.js_divergence(q, p), places=7)
    one_hot = np.eye(2, 256, dtype=np.float32)
    self.assertAlmostEqual(metrics.js_divergence(one_hot[0], one_hot[1]), math.log(2), places=6)

  def test_histograms(self):
    frames = np.zeros((1, 2, 3, 3), np.uint8)
    frames[0, 0, 0] = (5, 6, 7)
    h = metrics.channel_histograms(frames)
    self.assertEqual(h.shape, (1, 3, 256))
    self.assertAlmostEqual(float(h[0, 0, 5]), 1 / 6)
    self.assertAlmostEqual(float(h[0, 2, 0]), 5 / 6)
    np.testing.assert_allclose(h.sum(-1), 1, rtol=1e-6)

  def test_gaps_and_short_clips(self):
    frames = self.frames["output_frames_one"]
    c = metrics.cdc_clip(frames)
    self.assertEqual(sorted(c.per_gap), [1, 2, 4])
    expected = sum(np.float32(1 / 3) * c.per_gap[d] for d in (1, 2, 4))
    np.testing.assert_allclose(c.per_channel, expected, rtol=1e-6)
    short = metrics.cdc_clip(frames[:4])  # no pair at gap 4, NaN like the original
    self.assertTrue(np.isnan(short.per_gap[4]).all())
    self.assertTrue(np.isnan(short.per_channel).all())
    # A dataset's CDC is over the clips that have one: a short clip once made it NaN.
    with_short = metrics.cdc([c, short])
    self.assertEqual(with_short, dict(metrics.cdc([c]), clips=1))
    self.assertEqual(metrics.cdc([short])["clips"], 0)
    self.assertTrue(np.isnan(metrics.cdc([short])["cdc"]))

  def test_mean_over_clips(self):
    a = metrics.cdc_clip(self.frames["output_frames_one"])
    b = metrics.cdc_clip(self.frames["output_frames_multi"])
    both = metrics.cdc([a, b])
    ra, rb = self.meta["runs"]["one_f32"], self.meta["runs"]["multi_f32"]
    self.assertAlmostEqual(both["js_r"], (ra["JS_r"] + rb["JS_r"]) / 2, delta=1e-9)
    self.assertAlmostEqual(both["cdc"], (ra["CDC"] + rb["CDC"]) / 2, delta=1e-9)


def _ssim_reference(a, b):
  """Straight transcription of the MATLAB-style SSIM with a 2-D window, per channel."""
  g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
  g /= g.sum()
  win = np.outer(g, g)
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  vals = []
  for ch in range(a.shape[2]):
    x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
    f = lambda img: signal.correlate2d(img, win, mode="valid")  # pylint: disable=cell-var-from-loop
    mx, my = f(x), f(y)
    sx, sy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    vals.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sx + sy + c2)))
  return float(np.mean(vals))


class SSIMTest(absltest.TestCase):

  def test_matches_reference(self):
    frames, _ = _golden()
    a, b = frames["input_frames"][3], frames["output_frames_one"][3]
    self.assertAlmostEqual(metrics.ssim(a, b), _ssim_reference(a, b), places=12)
    self.assertAlmostEqual(metrics.ssim(a[..., 1], b[..., 1]),
                           _ssim_reference(a[..., 1:2], b[..., 1:2]), places=12)
    self.assertAlmostEqual(metrics.ssim(a, a), 1.0, places=12)

  def test_clip_and_errors(self):
    frames, _ = _golden()
    gt, out = frames["input_frames"][:3], frames["output_frames_one"][:3]
    expected = np.mean([metrics.ssim(g, o) for g, o in zip(gt, out, strict=True)])
    self.assertAlmostEqual(metrics.ssim_clip(gt, out), expected)
    with self.assertRaises(ValueError):
      metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with self.assertRaises(ValueError):
      metrics.ssim(np.zeros((16, 16)), np.zeros((16, 17)))


def _moving_clip(n=4, h=24, w=28, shift=(2, 1)):
  """Frames of a smooth colour texture translated by `shift` px per frame, plus the flow."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  frames = []
  for t in range(n):
    xs, ys = x - shift[0] * t, y - shift[1] * t
    rgb = np.stack([np.sin(0.3 * xs + 0.2 * ys), np.cos(0.25 * xs - 0.3 * ys),
                    np.sin(0.15 * xs * 0.5 + 0.4 * ys)], -1)
    frames.append(np.round(127.5 + 120 * rgb).astype(np.uint8))
  return np.stack(frames)


class WarpErrorTest(absltest.TestCase):

  def test_exact_flow_gives_zero_inside(self):
    frames = _moving_clip()
    shapes = []

    def flow_fn(g1, g2):
      shapes.append(g1.shape)
      self.assertEqual(g1.shape, g2.shape)
      # frame_t(p) = frame_{t+1}(p + (2, 1)); backward flow is the negative.
      sign = 1.0 if not len(shapes) % 2 == 0 else -1.0
      return jnp.broadcast_to(jnp.float32([2.0, 1.0]) * sign, g1.shape[:3] + (2,))

    err = metrics.warp_error(frames, flow_fn, batch_size=2)
    self.assertLess(err, 1e-10)
    self.assertEqual(shapes, [(2, 24, 28, 1), (2, 24, 28, 1), (1, 24, 28, 1), (1, 24, 28, 1)])

  def test_zero_flow_is_plain_frame_difference(self):
    frames = _moving_clip(n=3)
    zero = lambda g1, g2: jnp.zeros(g1.shape[:3] + (2,), jnp.float32)
    x = frames.astype(np.float64) / 255
    expected = np.mean([np.mean(np.sum((x[t] - x[t + 1]) ** 2, -1)) for t in range(2)])
    self.assertAlmostEqual(metrics.warp_error(frames, zero), expected, places=5)
    self.assertAlmostEqual(metrics.warp_error(frames, zero, use_occlusion_mask=False), expected,
                           places=5)
    self.assertTrue(math.isnan(metrics.warp_error(frames[:1], zero)))

  def test_occlusion_mask(self):
    fw = jnp.broadcast_to(jnp.float32([3.0, 0.0]), (1, 6, 8, 2))
    mask = np.asarray(metrics.occlusion_mask(fw, -fw))[0, ..., 0]
    np.testing.assert_array_equal(mask[:, :5], 1)  # p + F(p) inside the image
    np.testing.assert_array_equal(mask[:, 5:], 0)  # pushed out of the right border
    self.assertEqual(float(np.asarray(metrics.occlusion_mask(fw, fw)).max()), 0.0)  # inconsistent

  def test_summary(self):
    frames, _ = _golden()
    gt, out = frames["input_frames"], frames["output_frames_one"]
    r = metrics.clip_metrics(gt, out, 4)
    s = metrics.summarize([r])
    self.assertEqual(sorted(s), ["cdc", "psnr", "psnr_inter", "psnr_key", "ssim", "warp_error"])
    self.assertEqual(s["cdc"], 0.014742910861968994)
    self.assertEqual(s["psnr"], 10.93112889591325)
    self.assertTrue(math.isnan(s["warp_error"]))


if __name__ == "__main__":
  absltest.main()
