"""FlowNet2 (Ilg et al. 2017) as TCVC uses it: FlowNetC, FlowNetS x2, FlowNetSD and FlowNetFusion.

No BatchNorm (batchNorm=False); every conv is followed by LeakyReLU(0.1) unless noted. `FlowNet2`
takes two images [B, H, W, 3] in [0, rgb_max] (H, W multiples of 64) and returns the flow from
image 1 to image 2, [B, H, W, 2] in pixels, channel 0 = x. `flow_from_gray` is how TCVC calls it:
normalised L repeated to 3 channels, plus 0.5.
"""

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from tcvc_jax.models.layers import TorchSequential
from tcvc_jax.models.layers import conv
from tcvc_jax.models.layers import conv_transpose
from tcvc_jax.ops.flow_ops import channel_norm
from tcvc_jax.ops.flow_ops import correlation
from tcvc_jax.ops.warp import backward_warp

DIV_FLOW = 20.0


def _lrelu(x):
  return nn.leaky_relu(x, negative_slope=0.1)


class _Base(nn.Module):
  """Helpers shared by the sub-networks (parameter paths follow networks/submodules.py)."""
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None

  def _kw(self):
    return dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)

  def conv(self, name, feats, k=3, s=1, act=True):
    """`conv(...)` = Sequential[Conv2d, LReLU(0.1)]; `i_conv` = Sequential[Conv2d] (act=False)."""
    layers = (("conv", "0", feats, k, s, (k - 1) // 2, 1),) + ((("lrelu", 0.1),) if act else ())
    return TorchSequential(layers, name=name, **self._kw())

  def deconv(self, name, feats):
    return TorchSequential((("convT", "0", feats), ("lrelu", 0.1)), name=name, **self._kw())

  def predict_flow(self, name):
    return conv(2, 3, 1, 1, name=name, **self._kw())

  def up_flow(self, name, use_bias=True):
    return conv_transpose(2, name=name, use_bias=use_bias, **self._kw())

  def decoder(self, feats, top, up_bias):
    """Shared coarse-to-fine decoder of FlowNetC / FlowNetS: returns flow2 at 1/4 resolution.

    Args:
      feats: encoder features at 1/4, 1/8, 1/16, 1/32 (the concat partners of levels 2..5).
      top: the 1/64 feature (conv6_1).
      up_bias: whether the upsampled_flow ConvTs have a bias (False in FlowNetS).
    """
    flow = self.predict_flow("predict_flow6")(top)
    x = top
    for level, skip, dfeat in zip((5, 4, 3, 2), feats[::-1], (512, 256, 128, 64), strict=True):
      up = self.up_flow(f"upsampled_flow{level + 1}_to_{level}", up_bias)(flow)
      x = jnp.concatenate([skip, self.deconv(f"deconv{level}", dfeat)(x), up], axis=-1)
      flow = self.predict_flow(f"predict_flow{level}")(x)
    return flow


def _towers(mdl, images):
  """FlowNetC's siamese conv1..conv3 on [M, H, W, 3] images -> (conv2, conv3) features."""
  c2 = mdl.conv("conv2", 128, 5, 2)(mdl.conv("conv1", 64, 7, 2)(images))
  return c2, mdl.conv("conv3", 256, 5, 2)(c2)


def _mirrored_towers(mdl, images):
  """`_towers` of [img1s, img2s] (2B images) for a batch whose second half is its first half with
  the images swapped: the towers run on the first half's images only (B instead of 2B)."""
  h = images.shape[0] // 4
  feats = _towers(mdl, jnp.concatenate([images[:h], images[2 * h:3 * h]], axis=0))
  # [a, b] -> img1s [a, b], img2s [b, a]
  return tuple(jnp.concatenate([f[:h], f[h:], f[h:], f[:h]], axis=0) for f in feats)


class FlowNetC(_Base):
  """FlowNetC on a 6-channel pair; returns flow2 [B, H/4, W/4, 2]."""

  @nn.compact
  def __call__(self, x, mirrored=None):
    """mirrored: optional traced bool, see FlowNet2."""
    b = x.shape[0]
    # conv1..conv3 share weights across the two images: run them on both at once.
    pair = jnp.concatenate([x[..., :3], x[..., 3:]], axis=0)
    if mirrored is None or b % 2:
      c2, c3 = _towers(self, pair)
    else:
      c2, c3 = nn.cond(mirrored, _mirrored_towers, _towers, self, pair)
    c2a, c3a, c3b = c2[:b], c3[:b], c3[b:]
    corr = _lrelu(correlation(c3a, c3b))  # [B, H/8, W/8, 441]
    redir = self.conv("conv_redir", 32, 1, 1)(c3a)
    c3_1 = self.conv("conv3_1", 256)(jnp.concatenate([redir, corr], axis=-1))
    c4 = self.conv("conv4_1", 512)(self.conv("conv4", 512, s=2)(c3_1))
    c5 = self.conv("conv5_1", 512)(self.conv("conv5", 512, s=2)(c4))
    c6 = self.conv("conv6_1", 1024)(self.conv("conv6", 1024, s=2)(c5))
    return self.decoder([c2a, c3_1, c4, c5], c6, up_bias=True)


class FlowNetS(_Base):
  """FlowNetS on a 12-channel stack; returns flow2 [B, H/4, W/4, 2]."""

  @nn.compact
  def __call__(self, x):
    c2 = self.conv("conv2", 128, 5, 2)(self.conv("conv1", 64, 7, 2)(x))
    c3 = self.conv("conv3_1", 256)(self.conv("conv3", 256, 5, 2)(c2))
    c4 = self.conv("conv4_1", 512)(self.conv("conv4", 512, s=2)(c3))
    c5 = self.conv("conv5_1", 512)(self.conv("conv5", 512, s=2)(c4))
    c6 = self.conv("conv6_1", 1024)(self.conv("conv6", 1024, s=2)(c5))
    return self.decoder([c2, c3, c4, c5], c6, up_bias=False)


class FlowNetSD(_Base):
  """FlowNetSD (small displacements) on the 6-channel pair; returns flow2 [B, H/4, W/4, 2]."""

  @nn.compact
  def __call__(self, x):
    c0 = self.conv("conv0", 64)(x)
    c1 = self.conv("conv1_1", 128)(self.conv("conv1", 64, s=2)(c0))
    c2 = self.conv("conv2_1", 128)(self.conv("conv2", 128, s=2)(c1))
    c3 = self.conv("conv3_1", 256)(self.conv("conv3", 256, s=2)(c2))
    c4 = self.conv("conv4_1", 512)(self.conv("conv4", 512, s=2)(c3))
    c5 = self.conv("conv5_1", 512)(self.conv("conv5", 512, s=2)(c4))
    c6 = self.conv("conv6_1", 1024)(self.conv("conv6", 1024, s=2)(c5))
    flow = self.predict_flow("predict_flow6")(c6)
    x = c6
    for level, skip, dfeat in zip((5, 4, 3, 2), (c5, c4, c3, c2), (512, 256, 128, 64), strict=True):
      up = self.up_flow(f"upsampled_flow{level + 1}_to_{level}")(flow)
      x = jnp.concatenate([skip, self.deconv(f"deconv{level}", dfeat)(x), up], axis=-1)
      inter = self.conv(f"inter_conv{level}", dfeat, act=False)(x)
      flow = self.predict_flow(f"predict_flow{level}")(inter)
    return flow


class FlowNetFusion(_Base):
  """FlowNetFusion on the 11-channel stack; returns the full-resolution flow [B, H, W, 2]."""

  @nn.compact
  def __call__(self, x):
    c0 = self.conv("conv0", 64)(x)
    c1 = self.conv("conv1_1", 128)(self.conv("conv1", 64, s=2)(c0))
    c2 = self.conv("conv2_1", 128)(self.conv("conv2", 128, s=2)(c1))
    flow2 = self.predict_flow("predict_flow2")(c2)
    cat1 = jnp.concatenate(
        [c1, self.deconv("deconv1", 32)(c2), self.up_flow("upsampled_flow2_to_1")(flow2)], axis=-1)
    flow1 = self.predict_flow("predict_flow1")(self.conv("inter_conv1", 32, act=False)(cat1))
    cat0 = jnp.concatenate(
        [c0, self.deconv("deconv0", 16)(cat1), self.up_flow("upsampled_flow1_to_0")(flow1)],
        axis=-1)
    return self.predict_flow("predict_flow0")(self.conv("inter_conv0", 16, act=False)(cat0))


def _up_bilinear4(f):
  b, h, w, c = f.shape
  return jax.image.resize(f, (b, 4 * h, 4 * w, c), method="bilinear", antialias=False)


def _up_nearest4(f):
  return jnp.repeat(jnp.repeat(f, 4, axis=1), 4, axis=2)


class FlowNet2(nn.Module):
  """The full FlowNet2 stack (flownetc, flownets_1, flownets_2, flownets_d, flownetfusion)."""
  rgb_max: float = 1.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, img1, img2, mirrored=None):
    """Flow from img1 to img2.

    Args:
      img1, img2: [B, H, W, 3] each, H and W multiples of 64.
      mirrored: optional traced bool (B even): true promises that pairs B/2 .. B-1 are pairs
        0 .. B/2-1 with their two images swapped, as in F(a, b) and F(b, a). Both share the mean
        that normalises them, so FlowNetC's siamese towers see the same images: they then run on
        the first half's images only, half their work. The flows are the same either way.

    Returns: [B, H, W, 2].
    """
    if img1.shape[1] % 64 or img1.shape[2] % 64:
      raise ValueError(f"FlowNet2 needs H and W divisible by 64, got {img1.shape[1:3]}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    img1 = img1.astype(self.dtype)
    img2 = img2.astype(self.dtype)
    # Per sample and channel, the mean over both images jointly.
    mu = (jnp.mean(img1, axis=(1, 2), keepdims=True)
          + jnp.mean(img2, axis=(1, 2), keepdims=True)) / 2
    i1 = (img1 - mu) / self.rgb_max
    i2 = (img2 - mu) / self.rgb_max
    x = jnp.concatenate([i1, i2], axis=-1)  # [B, H, W, 6]

    def refine_input(flow):
      warped = backward_warp(i2, flow)
      # 12 channels.
      return jnp.concatenate([x, warped, flow / DIV_FLOW, channel_norm(i1 - warped)], axis=-1)

    f_c = _up_bilinear4(FlowNetC(name="flownetc", **kw)(x, mirrored) * DIV_FLOW)
    f_s1 = _up_bilinear4(FlowNetS(name="flownets_1", **kw)(refine_input(f_c)) * DIV_FLOW)
    f_s2 = _up_nearest4(FlowNetS(name="flownets_2", **kw)(refine_input(f_s1)) * DIV_FLOW)
    # Divided, not multiplied: inherited from NVIDIA's code and required for weight parity.
    f_sd = _up_nearest4(FlowNetSD(name="flownets_d", **kw)(x) / DIV_FLOW)
    fusion_in = jnp.concatenate([
        i1, f_sd, f_s2, channel_norm(f_sd), channel_norm(f_s2),
        channel_norm(i1 - backward_warp(i2, f_sd)), channel_norm(i1 - backward_warp(i2, f_s2))],
        axis=-1)
    return FlowNetFusion(name="flownetfusion", **kw)(fusion_in)


def mirrored_chunk_order(pairs, chunk):
  """An order of `pairs` (frame index pairs) for the flow net's chunks of `chunk` pairs.

  A pair and its reverse (F(a, b) and F(b, a)) go into one chunk where whole chunks of such couples
  can be filled: chunk/2 first members, then their reverses in the same order (FlowNet2's
  `mirrored` layout, which runs FlowNetC's towers once for both); the other pairs follow in their
  own order.

  Returns:
    (order: indices into pairs, mirrored: one bool per chunk, or None when no chunk is mirrored).
  """
  if chunk < 2 or chunk % 2:
    return list(range(len(pairs))), None
  index = {}
  for p, pair in enumerate(pairs):
    index.setdefault(pair, p)
  couples, used = [], set()
  for p, (a, b) in enumerate(pairs):
    q = index.get((b, a))
    if a != b and q is not None and p not in used and q not in used:
      couples.append((p, q))
      used.update((p, q))
  half = chunk // 2
  full = len(couples) // half
  order = []
  for c in range(full):
    group = couples[c * half:(c + 1) * half]
    order += [p for p, _ in group] + [q for _, q in group]
  taken = set(order)
  order += [p for p in range(len(pairs)) if p not in taken]
  if not full:
    return order, None
  chunks = -(-len(pairs) // chunk)
  return order, [c < full for c in range(chunks)]


def flow_from_gray(flow_net, gray1, gray2, **kwargs):
  """TCVC's call: F(a, b) = FlowNet2(rep3(a) + 0.5, rep3(b) + 0.5) on normalised L [B, H, W, 1]."""
  rep = lambda g: jnp.repeat(g, 3, axis=-1) + 0.5
  return flow_net(rep(gray1), rep(gray2), **kwargs)
