"""FlowNet2's other custom ops: FlowNetC correlation and ChannelNorm (NHWC)."""

import jax.numpy as jnp
import numpy as np


def correlation(f1, f2, max_displacement=20, stride=2, block_rows=8):
  """FlowNetC cost volume (pad 20, kernel 1, max displacement 20, stride1 1, stride2 2).

  out[..., k] = mean_c f1[y, x, c] * f2[y + dy, x + dx, c], f2 zero outside the image, for
  dy, dx in {-20, -18, ..., 20}; channel k = (dy / 2 + 10) * 21 + (dx / 2 + 10) (dy is the slow
  index). No activation (FlowNetC applies LeakyReLU(0.1) after it).

  Computed as matrix products: a block of `block_rows` rows of f1 against every f2 pixel those rows
  can reach (rows y0 - d .. y0 + r + d of the zero-padded f2), then the 441 needed entries are
  picked out. A direct shift-multiply-reduce per displacement streams both maps 441 times and is
  ~10x slower on CPU.

  Args:
    f1, f2: [B, H, W, C] feature maps.
    max_displacement, stride: displacement range and step in pixels.
    block_rows: rows of f1 per matrix product (trades redundant products for larger matmuls).

  Returns:
    [B, H, W, (2 * max_displacement / stride + 1) ** 2].
  """
  b, h, w, c = f1.shape
  d = max_displacement
  offs = np.arange(-d, d + 1, stride)
  r = min(block_rows, h)
  hp = -(-h // r) * r  # rows rounded up to whole blocks
  wp = w + 2 * d
  f1 = jnp.pad(f1, ((0, 0), (0, hp - h), (0, 0), (0, 0)))
  f2p = jnp.pad(f2, ((0, 0), (d, d + hp - h), (d, d), (0, 0)))
  # Column of the f2 block that f1 pixel (row yl of the block, x) meets at displacement (dy, dx).
  yl, x = np.meshgrid(np.arange(r), np.arange(w), indexing="ij")
  idx = (yl[..., None, None] + d + offs[:, None]) * wp + x[..., None, None] + d + offs[None, :]
  idx = jnp.asarray(idx.reshape(1, r * w, -1))  # [1, r*W, K*K], dy-major
  blocks = []
  for y0 in range(0, hp, r):
    a = f1[:, y0:y0 + r].reshape(b, r * w, c)
    z = f2p[:, y0:y0 + r + 2 * d].reshape(b, (r + 2 * d) * wp, c)
    m = jnp.einsum("bpc,bqc->bpq", a, z)  # [B, r*W, (r+2d)*(W+2d)]
    picked = jnp.take_along_axis(m, jnp.broadcast_to(idx, (b,) + idx.shape[1:]), axis=-1)
    blocks.append(picked.reshape(b, r, w, -1))
  return jnp.concatenate(blocks, axis=1)[:, :h] / c


def channel_norm(x):
  """L2 norm over channels, keeping a channel axis of size 1; no epsilon, as in the original."""
  return jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
