"""FlowNet2's other custom ops: FlowNetC correlation and ChannelNorm (NHWC)."""

import jax.numpy as jnp


def correlation(f1, f2, max_displacement=20, stride=2):
  """FlowNetC cost volume (pad 20, kernel 1, max displacement 20, stride1 1, stride2 2).

  out[..., k] = mean_c f1[y, x, c] * f2[y + dy, x + dx, c], f2 zero outside the image, for
  dy, dx in {-20, -18, ..., 20}; channel k = (dy / 2 + 10) * 21 + (dx / 2 + 10) (dy is the slow index).
  No activation (FlowNetC applies LeakyReLU(0.1) after it).

  Args:
    f1, f2: [B, H, W, C] feature maps.
    max_displacement, stride: displacement range and step in pixels.

  Returns:
    [B, H, W, (2 * max_displacement / stride + 1) ** 2].
  """
  b, h, w, c = f1.shape
  d = max_displacement
  f2p = jnp.pad(f2, ((0, 0), (d, d), (d, d), (0, 0)))
  offsets = range(-d, d + 1, stride)
  rows = []
  for dy in offsets:
    band = f2p[:, d + dy:d + dy + h]  # [B, H, W + 2d, C]
    shifted = jnp.stack([band[:, :, d + dx:d + dx + w] for dx in offsets], axis=3)  # [B, H, W, K, C]
    rows.append(jnp.einsum("bhwc,bhwkc->bhwk", f1, shifted))
  return jnp.concatenate(rows, axis=-1) / c


def channel_norm(x):
  """L2 norm over channels, keeping a channel axis of size 1; no epsilon, as in the original."""
  return jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
