"""Bilinear resizing of uint8 frames with the original's cv2 semantics (its training frames)."""

import numpy as np


def _axis_taps(size_in: int, size_out: int):
  # Half-pixel centres; positions left of the first pixel clamp to it (as cv2.INTER_LINEAR).
  pos = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0)
  i0 = np.minimum(np.floor(pos).astype(np.int64), size_in - 1)
  i1 = np.minimum(i0 + 1, size_in - 1)
  w1 = (pos - i0).astype(np.float32)
  return i0, i1, w1


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of `[..., H, W, C]` uint8 images, half-pixel centres, no antialias.

  These are the semantics of `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` that the original
  used to make its 300x300 training frames; cv2 rounds through 11-bit fixed point, so single
  values may differ by one.

  Args:
    images: `[..., H, W, C]` uint8.
    height: output height.
    width: output width.

  Returns:
    `[..., height, width, C]` uint8.
  """
  h, w = images.shape[-3], images.shape[-2]
  if (h, w) == (height, width):
    return images
  r0, r1, wr = _axis_taps(h, height)
  c0, c1, wc = _axis_taps(w, width)
  x = images.astype(np.float32)
  rows = x[..., r0, :, :] * (1 - wr)[:, None, None] + x[..., r1, :, :] * wr[:, None, None]
  out = rows[..., c0, :] * (1 - wc)[:, None] + rows[..., c1, :] * wc[:, None]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)
