"""Makes jpeg.npz: small JPEG files and their pixels as OpenCV decodes them (`cv2.imread`, what the
original's scripts read frames with; libjpeg-turbo inside).

Run with opencv-python and Pillow installed (e.g. `../shared/orig`'s virtual environment):
  python tests/golden/make_jpeg.py tests/golden/jpeg.npz
Pillow only encodes the files; the pixels are OpenCV's.
"""

import io
import sys

import cv2
import numpy as np
from PIL import Image


def _image(h, w):
  rng = np.random.default_rng(7)
  y, x = np.mgrid[:h, :w]
  base = np.stack([128 + 100 * np.sin(x / 3.0), 128 + 100 * np.cos(y / 2.5), (x * y * 7) % 256], -1)
  return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def main(out):
  cases = {  # name: (height, width, gray, Pillow's save options)
      "yuv420_q90": (24, 32, False, dict(quality=90, subsampling=2)),
      "yuv420_odd_size": (23, 31, False, dict(quality=80, subsampling=2)),
      "yuv422_progressive": (24, 32, False, dict(quality=75, subsampling=1, progressive=True)),
      "yuv444_q95": (24, 32, False, dict(quality=95, subsampling=0)),
      "gray": (17, 29, True, dict(quality=85)),
  }
  arrays = {}
  for name, (h, w, gray, options) in cases.items():
    image = _image(h, w)
    b = io.BytesIO()
    Image.fromarray(image[..., 0] if gray else image).save(b, "JPEG", **options)
    data = np.frombuffer(b.getvalue(), np.uint8)
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    arrays[f"jpg_{name}"] = data
    arrays[f"rgb_{name}"] = pixels[..., None] if gray else pixels[..., ::-1]
  arrays["versions"] = np.array([f"opencv {cv2.__version__}, Pillow {Image.__version__}"])
  np.savez_compressed(out, **arrays)


if __name__ == "__main__":
  main(sys.argv[1])
