"""The model's colour conversion (tcvc_jax.ops.color) evaluated by NumPy, for data code.

The functions here are `tcvc_jax.ops.color`'s own, called with `xp=numpy`, so the formulas cannot drift
apart. Data code uses them because input workers must never start a JAX backend (on a TPU host it belongs
to the trainer) and a device round trip per element would be slow. float32 in, float32 out.
"""

import functools

import numpy as np

from tcvc_jax.ops import color

rgb_to_lab = functools.partial(color.rgb_to_lab, xp=np)
lab_to_rgb = functools.partial(color.lab_to_rgb, xp=np)


def rgb_to_gray_ab(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """uint8 sRGB `[..., 3]` -> (gray `[..., 1]`, ab `[..., 2]`) float32, normalised Lab.

  Same as `color.rgb_to_lab(rgb / 255)` split into the L channel and the ab channels.
  """
  lab = rgb_to_lab(np.asarray(rgb).astype(np.float32) / 255.0)
  return lab[..., :1], lab[..., 1:]
