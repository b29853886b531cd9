"""SIGGRAPH17 ("IDC", Zhang et al. 2017) anchor-frame colorizer as used by TCVC.

Input is normalised L [B, H, W, 1] (H, W multiples of 8) and optional user colour hints: the
network sees [L, ab_hint, mask] as in the original `forward(input_A, input_B, mask_B)`, with zeros
for a missing hint or mask; without hints that is [L, 0, 0, 0], which is what TCVC feeds. Returns
the ab prediction in [-1, 1] (units of 1/110) and the 128-channel `conv10_2` feature that TCVC
propagates. The original computes the decoder tail twice with identical inputs; here it runs once.
"""

import functools
from typing import Any
from typing import Sequence

from flax import linen as nn
import jax.numpy as jnp

from tcvc_jax.models.layers import TorchSequential
from tcvc_jax.models.layers import activation_dtype

# Channel widths of blocks 1..10 of the released model.
DEFAULT_WIDTHS = (64, 128, 256, 512, 512, 512, 512, 256, 128, 128)


def _encoder_block(n_conv, width, dilation=1):
  """[Conv, ReLU] * n_conv, then BN; torch indices 0, 2, ... and BN at 2 * n_conv."""
  layers = []
  for j in range(n_conv):
    layers += [("conv", str(2 * j), width, 3, 1, dilation, dilation), ("relu",)]
  layers.append(("bn", str(2 * n_conv)))
  return tuple(layers)


def _hint(h, x, channels, name):
  """A hint as [B, H, W, channels] in x's dtype (zeros if None), checked against x [B, H, W, 1]."""
  shape = x.shape[:3] + (channels,)
  if h is None:
    return jnp.zeros(shape, x.dtype)
  if tuple(h.shape) != shape:
    raise ValueError(f"{name} must have shape {shape} (gray's [B, H, W] and {channels} channels), "
                     f"got {tuple(h.shape)}")
  return jnp.asarray(h).astype(x.dtype)


class SIGGRAPH17(nn.Module):
  """The SIGGRAPH17 generator; `widths` scales it down for tests.

  The last width is the feature size.
  """
  widths: Sequence[int] = DEFAULT_WIDTHS
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None

  def setup(self):
    w = self.widths
    seq = functools.partial(TorchSequential, dtype=self.dtype, param_dtype=self.param_dtype,
                            precision=self.precision)
    self.model1 = seq(_encoder_block(2, w[0]))
    self.model2 = seq(_encoder_block(2, w[1]))
    self.model3 = seq(_encoder_block(3, w[2]))
    self.model4 = seq(_encoder_block(3, w[3]))
    self.model5 = seq(_encoder_block(3, w[4], dilation=2))
    self.model6 = seq(_encoder_block(3, w[5], dilation=2))
    self.model7 = seq(_encoder_block(3, w[6]))
    self.model8up = seq((("convT", "0", w[7]),))
    self.model3short8 = seq((("conv", "0", w[7], 3, 1, 1, 1),))
    self.model8 = seq((("relu",), ("conv", "1", w[7], 3, 1, 1, 1), ("relu",),
                       ("conv", "3", w[7], 3, 1, 1, 1), ("relu",), ("bn", "5")))
    self.model9up = seq((("convT", "0", w[8]),))
    self.model2short9 = seq((("conv", "0", w[8], 3, 1, 1, 1),))
    self.model9 = seq((("relu",), ("conv", "1", w[8], 3, 1, 1, 1), ("relu",), ("bn", "3")))
    self.model10up = seq((("convT", "0", w[9]),))
    self.model1short10 = seq((("conv", "0", w[9], 3, 1, 1, 1),))
    self.model10 = seq((("relu",), ("conv", "1", w[9], 3, 1, 1, 1), ("lrelu", 0.2)))
    self.model_out = seq((("conv", "0", 2, 1, 1, 0, 1), ("tanh",)))

  def __call__(self, gray, hint_ab=None, hint_mask=None):
    """Colorizes frames, optionally guided by user colour hints.

    Args:
      gray: [B, H, W, 1] normalised L.
      hint_ab: optional [B, H, W, 2] hint colours, normalised ab (a* / 110, b* / 110). Fed as
        given, like the original: it should be 0 where `hint_mask` is 0. None: zeros.
      hint_mask: optional [B, H, W, 1], 1 where a hint is given, else 0. None: zeros.

    Returns:
      (ab [B, H, W, 2], feature [B, H, W, widths[-1]]).
    """
    if gray.shape[1] % 8 or gray.shape[2] % 8:
      raise ValueError(f"SIGGRAPH17 needs H and W divisible by 8, got {gray.shape[1:3]}")
    x = gray.astype(activation_dtype(self.dtype))
    if hint_ab is None and hint_mask is None:
      hints = [jnp.zeros(x.shape[:3] + (3,), x.dtype)]  # no hints: one zero block, as always
    else:
      hints = [_hint(hint_ab, x, 2, "hint_ab"), _hint(hint_mask, x, 1, "hint_mask")]
    x = jnp.concatenate([x] + hints, axis=-1)  # [B, H, W, 4]: L, ab hint, mask
    c1 = self.model1(x)
    c2 = self.model2(c1[:, ::2, ::2])  # subsampling keeps even rows/cols; it is not pooling
    c3 = self.model3(c2[:, ::2, ::2])
    c4 = self.model4(c3[:, ::2, ::2])
    c7 = self.model7(self.model6(self.model5(c4)))
    c8 = self.model8(self.model8up(c7) + self.model3short8(c3))
    c9 = self.model9(self.model9up(c8) + self.model2short9(c2))
    feat = self.model10(self.model10up(c9) + self.model1short10(c1))  # conv10_2
    return self.head(feat), feat

  def head(self, feat):
    """The output head (1x1 conv + tanh): 128-channel feature -> ab.

    TCVC reuses it for internal frames.
    """
    return self.model_out(feat)
