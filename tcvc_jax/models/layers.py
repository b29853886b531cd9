"""Shared Linen building blocks whose parameter paths mirror the original PyTorch module paths.

A PyTorch key such as `fea_key.model1.0.weight` lives at the Flax path `fea_key/model1/0/kernel`:
every torch module name becomes a Flax module name, so the checkpoint converter maps keys
mechanically.
"""

from typing import Any
from typing import Sequence
from typing import Tuple

from flax import errors as flax_errors
from flax import linen as nn
import jax
import jax.numpy as jnp

from tcvc_jax.models import conv_forms

Dtype = Any


def torch_default_init(fan_in_axes=(0, 1, 2)):
  """PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  That is kaiming_uniform with a=sqrt(5).
  """

  def init(key, shape, dtype=jnp.float32):
    fan_in = 1
    for a in fan_in_axes:
      fan_in *= shape[a]
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _param(module, name, init, shape, dtype):
  """`module.param(name, init, shape, dtype)`, without flax's cost of checking an existing one.

  In `apply`, flax checks an existing parameter's shape against `jax.eval_shape` of its
  initializer: a traced random draw per parameter, 0.85 s of the 2.5 s that tracing the full-size
  model took (~670 parameters, 2-vCPU AMD EPYC). The shape is declared here, so an existing
  parameter of a read-only collection (every `apply`) is compared with it directly, with flax's
  error; `init` and mutable parameters go through `module.param`.
  """
  if module.has_variable("params", name) and not module.is_mutable_collection("params"):
    value = module.get_variable("params", name)
    if tuple(jnp.shape(value)) != tuple(shape):
      raise flax_errors.ScopeParamShapeError(name, module.scope.path_text, jnp.shape(value),
                                             tuple(shape))
    return value
  return module.param(name, init, shape, dtype)


def _on_cpu():
  return jax.default_backend() == "cpu"


def _mixed(dtype):
  """Whether `dtype` is a reduced-precision compute dtype (bf16 / f16).

  Operands are in it, accumulation is fp32.
  """
  return dtype is not None and jnp.dtype(dtype).itemsize < 4 and jnp.issubdtype(dtype, jnp.floating)


def activation_dtype(dtype):
  """The dtype activations, biases and normalisations use for a module computing in `dtype`."""
  return jnp.float32 if _mixed(dtype) or dtype is None else dtype


def conv2d(x, kernel, stride=1, pad=0, dilation=1, precision=None, preferred_element_type=None,
           grad_groups=None):
  """NHWC x HWIO convolution with symmetric padding, in the form XLA runs fastest.

  - 1x1 convolutions are matrix products (XLA:CPU's 1x1 convolution runs at ~30 GFLOP/s, its dot
    at ~200).
  - On CPU, 3x3 stride-1 'same' convolutions (fp32 / fp64: forward and both gradients; bf16 mode:
    forward) run in the form measured fastest on this machine for their shape (`conv_forms`).
  - On CPU, other stride-1 convolutions whose output width is above 64 and not a multiple of 64 are
    split into a multiple-of-64 part and the rest (XLA:CPU's convolution kernel is up to 40 %
    slower at widths like 196).
  Each output value is the same convolution as a plain one; only the order and rounding of the
  fp32 sums may differ. `grad_groups`: see `conv_forms.input_grad` (CPU 3x3 convolutions only).
  """
  kh, kw, _, cout = kernel.shape
  if kh == kw == 1 and stride == 1 and pad == 0:
    return jax.lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=preferred_element_type)
  if _on_cpu() and kh == kw == 3 and stride == 1 and pad == 1 and dilation == 1:
    if preferred_element_type is None:
      return conv_forms.conv3x3(x, kernel, precision, grad_groups)
    if preferred_element_type == jnp.float32 and x.dtype == kernel.dtype == jnp.bfloat16:
      return conv_forms.forward_mixed(x, kernel, precision)
  if _on_cpu() and stride == 1 and cout > 64 and cout % 64:
    main = cout // 64 * 64
    parts = [conv2d(x, kernel[..., :main], stride, pad, dilation, precision,
                    preferred_element_type),
             conv2d(x, kernel[..., main:], stride, pad, dilation, precision,
                    preferred_element_type)]
    return jnp.concatenate(parts, axis=-1)
  return _xla_conv(x, kernel, stride, ((pad, pad), (pad, pad)), dilation, precision,
                   preferred_element_type)


def _xla_conv(x, kernel, stride, padding, dilation=1, precision=None, preferred_element_type=None):
  """XLA's own NHWC x HWIO convolution; padding ((top, bottom), (left, right))."""
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), padding, rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
      preferred_element_type=preferred_element_type)


def _operands(x, kernel, bias, dtype):
  """Casts for a conv computing in `dtype`: (x, kernel, bias, preferred_element_type)."""
  if _mixed(dtype):  # reduced-precision products, fp32 accumulation, fp32 bias and output
    return (x.astype(dtype), kernel.astype(dtype),
            None if bias is None else bias.astype(jnp.float32), jnp.float32)
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype)
  return x, kernel, bias, None


class Conv2d(nn.Module):
  """PyTorch's Conv2d (explicit symmetric padding, default init) with flax's parameter layout.

  Parameters are `kernel` (kh, kw, in, out) and `bias` (out,), like nn.Conv.
  `dtype` float32 / float64 computes in that dtype; bfloat16 multiplies in bf16 and accumulates in
  fp32 (output fp32).
  """
  features: int
  kernel_size: int
  stride: int = 1
  pad: int = 0
  dilation: int = 1
  use_bias: bool = True
  fan_in: Any = None  # the bias init bound's fan-in (in_ch * kh * kw); None: zero bias
  # The input's channels as ranges (start, stop) of the kernel's input channels, in the order the
  # input holds them (None: the kernel's order). Parameters keep the original layout.
  in_order: Any = None
  grad_groups: Any = None  # input channels per input-gradient group (conv_forms.input_grad)
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = _param(self, "kernel", torch_default_init(), (k, k, x.shape[-1], self.features),
                    self.param_dtype)
    bias = None
    if self.use_bias:
      fan = self.fan_in
      init = nn.initializers.zeros if fan is None else (
          lambda key, s, d=jnp.float32: jax.random.uniform(key, s, d, -1 / fan ** 0.5,
                                                           1 / fan ** 0.5))
      bias = _param(self, "bias", init, (self.features,), self.param_dtype)
    if self.in_order is not None:
      if sorted(i for a, b in self.in_order for i in range(a, b)) != list(range(x.shape[-1])):
        raise ValueError(f"in_order {self.in_order} must cover the input's {x.shape[-1]} channels "
                         "once each")
      kernel = jnp.concatenate([kernel[:, :, a:b] for a, b in self.in_order], axis=2)
    x, kernel, bias, acc = _operands(x, kernel, bias, self.dtype)
    y = conv2d(x, kernel, self.stride, self.pad, self.dilation, self.precision, acc,
               self.grad_groups)
    return y if bias is None else y + bias


def conv(features, kernel, stride=1, pad=None, dilation=1, *, name, dtype=None,
         param_dtype=jnp.float32, precision=None, use_bias=True, fan_in=None, in_order=None,
         grad_groups=None):
  """PyTorch Conv2d(padding=pad) as a Conv2d module (pad defaults to 'same' for odd kernels)."""
  pad = (kernel - 1) // 2 * dilation if pad is None else pad
  return Conv2d(features, kernel, stride, pad, dilation, use_bias=use_bias, fan_in=fan_in,
                in_order=in_order, grad_groups=grad_groups, name=name, dtype=dtype,
                param_dtype=param_dtype, precision=precision)


# For output phase r (output index 2m + r) along one axis, the k4 s2 p1 transposed conv reads inputs
# m - 1 and m with kernel taps 3 and 1 (r = 0) or m and m + 1 with taps 2 and 0 (r = 1).
# r -> ((input offset, kernel index), ...)
_PHASE_INPUTS = {0: ((-1, 3), (0, 1)), 1: ((0, 2), (1, 0))}


class ConvTranspose4x4(nn.Module):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1): doubles H and W.

  The kernel is stored like flax's ConvTranspose with `transpose_kernel=True`: (kh, kw, out, in),
  i.e. torch's (in, out, kh, kw) weight transposed by (2, 3, 1, 0). It is evaluated without the
  zero-dilated input XLA would otherwise convolve (4x the multiply-adds), in one of two exact forms:
  - four 2x2 convolutions, one per output phase, interleaved;
  - on CPU, for narrow outputs (<= 64 channels) or tiny inputs (<= 64 pixels), where those
    convolutions run at 15-85 GFLOP/s: one matrix product of every input pixel with all 16 taps,
    then each output pixel sums its four products (2x faster for FlowNet2's decoders).
  """
  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    b, h, w, cin = x.shape
    cout = self.features
    kernel = _param(self, "kernel", torch_default_init((0, 1, 2)), (4, 4, cout, cin),
                    self.param_dtype)
    bias = (_param(self, "bias", nn.initializers.zeros, (cout,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias, acc = _operands(x, kernel, bias, self.dtype)
    if _on_cpu() and (cout <= 64 or h * w <= 64):
      y = self._product_form(x, kernel, acc)
    else:
      y = self._phase_form(x, kernel, acc)
    y = y.reshape(b, 2 * h, 2 * w, cout)
    return y if bias is None else y + bias

  def _product_form(self, x, kernel, acc):
    b, h, w, _ = x.shape
    dims = (((3,), (3,)), ((), ()))
    # Keep the big operand in its layout (re-laying a 32 MB kernel costs 4x the product).
    if x.size < kernel.size:
      taps = jax.lax.dot_general(kernel, x, dims, precision=self.precision,
                                 preferred_element_type=acc)
      taps = jnp.transpose(taps, (3, 4, 5, 0, 1, 2))
    else:
      taps = jax.lax.dot_general(x, kernel, dims, precision=self.precision,
                                 preferred_element_type=acc)
    # taps: [B, H, W, 4 (ky), 4 (kx), out]
    taps = jnp.pad(taps, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    rows = []
    for ry in (0, 1):
      cols = []
      for rx in (0, 1):
        total = None
        for dy, ky in _PHASE_INPUTS[ry]:
          for dx, kx in _PHASE_INPUTS[rx]:
            t = taps[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w, ky, kx]
            total = t if total is None else total + t
        cols.append(total)
      rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2 (rx), out]
    return jnp.stack(rows, axis=2)  # [B, H, 2 (ry), W, 2 (rx), out]

  def _phase_form(self, x, kernel, acc):
    w_io = jnp.transpose(kernel, (0, 1, 3, 2))  # (4, 4, in, out)

    def taps_and_padding(r):  # inputs m + o0, m + o1 = a 2-tap conv padded (-o0, o1)
      (o0, k0), (o1, k1) = _PHASE_INPUTS[r]
      return jnp.array([k0, k1]), (-o0, o1)

    rows = []
    for ry in (0, 1):
      ky, pad_y = taps_and_padding(ry)
      cols = []
      for rx in (0, 1):
        kx, pad_x = taps_and_padding(rx)
        k2 = w_io[ky][:, kx]  # (2, 2, in, out)
        cols.append(_xla_conv(x, k2, 1, (pad_y, pad_x), precision=self.precision,
                              preferred_element_type=acc))
      rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2 (rx), out]
    return jnp.stack(rows, axis=2)  # [B, H, 2 (ry), W, 2 (rx), out]


def conv_transpose(features, *, name, dtype=None, param_dtype=jnp.float32, precision=None,
                   use_bias=True):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) (see ConvTranspose4x4)."""
  return ConvTranspose4x4(features, use_bias=use_bias, name=name, dtype=dtype,
                          param_dtype=param_dtype, precision=precision)


class TorchSequential(nn.Module):
  """A torch.nn.Sequential look-alike: children are named by their position in the original.

  `layers` holds tuples:
    ('conv', name, features, kernel, stride, pad, dilation[, options])   Conv2d with bias; options:
        a dict of Conv2d's in_order / grad_groups
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
    act = activation_dtype(self.dtype)
    for spec in self.layers:
      kind = spec[0]
      if kind == "conv":
        _, name, feats, k, s, p, d = spec[:7]
        options = spec[7] if len(spec) > 7 else {}
        fan_in = x.shape[-1] * k * k
        x = conv(feats, k, s, p, d, name=name, precision=self.precision, fan_in=fan_in, **options,
                 **kw)(x)
      elif kind == "convT":
        x = conv_transpose(spec[2], name=spec[1], precision=self.precision, **kw)(x)
      elif kind == "bn":
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-5, momentum=0.9, name=spec[1],
                         dtype=act, param_dtype=self.param_dtype)(x)
      elif kind == "relu":
        x = nn.relu(x)
      elif kind == "lrelu":
        x = nn.leaky_relu(x, negative_slope=spec[1])
      elif kind == "tanh":
        x = jnp.tanh(x)
      else:
        raise ValueError(f"unknown layer kind {kind!r}")
    return x
