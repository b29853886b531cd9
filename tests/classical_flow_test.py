"""Tests for the parameter-free TV-L1 flow estimator (tcvc_jax/models/classical_flow.py).

Frames are an analytic texture (sinusoids plus Gaussian blobs) sampled under a known motion, so
the ground-truth flow is exact: img1(p) = f(p), img2(q) = f(M^-1(q)), flow(p) = M(p) - p.
"""

import functools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax.models import classical_flow
from tcvc_jax.ops import warp

# Pixels dropped at each border before scoring: content enters or leaves there.
_MARGIN = 8


def _texture(x, y, seed):
  """Smooth random texture in about [-0.5, 0.5], evaluated at real coordinates x, y [H, W]."""
  rng = np.random.default_rng(seed)
  f = np.zeros_like(x)
  for _ in range(6):
    angle, period, phase = rng.uniform(0, np.pi), rng.uniform(8, 20), rng.uniform(0, 2 * np.pi)
    f += np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
  for _ in range(6):
    cx, cy, s, a = rng.uniform(0, 64), rng.uniform(0, 64), rng.uniform(3, 8), rng.uniform(-2, 2)
    f += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
  return f / 12


def _translation(shift):
  """Motion p -> p + shift: returns (inverse map, flow) as functions of (x, y)."""
  inverse = lambda x, y: (x - shift[0], y - shift[1])
  flow = lambda x, y: (np.full_like(x, shift[0]), np.full_like(y, shift[1]))
  return inverse, flow


def _rotation(degrees, cx, cy):
  """Rotation by `degrees` (clockwise on screen, y down) about (cx, cy)."""
  c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
  inverse = lambda x, y: (c * (x - cx) + s * (y - cy) + cx, -s * (x - cx) + c * (y - cy) + cy)
  flow = lambda x, y: (c * (x - cx) - s * (y - cy) + cx - x, s * (x - cx) + c * (y - cy) + cy - y)
  return inverse, flow


def _pair(h, w, motion, seed=0):
  """Returns img1, img2 [1, H, W, 1] float32 and the true flow [1, H, W, 2]."""
  inverse, flow = motion
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  img1 = _texture(x, y, seed)
  img2 = _texture(*inverse(x, y), seed)
  gt = np.stack(flow(x, y), axis=-1)
  as_batch = lambda a: jnp.asarray(a[None], jnp.float32)
  return as_batch(img1[..., None]), as_batch(img2[..., None]), gt[None]


def _interior(a):
  return np.asarray(a)[:, _MARGIN:-_MARGIN, _MARGIN:-_MARGIN]


def _epe(flow, gt):
  """Endpoint error per interior pixel, [B, H', W']."""
  return np.linalg.norm(_interior(flow) - _interior(gt), axis=-1)


class ClassicalFlowTest(absltest.TestCase):

  def test_subpixel_translation(self):
    img1, img2, gt = _pair(64, 64, _translation((2.5, -1.5)))
    flow = classical_flow.estimate_flow(img1, img2)
    self.assertEqual(flow.shape, (1, 64, 64, 2))
    self.assertEqual(flow.dtype, jnp.float32)
    epe = _epe(flow, gt)
    self.assertLess(epe.mean(), 0.1)  # measured 0.018
    self.assertLess(epe.max(), 0.3)  # measured 0.06

  def test_small_rotation(self):
    # 3 degrees about the centre: up to ~2.3 px at the corners.
    img1, img2, gt = _pair(64, 64, _rotation(3.0, 31.5, 31.5))
    epe = _epe(classical_flow.estimate_flow(img1, img2), gt)
    self.assertLess(epe.mean(), 0.15)  # measured 0.047
    self.assertLess(epe.max(), 0.5)  # measured 0.19

  def test_zero_motion_gives_zero_flow(self):
    img1, _, _ = _pair(64, 64, _translation((0.0, 0.0)))
    flow = classical_flow.estimate_flow(img1, img1)
    np.testing.assert_allclose(flow, 0.0, atol=1e-4)

  def test_constant_frames_give_zero_flow(self):
    img = jnp.full((1, 64, 64, 1), 0.25, jnp.float32)
    flow = classical_flow.estimate_flow(img, img)
    self.assertTrue(np.all(np.isfinite(flow)))
    np.testing.assert_allclose(flow, 0.0, atol=1e-6)

  def test_warp_residual_shrinks(self):
    for motion in (_translation((2.5, -1.5)), _rotation(3.0, 31.5, 31.5)):
      img1, img2, _ = _pair(64, 64, motion)
      flow = classical_flow.estimate_flow(img1, img2)
      residual = np.abs(_interior(warp.backward_warp(img2, flow) - img1)).mean()
      unwarped = np.abs(_interior(img2 - img1)).mean()
      self.assertLess(residual, 0.1 * unwarped)  # measured ratios 0.03 and 0.05

  def test_batch_of_two_motions(self):
    a1, a2, agt = _pair(64, 64, _translation((2.5, -1.5)), seed=0)
    b1, b2, bgt = _pair(64, 64, _translation((-1.0, 2.0)), seed=1)
    flow = classical_flow.estimate_flow(jnp.concatenate([a1, b1]), jnp.concatenate([a2, b2]))
    self.assertEqual(flow.shape, (2, 64, 64, 2))
    epe = _epe(flow, np.concatenate([agt, bgt]))
    self.assertLess(epe[0].mean(), 0.1)
    self.assertLess(epe[1].mean(), 0.1)
    # Pairs are independent: each element matches its own single-pair estimate.
    np.testing.assert_allclose(flow[:1], classical_flow.estimate_flow(a1, a2), atol=1e-4)

  def test_odd_size(self):
    # 50 x 70: pyramid levels 50x70, 25x35 (16 px minimum side stops the next one).
    img1, img2, gt = _pair(50, 70, _translation((1.5, 0.75)))
    flow = classical_flow.estimate_flow(img1, img2)
    self.assertEqual(flow.shape, (1, 50, 70, 2))
    self.assertLess(_epe(flow, gt).mean(), 0.15)  # measured 0.02

  def test_intensity_range_invariance(self):
    img1, img2, _ = _pair(64, 64, _translation((2.5, -1.5)))
    flow = classical_flow.estimate_flow(img1, img2)
    rescaled = classical_flow.estimate_flow(100.0 * img1 + 7.0, 100.0 * img2 + 7.0)
    np.testing.assert_allclose(rescaled, flow, atol=1e-2)

  def test_jit_and_stop_gradient(self):
    img1, img2, gt = _pair(64, 64, _translation((2.5, -1.5)))
    estimate = functools.partial(classical_flow.estimate_flow, num_iters=10)
    flow = jax.jit(estimate)(img1, img2)
    np.testing.assert_allclose(flow, estimate(img1, img2), atol=1e-5)
    self.assertLess(_epe(flow, gt).mean(), 0.1)
    grad = jax.grad(lambda a: jnp.sum(estimate(a, img2)))(img1)
    np.testing.assert_array_equal(grad, 0.0)

  def test_module_has_no_params(self):
    img1, img2, _ = _pair(64, 64, _translation((2.5, -1.5)))
    model = classical_flow.ClassicalFlow(num_iters=10)
    variables = model.init(jax.random.key(0), img1, img2)
    self.assertEmpty(jax.tree.leaves(variables))
    flow = jax.jit(model.apply)(variables, img1, img2)
    np.testing.assert_allclose(
        flow, classical_flow.estimate_flow(img1, img2, num_iters=10), atol=1e-5)


if __name__ == "__main__":
  absltest.main()
