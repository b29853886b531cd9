"""Writes tcvc_batch.npz: the ORIGINAL TCVC_IDC forward on a batch of two non-square windows.

Run with the original-code harness of ../shared/orig (built with its build.sh), from the repository:

  /tmp/orig-venv/bin/python tests/golden/make_tcvc_batch.py tests/golden/tcvc_batch.npz

The shared goldens hold batch-1 square windows only; this case has batch 2 (the second window is
the first one's frames in reverse order, shifted in brightness), N = 4 and 64 x 128 frames. The
clip is made of multiples of 1/255 minus 0.5 (float32-exact, so no libm result enters it). Weights:
the golden formula at phase 0 (the harness's `build`). The outputs are kept at every 4th row and
column, float32 and float64 runs both, to keep the file small.
"""

import os
import sys

import numpy as np

STEP = 4  # kept rows and columns: [..., ::STEP, ::STEP]
NAMES = ("out", "ab_fwarp_l_stack", "non_mask_fwarp_l_stack", "ab_fwarp_l_stack_2",
         "non_mask_fwarp_l_stack_2")


def make_clip(batch=2, frames=4, height=64, width=128, seed=20261206):
  """[B, N, 1, H, W] float32: a moving grating plus noise, quantised to k / 255 - 0.5."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  frames_ = []
  for t in range(frames):
    v = (0.3 * np.sin((x - 1.7 * t) / 5.0) * np.cos((y + 0.9 * t) / 7.0)
         + 0.15 * np.sin((x + y + 2.3 * t) / 3.1) + 0.04 * rng.standard_normal((height, width)))
    frames_.append(v)
  first = np.stack(frames_)
  second = np.clip(first[::-1] + 0.1, -0.5, 0.5)
  clip = np.stack([first, second])[:, :, None]
  codes = np.clip(np.round((clip + 0.5) * 255), 0, 255)
  return (codes / 255 - 0.5).astype(np.float32)


def main():
  import torch  # pylint: disable=g-import-not-at-top
  harness = os.environ.get("ORIG_HARNESS") or os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "orig")
  sys.path.insert(0, os.path.abspath(harness))
  import model as om  # pylint: disable=g-import-not-at-top  # the harness's model.py
  torch.set_num_threads(2)
  clip = make_clip()
  res = {"clip_B2N4_64x128": clip}
  for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
    net = om.build(dtype=dtype)
    with torch.no_grad():
      outs = net([torch.from_numpy(clip[:, i]).to(dtype) for i in range(clip.shape[1])])
    for name, out in zip(NAMES, outs, strict=True):
      res[f"{name}_B2N4_64x128_{tag}"] = out.numpy()[..., ::STEP, ::STEP]
    del net
  np.savez_compressed(sys.argv[1], **res)
  print(sys.argv[1], {k: v.shape for k, v in res.items()})


if __name__ == "__main__":
  main()
