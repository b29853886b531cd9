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


def write_video(path, frames, codec: str = "ffv1", fps: int = 25, pix_fmt: str | None = None,
                audio_seconds: float = 0.0, options=None, rotation: int = 0, sar=None,
                times=None, audio_codec: str = "aac", audio_tracks: int = 1, tags=None,
                audio_rate: int = 8000, audio_layout: str = "mono", stream_options=None) -> str:
  """Writes uint8 RGB frames ([n, H, W, 3] or a list) as a video with PyAV; returns the path.

  ffv1 (in .mkv) is lossless RGB by default; other codecs are 4:2:0 unless `pix_fmt` says otherwise
  (mpeg4 at its best quantiser). `audio_seconds`: that much of a 440 Hz tone in `audio_codec` at
  `audio_rate` Hz, `audio_layout` (`audio_tracks` streams of it); `tags`: the container's;
  `options`: the container's (e.g. {"movflags": "faststart"}); `stream_options`: the encoder's
  (e.g. {"x264-params": "tff=1"}: coded interlaced); `rotation`: a display rotation
  (counter-clockwise degrees), as a phone sets it; `sar`: the pixels' aspect ratio; `times`: each
  frame's time in seconds (a variable frame rate, in a time base of 1/90000 s; default i / fps).
  """
  path = str(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with av.open(path, "w", options=options or {}) as out:
    out.metadata.update(tags or {})
    vs = out.add_stream(codec, rate=fps)
    vs.height, vs.width = frames[0].shape[:2]
    vs.pix_fmt = pix_fmt or ("bgr0" if codec == "ffv1" else "yuv420p")
    if codec == "mpeg4":
      vs.options = {"qscale": "1"}
    if stream_options:
      vs.options = dict(stream_options)
    if rotation:
      vs.set_display_rotation(rotation)
    if sar:
      vs.codec_context.sample_aspect_ratio = sar
    if times is not None:
      vs.time_base = vs.codec_context.time_base = fractions.Fraction(1, 90000)
    tracks = [out.add_stream(audio_codec, rate=audio_rate)
              for _ in range(audio_tracks if audio_seconds else 0)]
    for aus in tracks:
      aus.layout = audio_layout
    for i, frame in enumerate(frames):
      vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
      vf.pts = i
      if times is not None:
        vf.pts = round(fractions.Fraction(times[i]) / vs.time_base)
        vf.time_base = vs.time_base
      out.mux(vs.encode(vf))
    out.mux(vs.encode(None))
    for aus in tracks:
      t = np.arange(int(audio_rate * audio_seconds)) / audio_rate
      wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
      wave = np.repeat(wave, av.AudioLayout(audio_layout).nb_channels, axis=0)
      for k in range(0, wave.shape[1], 1024):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k:k + 1024]), format="fltp",
                                        layout=audio_layout)
        af.sample_rate, af.pts = audio_rate, k
        out.mux(aus.encode(af))
      out.mux(aus.encode(None))
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
