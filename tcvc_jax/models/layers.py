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


def conv_transpose(features, *, name, dtype=None, param_dtype=jnp.float32, precision=None, use_bias=True):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1): doubles H and W.

  The kernel is stored as (kh, kw, out, in) with `transpose_kernel=True`, i.e. torch's (in, out, kh, kw)
  weight transposed by (2, 3, 1, 0); padding k - 1 - p = 2 on each side.
  """
  return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True,
                          use_bias=use_bias, name=name, dtype=dtype, param_dtype=param_dtype,
                          precision=precision, kernel_init=torch_default_init((0, 1, 2)))


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
