"""Pure ops against NumPy references and invariants.

The goldens cover the original's exact values.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from tcvc_jax.ops import color
from tcvc_jax.ops import flow_ops
from tcvc_jax.ops import warp


def _numpy_resample(x, flow):
  b, h, w, c = x.shape
  out = np.zeros_like(x)
  for n in range(b):
    for y in range(h):
      for xx in range(w):
        px, py = xx + flow[n, y, xx, 0], y + flow[n, y, xx, 1]
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        a, bb = px - x0, py - y0
        cl = lambda v, hi: min(max(v, 0), hi - 1)
        tl, tr = x[n, cl(y0, h), cl(x0, w)], x[n, cl(y0, h), cl(x0 + 1, w)]
        bl, br = x[n, cl(y0 + 1, h), cl(x0, w)], x[n, cl(y0 + 1, h), cl(x0 + 1, w)]
        out[n, y, xx] = ((1 - a) * (1 - bb) * tl + a * (1 - bb) * tr
                         + (1 - a) * bb * bl + a * bb * br)
  return out


def test_warp_zero_flow_is_identity():
  x = np.random.RandomState(0).randn(2, 5, 7, 3).astype(np.float32)
  np.testing.assert_array_equal(warp.backward_warp(jnp.asarray(x), jnp.zeros((2, 5, 7, 2))), x)


def test_warp_integer_shift_and_border_replication():
  x = np.arange(20, dtype=np.float32).reshape(1, 4, 5, 1)
  flow = np.zeros((1, 4, 5, 2), np.float32)
  flow[..., 0] = 2.0  # sample two pixels to the right
  out = np.asarray(warp.backward_warp(jnp.asarray(x), jnp.asarray(flow)))[0, :, :, 0]
  np.testing.assert_array_equal(out[:, :3], x[0, :, 2:, 0])
  np.testing.assert_array_equal(out[:, 3:], np.repeat(x[0, :, 4:, 0], 2, axis=1))  # edge, not zeros


def test_warp_matches_numpy_reference():
  rs = np.random.RandomState(1)
  x = rs.randn(2, 6, 9, 3).astype(np.float32)
  flow = (rs.randn(2, 6, 9, 2) * 4).astype(np.float32)
  np.testing.assert_allclose(warp.backward_warp(jnp.asarray(x), jnp.asarray(flow)),
                             _numpy_resample(x, flow), atol=1e-5)


def test_lab_round_trip():
  rgb = np.random.RandomState(2).rand(4, 8, 8, 3).astype(np.float32)
  back = color.lab_to_rgb(color.rgb_to_lab(jnp.asarray(rgb)))
  np.testing.assert_allclose(back, rgb, atol=2e-5)


def test_lab_reference_points():
  lab = np.asarray(color.rgb_to_lab(jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])))
  np.testing.assert_allclose(lab[0], [0.5, 0, 0], atol=1e-4)   # white: L* = 100
  np.testing.assert_allclose(lab[1], [-0.5, 0, 0], atol=1e-6)  # black: L* = 0
  np.testing.assert_allclose(lab[2] * [100, 110, 110] + [50, 0, 0], [53.24, 80.09, 67.20],
                             atol=0.02)


def test_correlation_peak_at_the_true_displacement():
  rs = np.random.RandomState(3)
  f1 = rs.randn(1, 12, 14, 128).astype(np.float32)  # many channels: the true match stands out
  f2 = np.roll(f1, shift=(4, -2), axis=(1, 2))  # content moves down 4, left 2
  corr = np.asarray(flow_ops.correlation(jnp.asarray(f1), jnp.asarray(f2), max_displacement=6))
  assert corr.shape == (1, 12, 14, 49)
  k = int(np.argmax(corr[0, 6, 7]))
  dy, dx = (k // 7 - 3) * 2, (k % 7 - 3) * 2
  assert (dy, dx) == (4, -2)


def test_channel_norm():
  x = jnp.array([[[[3.0, 4.0]]]])
  np.testing.assert_allclose(flow_ops.channel_norm(x), [[[[5.0]]]])


@pytest.mark.parametrize("fn", [color.rgb_to_lab, color.lab_to_rgb, color.rgb_to_xyz])
def test_colour_conversions_want_channels_last(fn):
  # The original's tensors are [B, 3, H, W]; ours are [..., 3]. A [B, 3, H, W] array used to come
  # back as [B, 3, H, 3] without a word.
  with pytest.raises(ValueError, match=r"channels-last.*\(1, 3, 4, 5\)"):
    fn(np.random.rand(1, 3, 4, 5).astype(np.float32))
  assert fn(np.random.rand(1, 4, 5, 3).astype(np.float32)).shape == (1, 4, 5, 3)


def test_colour_conversions_take_the_documented_dtypes():
  img = (np.random.default_rng(0).random((4, 5, 3)) * 255).astype(np.uint8)
  # uint8 pixels into the [0, 1] conversion gave L up to ~80 "normalised" (at most 0.5).
  with pytest.raises(ValueError, match="rgb must be real floating point .*got dtype uint8"):
    color.rgb_to_lab(img)
  # Floats into the uint8 one divided by 255 twice (near-black L).
  for bad in (img / 255.0, img.astype(np.uint16)):
    with pytest.raises(ValueError, match="rgb_to_gray_ab takes uint8 pixels"):
      color.rgb_to_gray_ab(bad, np)
  gray, ab = color.rgb_to_gray_ab(img, np)
  np.testing.assert_allclose(np.concatenate([gray, ab], -1), color.rgb_to_lab(img / 255.0, np),
                             atol=1e-6)
  assert color.rgb_to_lab([[0.5, 0.2, 0.1]]).shape == (1, 3)  # array-likes are arrays
