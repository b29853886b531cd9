"""JPEG images decoded as OpenCV's `cv2.imread` decodes them (the original's scripts read frames
with it): by libjpeg-turbo, through Pillow.

FFmpeg, which decodes every other image and video here, upsamples a JPEG's subsampled chroma in
its own way: on a textured 4:2:0 image its pixels were up to 71 levels (6.4 on average) from
OpenCV's, on 4:4:4 up to 3, so a test set of JPEG frames (DAVIS's JPEGImages) scored otherwise than
with tools that read them with OpenCV. Pillow's pixels equal OpenCV's (opencv-python 5.1, Pillow 13:
4:2:0, 4:2:2, 4:4:4, progressive, gray, odd sizes; tests/golden/jpeg.npz holds OpenCV's).
"""

import io

import numpy as np
from PIL import Image


def decode(data: bytes, gray_out: bool) -> np.ndarray | None:
  """uint8 [H, W, 1] (`gray_out`) or [H, W, 3] RGB of a JPEG file's bytes, as stored (not turned
  upright); None where it is left to FFmpeg: a colour JPEG asked for gray (FFmpeg's path says it
  is an error), CMYK or 12-bit samples, or data libjpeg refuses (FFmpeg's error then names it)."""
  try:
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
      if image.mode not in ("L", "RGB") or (gray_out and image.mode != "L"):
        return None
      x = np.asarray(image)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return None
  if x.ndim == 2:
    x = x[..., None] if gray_out else np.repeat(x[..., None], 3, axis=-1)
  return x
