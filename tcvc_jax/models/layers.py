"""Shared Linen building blocks whose parameter paths mirror the original PyTorch module paths.

A PyTorch key such as `fea_key.model1.0.weight` lives at the Flax path `fea_key/model1/0/kernel`: every
torch module name becomes a Flax module name, so the checkpoint converter maps keys mechanically.
"""

from typing import Any, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any


def torch_default_init(fan_in_axes=(0, 1, 2)):
  """PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform, a=sqrt(5))."""

  def init(key, shape, dtype=jnp.float32):
    fan_in = 1
    for a in fan_in_axes:
      fan_in *= shape[a]
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(features, kernel, stride=1, pad=None, dilation=1, *, name, dtype=None, param_dtype=jnp.float32,
         precision=None, use_bias=True, fan_in=None):
  """nn.Conv with PyTorch's explicit symmetric padding and default init."""
  pad = (kernel - 1) // 2 * dilation if pad is None else pad
  # Bias bound uses the kernel's fan-in (in_ch * kh * kw), which the lazy shape of a bias cannot know.
  bias_init = nn.initializers.zeros if fan_in is None else (
      lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -1 / fan_in ** 0.5, 1 / fan_in ** 0.5))
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                 kernel_dilation=(dilation, dilation), use_bias=use_bias, name=name, dtype=dtype,
                 param_dtype=param_dtype, precision=precision, kernel_init=torch_default_init(),
                 bias_init=bias_init)


# For output phase r (output index 2m + r) along one axis, the k4 s2 p1 transposed conv reads inputs
# m - 1 and m with kernel taps 3 and 1 (r = 0) or m and m + 1 with taps 2 and 0 (r = 1).
_PHASE_TAPS = {0: ((3, 1), (1, 0)), 1: ((2, 0), (0, 1))}  # r -> (torch kernel indices, padding)


class ConvTranspose4x4(nn.Module):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1): doubles H and W.

  The kernel is stored like flax's ConvTranspose with `transpose_kernel=True`: (kh, kw, out, in), i.e.
  torch's (in, out, kh, kw) weight transposed by (2, 3, 1, 0). It is evaluated as four 2x2 convolutions,
  one per output phase, interleaved: the same products as the transposed convolution without the
  zero-dilated input XLA would otherwise convolve (4x fewer multiply-adds, and plain convolutions).
  """
  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    b, h, w, cin = x.shape
    kernel = self.param("kernel", torch_default_init((0, 1, 2)), (4, 4, self.features, cin),
                        self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype) \
        if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    w_io = jnp.transpose(kernel, (0, 1, 3, 2))  # (4, 4, in, out)
    rows = []
    for ry in (0, 1):
      ky, pad_y = _PHASE_TAPS[ry]
      cols = []
      for rx in (0, 1):
        kx, pad_x = _PHASE_TAPS[rx]
        k2 = w_io[jnp.array(ky)][:, jnp.array(kx)]  # (2, 2, in, out)
        cols.append(jax.lax.conv_general_dilated(
            x, k2, (1, 1), (pad_y, pad_x), dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision))
      rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2 (rx), out]
    y = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, self.features)  # [B, H, 2 (ry), W, 2, out]
    return y if bias is None else y + bias


def conv_transpose(features, *, name, dtype=None, param_dtype=jnp.float32, precision=None, use_bias=True):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) (see ConvTranspose4x4)."""
  return ConvTranspose4x4(features, use_bias=use_bias, name=name, dtype=dtype, param_dtype=param_dtype,
                          precision=precision)


class TorchSequential(nn.Module):
  """A torch.nn.Sequential look-alike: children are named by their position in the original.

  `layers` holds tuples:
    ('conv', name, features, kernel, stride, pad, dilation)   Conv2d with bias
    ('convT', name, features)                                 ConvTranspose2d k4 s2 p1 with bias
    ('bn', name)                                              BatchNorm2d, eval mode, eps 1e-5
    ('relu',) | ('lrelu', slope) | ('tanh',)                  parameter-free activations
  """
  layers: Sequence[Tuple[Any, ...]]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for spec in self.layers:
      kind = spec[0]
      if kind == "conv":
        _, name, feats, k, s, p, d = spec
        fan_in = x.shape[-1] * k * k
        x = conv(feats, k, s, p, d, name=name, precision=self.precision, fan_in=fan_in, **kw)(x)
      elif kind == "convT":
        x = conv_transpose(spec[2], name=spec[1], precision=self.precision, **kw)(x)
      elif kind == "bn":
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-5, momentum=0.9, name=spec[1], **kw)(x)
      elif kind == "relu":
        x = nn.relu(x)
      elif kind == "lrelu":
        x = nn.leaky_relu(x, negative_slope=spec[1])
      elif kind == "tanh":
        x = jnp.tanh(x)
      else:
        raise ValueError(f"unknown layer kind {kind!r}")
    return x
