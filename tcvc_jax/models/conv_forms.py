"""Exact forms of a 3x3 'same' convolution, chosen per machine by measuring them once.

XLA:CPU's speed for a convolution depends on the CPU (AVX2 / AVX-512 / AMX, cache sizes, memory
bandwidth) and on the shape: the form that is fastest on one machine can be the slowest on another.
So instead of fixed rules, each large 3x3 stride-1 convolution (forward, input gradient and kernel
gradient) is timed in every applicable form the first time its shape is traced on a machine, and the
winner is remembered in a small JSON file keyed by the CPU model and the shape:

  forward / input gradient (the input gradient of a 3x3 'same' convolution is a 3x3 'same'
  convolution of the output gradient with the flipped, transposed kernel):
    xla       XLA's convolution
    split64   output channels split into a multiple of 64 and the rest (e.g. 196 = 192 + 4)
    winograd  Winograd F(2x2, 3x3): 16 matrix products on 4x4 input tiles, 2.25x fewer multiplies
    winograd_short  the same in shorter strips, for wide layers whose 8-row strips outgrow the cache
  kernel gradient:
    xla       XLA's kernel gradient (2.5-6x slower than the others on every machine measured, so
              it is not timed; TCVC_CONV_FORMS=xla uses it)
    dots      nine matrix products of the input with the shifted output gradient
    winograd  the transposed F(2x2, 3x3): 16 products of the transformed input tiles with the
              transformed output-gradient tiles, summed over the tiles strip by strip
  bf16 operands with fp32 sums (bf16 mode), forward:
    xla       XLA's convolution
    dots9     nine matrix products of the shifted input with the kernel taps (XLA:CPU's bf16
              matrix products use AMX / AVX512-BF16 units, its bf16 convolutions do not)
  (forms that lay the shifted inputs side by side for fewer, larger products, im2col or one per
  kernel row, were measured 1.5-4x slower than dots9 on a 2-vCPU AMX machine: memory-bound copies)

The forms are timed in a child process (`form_timing`): in the process that traces a large program
they are not timed fairly.

Every form computes the same convolution; they differ only in the order and rounding of the fp32
sums (Winograd's transforms add a little more rounding, well inside the golden tests' tolerances).
Small convolutions (under `MIN_GFLOP`) are not measured and use fixed rules, so tests, tiny models
and multi-process runs (where every process must compile the same program) are deterministic; nor
are float64 ones (a precision for checking results, as the golden tests do, not for speed).

`TCVC_CONV_FORMS`: `auto` (default: measure once per machine and shape, then read the file),
`fixed` (no measuring; the rules that were fastest on the AVX-512 machine they were tuned on), or
`xla` (XLA's own convolution everywhere). `TCVC_CONV_FORMS_FILE` moves the file (default
`~/.cache/tcvc_jax/conv_forms.json`). Only XLA:CPU is affected; on GPU / TPU XLA's convolution is
always used.
"""

import functools
import hashlib
import json
import os
import platform
import threading

import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax import paths
from tcvc_jax.models import form_timing
from tcvc_jax.models import winograd

# Forward GFLOP below which a convolution is not measured: such a convolution runs in ~10-20 ms, so
# a form that is slower by a third costs a few ms per call, while measuring it costs ~0.8 s (mostly
# compiling its forms); 4 leaves the large ones (the cells', the batched L-feature convolutions,
# channel_reduction's 64->64 at 256x256, whose Winograd kernel gradient was 3x faster on an AMD
# EPYC) and keeps the measuring of a new machine's first full-size compile short.
MIN_GFLOP = 4.0
WINOGRAD_MIN_CHANNELS = 64  # the narrower side; the wider needs twice that
MIN_GAIN = 0.1  # another form replaces the fixed rule's only when it is this much faster
FORWARD_FORMS = ("xla", "split64", "winograd", "winograd_short")
KERNEL_GRAD_FORMS = ("dots", "winograd")  # the measured ones
# v5: timed in a child process (v4's in-process timings favoured the nine-product kernel gradients)
# v6: winograd_short
_VERSION = 6  # bump when a form or the forms timed change: old measurements are then ignored

_LOCK = threading.Lock()
_CHOICES = {}  # key -> form, this process
_FILE_LOADED = {}


def mode() -> str:
  value = os.environ.get("TCVC_CONV_FORMS", "auto").strip().lower() or "auto"
  if value not in ("auto", "fixed", "xla"):
    raise ValueError(f"TCVC_CONV_FORMS must be 'auto', 'fixed' or 'xla', got {value!r}")
  return value


def cache_file() -> str:
  path = os.environ.get("TCVC_CONV_FORMS_FILE")
  if path:
    return os.path.expanduser(path)
  return paths.user_cache_dir("conv_forms.json")


@functools.lru_cache(maxsize=1)
def cpu_info():
  """(CPU model name, its /proc/cpuinfo flags); no flags where that file is unreadable."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:
    pass
  return model, frozenset(flags)


@functools.lru_cache(maxsize=1)
def machine_id() -> str:
  """The CPU model, its vector ISA extensions and the jax version: what the speeds depend on."""
  model, all_flags = cpu_info()
  flags = " ".join(sorted(w for w in all_flags if w.startswith(("avx", "amx", "fma", "sse4"))))
  digest = hashlib.sha1(flags.encode()).hexdigest()[:8]
  return f"{model} [{digest}] {os.cpu_count()} cpus, jax {jax.__version__}, v{_VERSION}"


def _key(op, x_shape, k_shape, dtype):
  return (f"{machine_id()} | {op} {jnp.dtype(dtype).name} "
          f"x{tuple(int(d) for d in x_shape)} k{tuple(int(d) for d in k_shape)}")


def _read_file():
  path = cache_file()
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    return data if isinstance(data, dict) else {}
  except (OSError, ValueError):
    return {}


def _remember(key, form):
  """Records a measured choice in this process and in the file (merged with what it holds now)."""
  _CHOICES[key] = form
  path = cache_file()
  try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    data = _read_file()
    data[key] = form
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  except OSError:
    pass  # read-only home: the choice still holds for this process


def _measured_choice(op, forms, x_shape, k_shape, dtype, build, fixed, operand_shapes=None):
  """The fastest of `forms` for this shape: remembered, or measured now; `fixed` when not measured.

  `build(form)` gives the op as a function of two concrete arrays (any values) of `operand_shapes`
  (default: the input x_shape and the kernel k_shape). The fixed rule's form stays unless another
  is at least MIN_GAIN faster.
  """
  gflop = 2.0 * np.prod(x_shape[:3]) * 9 * k_shape[2] * k_shape[3] / 1e9
  how = mode()
  if how == "xla":
    return "xla"
  # float64 checks results (the golden tests) rather than runs for speed: not worth measuring.
  if (how == "fixed" or len(forms) == 1 or gflop < MIN_GFLOP or jax.process_count() > 1
      or jnp.dtype(dtype) == jnp.float64):
    return fixed
  key = _key(op, x_shape, k_shape, dtype)
  with _LOCK:
    if key in _CHOICES:
      return _CHOICES[key]
    if not _FILE_LOADED.get(cache_file()):
      _CHOICES.update({k: v for k, v in _read_file().items() if isinstance(v, str)})
      _FILE_LOADED[cache_file()] = True
      if key in _CHOICES:
        return _CHOICES[key]
    times = form_timing.measure({form: build(form) for form in forms},
                                tuple(operand_shapes or (x_shape, k_shape)), dtype)
    best = min(times, key=times.get)
    if times[best] > (1 - MIN_GAIN) * times[fixed]:
      best = fixed  # a gain inside the measurement's noise is not worth a different program
    _remember(key, best)
    return best


# --- forms ------------------------------------------------------------------------------------


def xla_conv(x, kernel, precision=None, preferred_element_type=None):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=precision,
                                      preferred_element_type=preferred_element_type)


def split64_conv(x, kernel, precision=None):
  main = kernel.shape[-1] // 64 * 64
  return jnp.concatenate([xla_conv(x, kernel[..., :main], precision),
                          xla_conv(x, kernel[..., main:], precision)], axis=-1)


_FORWARD = {"xla": xla_conv, "split64": split64_conv, "winograd": winograd.conv,
            "winograd_short": winograd.conv_short}


def _forward_forms(x_shape, cout, itemsize=4):
  forms = ["xla"]
  if cout > 64 and cout % 64:
    forms.append("split64")
  # Winograd saves multiplies in proportion to C_in x C_out but its transforms move memory in
  # proportion to C_in + C_out: with a side under 64 channels, or both under 128, it was never the
  # fastest on the machines measured (AVX-512 with AMX, AVX-512 without), so it is not timed there.
  # 64 -> 196 at 256x256 (the weighting net's second convolution's input gradient): 80 ms against
  # 108 for XLA's on an AMD EPYC; 196 -> 64 and 64 -> 64 lost (104 vs 89, 44 vs 26 ms).
  sides = sorted((x_shape[-1], cout))
  if (x_shape[1] >= 4 and x_shape[2] >= 4 and sides[0] >= WINOGRAD_MIN_CHANNELS
      and sides[1] >= 2 * WINOGRAD_MIN_CHANNELS):
    forms.append("winograd")
    # Shorter strips only where they are at most half as tall (else they were never faster).
    if 2 * winograd.short_strip_rows(x_shape, cout, itemsize) <= winograd.WINOGRAD_STRIP_ROWS:
      forms.append("winograd_short")
  return tuple(forms)


def _forward_fixed(cout):
  return "split64" if cout > 64 and cout % 64 else "xla"


def forward(x, kernel, precision=None):
  """A 3x3 stride-1 'same' convolution (NHWC x HWIO) in this machine's fastest form for it."""
  cout = kernel.shape[-1]
  forms = _forward_forms(x.shape, cout, jnp.dtype(x.dtype).itemsize)
  form = _measured_choice("conv3x3", forms, x.shape, kernel.shape,
                          x.dtype, lambda f: functools.partial(_FORWARD[f], precision=precision),
                          _forward_fixed(cout))
  return _FORWARD[form](x, kernel, precision)


def _dots_kernel_grad(x, g, precision=None):
  """dW[dy, dx] = sum_p x[p] g[p - (dy - 1, dx - 1)]: nine products with the shifted gradient."""
  h, w = x.shape[1:3]
  gp = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dw = jnp.stack([
      jnp.einsum("bhwc,bhwo->co", x, gp[:, 2 - dy:2 - dy + h, 2 - dx:2 - dx + w],
                 precision=precision)
      for dy in range(3) for dx in range(3)])
  return dw.reshape((3, 3) + dw.shape[1:])


def _xla_kernel_grad(x, g, precision=None):
  k_shape = (3, 3, x.shape[-1], g.shape[-1])
  _, vjp = jax.vjp(lambda k: xla_conv(x, k, precision), jnp.zeros(k_shape, x.dtype))
  return vjp(g)[0]


_KERNEL_GRAD = {"xla": _xla_kernel_grad, "dots": _dots_kernel_grad,
                "winograd": winograd.kernel_grad}


# --- reduced-precision operands (bf16 mode: bf16 products, fp32 sums and output) ----------------


def _xla_mixed(x, kernel, precision=None):
  return xla_conv(x, kernel, precision, preferred_element_type=jnp.float32)


def _dots9_mixed(x, kernel, precision=None):
  """Nine matrix products of the shifted input with the kernel taps, summed in fp32.

  XLA:CPU's bf16 convolution does not use a CPU's bf16 matrix units (AMX, AVX512-BF16); its bf16
  matrix product does.
  """
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = None
  for dy in range(3):
    for dx in range(3):
      t = jax.lax.dot_general(xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx],
                              (((3,), (0,)), ((), ())), precision=precision,
                              preferred_element_type=jnp.float32)
      out = t if out is None else out + t
  return out


_MIXED = {"xla": _xla_mixed, "dots9": _dots9_mixed}


def forward_mixed(x, kernel, precision=None):
  """`forward` for reduced-precision x and kernel, fp32 accumulation and output (bf16 mode)."""
  form = _measured_choice("conv3x3_mixed", tuple(_MIXED), x.shape, kernel.shape, x.dtype,
                          lambda f: functools.partial(_MIXED[f], precision=precision), "xla")
  return _MIXED[form](x, kernel, precision)


def kernel_grad(x, g, precision=None):
  """The kernel gradient of `forward(x, k)` for output gradient g, in the fastest form."""
  k_shape = (3, 3, x.shape[-1], g.shape[-1])
  # Timed on (x, g) alone: with a convolution making g inside each timed call (as until forms
  # version 3), a 2x faster form only looked 1.4x faster, and one noisy round on a busy machine
  # could keep the slower one (128 -> 128 at 256x256 on an AMD EPYC: the nine products, 162 ms,
  # were kept over Winograd's 81 ms).
  build = lambda f: functools.partial(_KERNEL_GRAD[f], precision=precision)
  forms = KERNEL_GRAD_FORMS if min(x.shape[1:3]) >= 4 else ("dots",)
  form = _measured_choice("conv3x3_kernel_grad", forms, x.shape, k_shape, x.dtype, build, "dots",
                          operand_shapes=(x.shape, g.shape))
  return _KERNEL_GRAD[form](x, g, precision)


def input_grad(g, kernel, precision=None, groups=None):
  """The input gradient of `forward(x, kernel)`: a 3x3 'same' convolution of g.

  `groups` (channel counts summing to the kernel's input channels): computed as one convolution per
  group of input channels, concatenated. XLA then drops the convolution of a group whose gradient
  nobody uses (the slice of a concatenation that is one of its operands is that operand), e.g. the
  channels of features from a frozen network.
  """
  if groups and sum(groups) != kernel.shape[2]:
    raise ValueError(f"gradient groups {groups} do not add up to {kernel.shape[2]} channels")
  flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
  if not groups or len(groups) == 1:
    return forward(g, flipped, precision)
  starts = np.cumsum((0,) + tuple(groups))
  return jnp.concatenate([forward(g, flipped[..., a:b], precision)
                          for a, b in zip(starts[:-1], starts[1:], strict=True)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(x, kernel, precision=None, grad_groups=None):
  """3x3 stride-1 'same' convolution whose forward and both gradients use measured forms.

  grad_groups: see `input_grad`.
  """
  return forward(x, kernel, precision)


def _conv3x3_fwd(x, kernel, precision, grad_groups):
  return forward(x, kernel, precision), (x, kernel)


def _conv3x3_bwd(precision, grad_groups, res, g):
  x, kernel = res
  return (input_grad(g, kernel, precision, grad_groups),
          kernel_grad(x, g, precision).astype(kernel.dtype))


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
