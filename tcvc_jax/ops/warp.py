"""Backward warping with the semantics of FlowNet2's Resample2d (the op TCVC warps with).

For each output pixel p = (y, x) the sample position is (x + u, y + v) in absolute pixels, pixel
centres at integers. The bilinear weights come from the unclamped position; the four neighbour
indices are clamped to the border, so samples outside the image replicate the edge (equal to
`grid_sample(bilinear, border, align_corners=True)`), never zeros.
"""

import jax.numpy as jnp


def backward_warp(x, flow):
  """Pulls `x` onto the grid of `flow`: out[p] = x[p + flow[p]].

  Args:
    x: [B, H, W, C] image or feature map to sample from.
    flow: [B, H, W, 2] flow in pixels, channel 0 = x (right), channel 1 = y (down).

  Returns:
    [B, H, W, C], with the dtype of `x`.
  """
  b, h, w, c = x.shape
  if flow.shape != (b, h, w, 2):
    raise ValueError(f"flow must have shape {(b, h, w, 2)}, got {flow.shape}")
  flow = flow.astype(x.dtype)
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij")
  px = gx + flow[..., 0]  # [B, H, W]
  py = gy + flow[..., 1]
  x0 = jnp.floor(px)
  y0 = jnp.floor(py)
  alpha = (px - x0)[..., None]  # weights from the unclamped position
  beta = (py - y0)[..., None]
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)
  xl = jnp.clip(x0, 0, w - 1)
  xr = jnp.clip(x0 + 1, 0, w - 1)
  yt = jnp.clip(y0, 0, h - 1)
  yb = jnp.clip(y0 + 1, 0, h - 1)
  flat = x.reshape(b, h * w, c)

  def tap(yy, xx):
    idx = (yy * w + xx).reshape(b, h * w, 1)
    return jnp.take_along_axis(flat, idx, axis=1).reshape(b, h, w, c)

  # Summed in the order TL, TR, BL, BR like the CUDA kernel.
  out = (1 - alpha) * (1 - beta) * tap(yt, xl)
  out = out + alpha * (1 - beta) * tap(yt, xr)
  out = out + (1 - alpha) * beta * tap(yb, xl)
  out = out + alpha * beta * tap(yb, xr)
  return out
