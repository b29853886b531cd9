"""Parameter-free optical flow: coarse-to-fine TV-L1 with warping, in pure JAX.

A drop-in for FlowNet2 when no weights are at hand (CPU demo, tests). Same contract: given two
frames, return the flow FROM `img1` TO `img2` in pixels, channel 0 = x (right), channel 1 = y
(down), so that `img1(p) ~ img2(p + flow(p))` and `ops.warp.backward_warp(img2, flow)` rebuilds
`img1`.

Method: the TV-L1 model of Zach, Pock and Bischof, "A Duality Based Approach for Realtime TV-L1
Optical Flow" (DAGM 2007), solved as in Sánchez, Meinhardt-Llopis and Facciolo, "TV-L1 Optical Flow
Estimation" (IPOL 2013, doi:10.5201/ipol.2013.26), which minimises

    E(u) = sum_p |grad u_1(p)| + |grad u_2(p)| + lam * |img2(p + u(p)) - img1(p)|

by alternating (a) a pointwise thresholding step on the linearised L1 data term, and (b)
Chambolle's dual projection for the TV term of each flow component, coupled through `theta`. We
chose TV-L1 over Horn-Schunck because the L1 data term tolerates local outliers (occlusions,
specularities) and the TV term keeps motion boundaries sharp. Like every brightness-constancy
method it is not robust to a global gain change between the frames. Like the IPOL code:

- Both frames are rescaled jointly, per pair, to [0, 255], so the IPOL defaults hold for inputs in
  any range (here the normalised L channel in [-0.5, 0.5]); a constant pair gives zero flow.
- Frames are pre-smoothed with a Gaussian (`presmooth_sigma`, 0.8 px) and put in a pyramid with
  factor `zoom` (0.5): each level is smoothed by sigma = 0.6 * sqrt(1 / zoom**2 - 1) and resized
  (sizes rounded, so any H, W works; levels stop before a side drops under `min_size` pixels).
- Coarse to fine, the flow is upsampled (bilinear) and rescaled to the next level. Each level runs
  `num_warps` warps; each warp re-linearises `img2` (and its centred gradients) around the current
  flow with the project's bilinear, border-replicating `backward_warp`, then runs `num_iters`
  primal-dual iterations. The dual variables restart from zero at each level.

Differences from IPOL, for jit and speed: a fixed number of iterations per warp (no `epsilon`
stopping test), so every shape and trip count is static (levels are unrolled in Python, warps and
iterations are `lax.fori_loop`s); bilinear instead of bicubic warping; and, as in Wedel et al., "An
Improved Algorithm for TV-L1 Optical Flow" (2009), an optional 3x3 median filter of the flow after
each warp, which removes outliers from the linearisation.

Defaults (IPOL's for `lam`, `tau`, `theta`, `zoom`, `num_warps`, `presmooth_sigma`):

    lam=0.15            weight of the data term (for intensities in [0, 255]); lower = smoother
    tau=0.25            dual time step (Chambolle proves convergence for tau <= 1/8; 1/4 works)
    theta=0.3           coupling between the data and TV steps
    num_scales=5        most pyramid levels
    zoom=0.5            pyramid factor
    min_size=16         smallest side of the coarsest level, in pixels
    num_warps=5         re-linearisations per level
    num_iters=20        primal-dual iterations per warp (IPOL: up to 300 with a stopping test)
    presmooth_sigma=0.8 Gaussian pre-smoothing, pixels
    median_filter=True  3x3 median of the flow after each warp

No gradient flows through the estimate (the inputs are wrapped in `stop_gradient`), as with the
frozen FlowNet2 it stands in for.
"""

import functools
import math

from flax import linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from tcvc_jax.ops import warp

# Below this squared gradient norm (intensities in [0, 255]) the data term gives no direction.
_GRAD_IS_ZERO = 1e-10


def _gaussian_blur(x, sigma):
  """Separable Gaussian blur of x [B, H, W] with replicated borders; sigma is static."""
  if sigma <= 0:
    return x
  radius = max(1, int(math.ceil(3.0 * sigma)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps = taps / taps.sum()
  for axis in (1, 2):
    n = x.shape[axis]
    pad = [(0, 0)] * 3
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="edge")
    x = sum(float(t) * lax.slice_in_dim(xp, k, k + n, axis=axis) for k, t in enumerate(taps))
  return x


def _pyramid_shapes(h, w, num_scales, zoom, min_size):
  """Static (h, w) per level, finest first; rounds like IPOL's zoom_size."""
  shapes = [(h, w)]
  while len(shapes) < num_scales:
    ph, pw = shapes[-1]
    nh, nw = int(ph * zoom + 0.5), int(pw * zoom + 0.5)
    if min(nh, nw) < min_size or (nh, nw) == (ph, pw):
      break
    shapes.append((nh, nw))
  return shapes


def _pad2(x, top, bottom, left, right, mode="constant"):
  """Pads the last two (spatial: y, x) axes of x."""
  return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)], mode=mode)


def _centred_gradient(x):
  """Centred differences of x [..., H, W] (one-sided halves at the border); returns (d/dx, d/dy)."""
  xp = _pad2(x, 1, 1, 1, 1, mode="edge")
  gx = 0.5 * (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2])
  gy = 0.5 * (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1])
  return gx, gy


def _forward_gradient(u):
  """Forward differences of u [..., H, W], zero on the last column / row (Neumann)."""
  ux = _pad2(u[..., :, 1:] - u[..., :, :-1], 0, 0, 0, 1)
  uy = _pad2(u[..., 1:, :] - u[..., :-1, :], 0, 1, 0, 0)
  return ux, uy


def _divergence(px, py):
  """Backward-difference divergence of (px, py) [..., H, W]: minus the adjoint of the gradient."""
  px = px[..., :, :-1]
  py = py[..., :-1, :]
  return (_pad2(px, 0, 0, 0, 1) - _pad2(px, 0, 0, 1, 0)
          + _pad2(py, 0, 1, 0, 0) - _pad2(py, 1, 0, 0, 0))


def _median3x3(u):
  """3x3 median of u [..., H, W] over the last two axes, replicated borders."""
  h, w = u.shape[-2:]
  up = _pad2(u, 1, 1, 1, 1, mode="edge")
  v = [up[..., i:i + h, j:j + w] for i in range(3) for j in range(3)]
  # Devillard's 19-exchange median-of-9 network: min/max only, much faster than a sort on CPU.
  for a, b in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
               (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)):
    v[a], v[b] = jnp.minimum(v[a], v[b]), jnp.maximum(v[a], v[b])
  return v[4]


def _tvl1_level(i0, i1, flow, *, lam, tau, theta, num_warps, num_iters, median_filter):
  """Refines flow [B, h, w, 2] between i0, i1 [B, h, w] at one pyramid level."""
  gx, gy = _centred_gradient(i1)
  i1_stack = jnp.stack([i1, gx, gy], axis=-1)  # [B, h, w, 3]: warped together
  l_t = lam * theta
  tau_t = tau / theta

  # Inside the loops the flow and the duals are component-first, u [2, B, h, w], so the spatial
  # axes are innermost and vectorise (a trailing axis of 2 does not).
  def warp_step(_, carry):
    u, px, py = carry
    i1w = jnp.moveaxis(warp.backward_warp(i1_stack, jnp.moveaxis(u, 0, -1)), -1, 0)  # [3, B, h, w]
    grad = i1w[1:]  # [2, B, h, w]: gradient of img2 at p + u
    grad2 = grad[0] * grad[0] + grad[1] * grad[1]  # [B, h, w]
    rho_c = i1w[0] - grad[0] * u[0] - grad[1] * u[1] - i0  # residual minus its linear part
    inv_grad2 = jnp.where(grad2 > _GRAD_IS_ZERO, 1.0 / jnp.maximum(grad2, _GRAD_IS_ZERO), 0.0)

    def iteration(_, state):
      u, px, py = state
      rho = rho_c + grad[0] * u[0] + grad[1] * u[1]
      # Closed-form minimiser of lam * |rho(v)| + |v - u|^2 / (2 theta) along the gradient.
      step = jnp.where(rho > l_t * grad2, -l_t, -rho * inv_grad2)  # [B, h, w]
      step = jnp.where(rho < -l_t * grad2, l_t, step)
      u = u + step * grad + theta * _divergence(px, py)
      ux, uy = _forward_gradient(u)
      norm = 1.0 + tau_t * jnp.sqrt(ux * ux + uy * uy)  # per flow component
      return u, (px + tau_t * ux) / norm, (py + tau_t * uy) / norm

    u, px, py = lax.fori_loop(0, num_iters, iteration, (u, px, py))
    if median_filter:
      u = _median3x3(u)
    return u, px, py

  u = jnp.moveaxis(flow, -1, 0)  # [2, B, h, w]
  zeros = jnp.zeros_like(u)
  u, _, _ = lax.fori_loop(0, num_warps, warp_step, (u, zeros, zeros))
  return jnp.moveaxis(u, 0, -1)


def _to_gray_255(img1, img2):
  """[B, H, W, C] pair -> two [B, H, W] float32 frames jointly rescaled per pair to [0, 255]."""
  i0 = jnp.mean(lax.stop_gradient(img1).astype(jnp.float32), axis=-1)
  i1 = jnp.mean(lax.stop_gradient(img2).astype(jnp.float32), axis=-1)
  lo = jnp.minimum(i0.min(axis=(1, 2)), i1.min(axis=(1, 2)))[:, None, None]  # [B, 1, 1]
  hi = jnp.maximum(i0.max(axis=(1, 2)), i1.max(axis=(1, 2)))[:, None, None]
  scale = jnp.where(hi > lo, 255.0 / jnp.where(hi > lo, hi - lo, 1.0), 0.0)
  return (i0 - lo) * scale, (i1 - lo) * scale


@functools.partial(
    jax.jit,
    static_argnames=("lam", "tau", "theta", "num_scales", "zoom", "min_size", "num_warps",
                     "num_iters", "presmooth_sigma", "median_filter"))
def estimate_flow(img1, img2, *, lam=0.15, tau=0.25, theta=0.3, num_scales=5, zoom=0.5,
                  min_size=16, num_warps=5, num_iters=20, presmooth_sigma=0.8, median_filter=True):
  """Estimates the optical flow from `img1` to `img2` with coarse-to-fine TV-L1.

  Args:
    img1: [B, H, W, C] first frame (C = 1 in TCVC; more channels are averaged), any range.
    img2: [B, H, W, C] second frame, same shape.
    lam: data-term weight, for intensities rescaled to [0, 255].
    tau: dual time step.
    theta: coupling between the data and TV steps.
    num_scales: most pyramid levels (1 = no pyramid).
    zoom: downsampling factor between levels, in (0, 1).
    min_size: no level gets a side shorter than this, in pixels.
    num_warps: re-linearisations (warps) per level.
    num_iters: primal-dual iterations per warp.
    presmooth_sigma: Gaussian pre-smoothing of both frames, in pixels (0 = off).
    median_filter: whether to median-filter (3x3) the flow after each warp.

  Returns:
    [B, H, W, 2] float32 flow in pixels, (x, y) order: img1(p) ~ img2(p + flow(p)).
  """
  if img1.ndim != 4 or img1.shape != img2.shape:
    raise ValueError(f"img1, img2 must both be [B, H, W, C]; got {img1.shape} and {img2.shape}")
  if not 0.0 < zoom < 1.0:
    raise ValueError(f"zoom must be in (0, 1), got {zoom}")
  b, h, w, _ = img1.shape
  i0, i1 = _to_gray_255(img1, img2)
  i0 = _gaussian_blur(i0, presmooth_sigma)
  i1 = _gaussian_blur(i1, presmooth_sigma)
  shapes = _pyramid_shapes(h, w, num_scales, zoom, min_size)
  sigma = 0.6 * math.sqrt(1.0 / zoom ** 2 - 1.0)
  pyramid = [(i0, i1)]
  for hs, ws in shapes[1:]:
    p0, p1 = pyramid[-1]
    pyramid.append(tuple(
        jax.image.resize(_gaussian_blur(p, sigma), (b, hs, ws), "linear", antialias=False)
        for p in (p0, p1)))

  flow = jnp.zeros((b,) + shapes[-1] + (2,), jnp.float32)  # [B, h, w, 2] at the coarsest level
  for level in reversed(range(len(shapes))):
    hs, ws = shapes[level]
    if flow.shape[1:3] != (hs, ws):
      scale = jnp.array([ws / flow.shape[2], hs / flow.shape[1]], jnp.float32)
      flow = jax.image.resize(flow, (b, hs, ws, 2), "linear", antialias=False) * scale
    flow = _tvl1_level(*pyramid[level], flow, lam=lam, tau=tau, theta=theta, num_warps=num_warps,
                       num_iters=num_iters, median_filter=median_filter)
  return flow


class ClassicalFlow(nn.Module):
  """Linen wrapper of `estimate_flow` with no parameters, to stand in for FlowNet2 by config.

  Attributes mirror the keyword arguments of `estimate_flow`.
  """
  lam: float = 0.15
  tau: float = 0.25
  theta: float = 0.3
  num_scales: int = 5
  zoom: float = 0.5
  min_size: int = 16
  num_warps: int = 5
  num_iters: int = 20
  presmooth_sigma: float = 0.8
  median_filter: bool = True

  def __call__(self, img1, img2):
    """Returns the [B, H, W, 2] float32 flow from img1 to img2 ([B, H, W, C] each), in pixels."""
    return estimate_flow(img1, img2, lam=self.lam, tau=self.tau, theta=self.theta,
                         num_scales=self.num_scales, zoom=self.zoom, min_size=self.min_size,
                         num_warps=self.num_warps, num_iters=self.num_iters,
                         presmooth_sigma=self.presmooth_sigma, median_filter=self.median_filter)
