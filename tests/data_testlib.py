"""Test helpers for the data tests: writing image and video fixtures with PyAV, small sources."""

import fractions
import os
import tempfile

import av
import numpy as np

from tcvc_jax.data import sources as data_sources


def tempdir(test) -> str:
  """A temporary folder removed after the test (absltest's create_tempdir needs parsed flags)."""
  folder = tempfile.TemporaryDirectory()
  test.addCleanup(folder.cleanup)
  return folder.name


def encode_image(image: np.ndarray, codec: str = "png") -> bytes:
  """Encodes `[H, W, C]` uint8 (C = 1, 3 or 4) or `[H, W]` uint16 as PNG, or `[H, W, 3]` as JPEG."""
  if image.ndim == 2 and image.dtype == np.uint16:
    fmt = "gray16le" if np.little_endian else "gray16be"
  else:
    fmt = {1: "gray", 3: "rgb24", 4: "rgba"}[image.shape[-1]]
    image = image[..., 0] if fmt == "gray" else image
  ctx = av.CodecContext.create(codec, "w")
  ctx.width, ctx.height = image.shape[1], image.shape[0]
  frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
  if codec == "mjpeg":
    ctx.pix_fmt, ctx.time_base = "yuvj444p", fractions.Fraction(1, 25)
    ctx.options = {"qmin": "1", "qmax": "1"}
    frame = frame.reformat(format="yuvj444p")
  elif fmt.startswith("gray16"):
    ctx.pix_fmt = "gray16be"  # the only 16-bit gray format FFmpeg's PNG encoder takes
    frame = frame.reformat(format="gray16be")
  else:
    ctx.pix_fmt = fmt
  packets = ctx.encode(frame) + ctx.encode(None)
  return b"".join(bytes(p) for p in packets)


def write_image(path: str, image: np.ndarray) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  codec = "mjpeg" if path.lower().endswith((".jpg", ".jpeg")) else "png"
  with open(path, "wb") as f:
    f.write(encode_image(image, codec))
  return path


def write_frames(folder: str, frames, ext: str = ".png", names=None) -> list[str]:
  names = names or [f"{t:05d}" for t in range(len(frames))]
  return [write_image(os.path.join(folder, n + ext), f)
          for n, f in zip(names, frames, strict=False)]


def write_video(path: str, frames: np.ndarray, codec: str = "ffv1") -> str:
  """Writes frames as a video (ffv1 in .mkv is lossless; mpeg4 in .mp4 is lossy)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=25)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
    if codec != "ffv1":
      stream.options = {"qscale": "1"}
    for f in frames:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
      container.mux(stream.encode(frame.reformat(format=stream.pix_fmt)))
    container.mux(stream.encode(None))
  return path


def random_clip(rng, num_frames, height, width):
  return rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def marked_source(lengths, height=12, width=12, seed=0):
  """Clips whose frame t is one random image plus t (mod 256), so frames differ but share
  their spatial pattern: any spatial transform applied alike keeps `out[t] - out[0]` constant."""
  rng = np.random.default_rng(seed)
  clips = []
  for n in lengths:
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    clips.append(np.stack([base + np.uint8(t % 256) for t in range(n)]))
  source = data_sources.ArraySource(clips)
  return source, source.index(), clips
