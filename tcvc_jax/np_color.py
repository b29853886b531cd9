"""The model's colour conversion (tcvc_jax.ops.color) evaluated by NumPy, for data code.

The functions here are the very functions of `tcvc_jax.ops.color` (same code objects) with
NumPy bound in place of jax.numpy, so the formulas cannot drift apart. Data code uses them
because input workers must never start a JAX backend (on a TPU host it belongs to the trainer)
and a device round trip per element would be slow. float32 in, float32 out.
"""

import types

import numpy as np

from tcvc_jax.ops import color


def _numpy_twin(module) -> dict:
  namespace = dict(vars(module), jnp=np)
  for name, value in vars(module).items():
    if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
      namespace[name] = types.FunctionType(value.__code__, namespace, name, value.__defaults__,
                                           value.__closure__)
  return namespace


_TWIN = _numpy_twin(color)

rgb_to_lab = _TWIN["rgb_to_lab"]
lab_to_rgb = _TWIN["lab_to_rgb"]


def rgb_to_gray_ab(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """uint8 sRGB `[..., 3]` -> (gray `[..., 1]`, ab `[..., 2]`) float32, normalised Lab.

  Same as `color.rgb_to_lab(rgb / 255)` split into the L channel and the ab channels.
  """
  lab = rgb_to_lab(np.asarray(rgb).astype(np.float32) / 255.0)
  return lab[..., :1], lab[..., 1:]
