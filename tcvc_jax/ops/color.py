"""sRGB <-> CIE Lab with the original TCVC formulas and normalisation (NHWC, last axis = channel).

Normalised Lab, as the model sees it: L = (L* - 50) / 100 in [-0.5, 0.5], a = a* / 110,
b = b* / 110. The constants are skimage's; the D65 white is rounded to float32 exactly as the
original builds it (`torch.Tensor((0.95047, 1., 1.08883))` is a float32 tensor even in a float64
run).

Every function takes `xp`, the array namespace: jax.numpy by default, numpy for data-loading workers
that must not start a JAX backend. Both evaluate the same formulas in the input's precision.
"""

import jax.numpy as jnp
import numpy as np

L_CENT = 50.0
L_NORM = 100.0
AB_NORM = 110.0
AB_RANGE = (-128 / AB_NORM, 127 / AB_NORM)  # L*a*b*'s a* and b* (8-bit Lab's), normalised
# How far inputs may stray outside their range (rounding in a colour conversion or a resize).
RANGE_TOLERANCE = 1e-3

# float32-rounded D65 white, as the original uses it in every precision.
_WHITE = tuple(float(v) for v in np.array([0.95047, 1.0, 1.08883], np.float32))

_RGB2XYZ = ((0.412453, 0.357580, 0.180423),
            (0.212671, 0.715160, 0.072169),
            (0.019334, 0.119193, 0.950227))
_XYZ2RGB = ((3.24048134, -1.53715152, -0.49853633),
            (-0.96925495, 1.87599, 0.04155593),
            (0.05564664, -0.20404134, 1.05731107))


def _check3(x, what, xp):
  """x as an array of `xp`: colour values channels-last, [..., 3] (the original's tensors are
  [B, 3, H, W]), real floating point (uint8 pixels go through `rgb_to_gray_ab`)."""
  x = xp.asarray(x)
  if x.ndim < 1 or x.shape[-1] != 3:
    raise ValueError(f"{what} must be channels-last, [..., 3]; got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{what} must be real floating point (sRGB in [0, 1] for rgb: divide uint8 "
                     f"pixels by 255, or use rgb_to_gray_ab); got dtype {x.dtype}")
  return x


def _mix3(m, c0, c1, c2):
  # Written out term by term in the original's order (not a matmul) so float32 rounding matches.
  return [m[i][0] * c0 + m[i][1] * c1 + m[i][2] * c2 for i in range(3)]


def rgb_to_xyz(rgb, xp=jnp):
  """sRGB in [0, 1], [..., 3] -> XYZ [..., 3]."""
  rgb = _check3(rgb, "rgb", xp)
  lin = xp.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  return xp.stack(_mix3(_RGB2XYZ, lin[..., 0], lin[..., 1], lin[..., 2]), axis=-1)


def xyz_to_rgb(xyz, xp=jnp):
  """XYZ [..., 3] -> sRGB [..., 3]; negative linear values clamp to 0, there is no upper clip."""
  xyz = _check3(xyz, "xyz", xp)
  lin = xp.stack(_mix3(_XYZ2RGB, xyz[..., 0], xyz[..., 1], xyz[..., 2]), axis=-1)
  lin = xp.maximum(lin, 0)
  # The power branch is evaluated on a safe value so its NaN-free gradient does not leak
  # through where.
  safe = xp.where(lin > 0.0031308, lin, 1.0)
  return xp.where(lin > 0.0031308, 1.055 * safe ** (1.0 / 2.4) - 0.055, 12.92 * lin)


def xyz_to_lab(xyz, xp=jnp):
  """XYZ [..., 3] -> un-normalised L*a*b* [..., 3]."""
  xyz = _check3(xyz, "xyz", xp)
  s = xp.stack([xyz[..., i] / _WHITE[i] for i in range(3)], axis=-1)
  safe = xp.where(s > 0.008856, s, 1.0)
  f = xp.where(s > 0.008856, safe ** (1 / 3.0), 7.787 * s + 16.0 / 116.0)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_xyz(lab, xp=jnp):
  """Un-normalised L*a*b* [..., 3] -> XYZ [..., 3]."""
  lab = _check3(lab, "lab", xp)
  fy = (lab[..., 0] + 16.0) / 116.0
  fx = lab[..., 1] / 500.0 + fy
  fz = xp.maximum(fy - lab[..., 2] / 200.0, 0)  # only fz is clamped, as in the original
  f = xp.stack([fx, fy, fz], axis=-1)
  t = xp.where(f > 0.2068966, f ** 3.0, (f - 16.0 / 116.0) / 7.787)
  return xp.stack([t[..., i] * _WHITE[i] for i in range(3)], axis=-1)


def rgb_to_lab(rgb, xp=jnp):
  """sRGB in [0, 1], [..., 3] -> normalised Lab [..., 3] (L in [-0.5, 0.5], ab in about [-1, 1])."""
  rgb = _check3(rgb, "rgb", xp)
  lab = xyz_to_lab(rgb_to_xyz(rgb, xp), xp)
  return xp.concatenate([(lab[..., :1] - L_CENT) / L_NORM, lab[..., 1:] / AB_NORM], axis=-1)


def lab_to_rgb(lab, xp=jnp):
  """Normalised Lab [..., 3] -> sRGB [..., 3]; values may exceed 1 (callers clip)."""
  lab = _check3(lab, "lab", xp)
  un = xp.concatenate([lab[..., :1] * L_NORM + L_CENT, lab[..., 1:] * AB_NORM], axis=-1)
  return xyz_to_rgb(lab_to_xyz(un, xp), xp)


def rgb_to_gray_ab(rgb, xp=jnp):
  """uint8 sRGB `[..., 3]` -> (gray `[..., 1]`, ab `[..., 2]`) float32, normalised Lab.

  Same as `rgb_to_lab(rgb / 255)` split into the L channel and the ab channels. Data workers call it
  with `xp=numpy`: they must never start a JAX backend (on a TPU host it belongs to the trainer).
  """
  rgb = xp.asarray(rgb)
  if rgb.dtype != xp.uint8:
    raise ValueError(f"rgb_to_gray_ab takes uint8 pixels, got dtype {rgb.dtype} (floats in [0, 1]: "
                     "rgb_to_lab)")
  lab = rgb_to_lab(rgb.astype(xp.float32) / 255.0, xp)
  return lab[..., :1], lab[..., 1:]
