"""What PyAV says about a video stream and its decoded frames, as plain values: which stream of a
container is the film (as the ffmpeg tool picks it), how long a Matroska track says it lasts,
whether a frame is gray and at what bit depth, how many quarter turns show it upright, and its
samples scaled to float32 in [0, 1] or to uint8; and why a file PyAV could not open failed (the
one place here that reads a file). Nothing here raises `MediaError`: `reading.FrameSource` decodes
with these, and `writing` picks an audio source's video stream."""

import fractions
import os
import re
import struct

import av
import numpy as np


def main_video_stream(container):
  """The video stream to read: as the ffmpeg tool picks it, the largest picture that is not a
  cover image (attached picture); the first of equals. A thumbnail or cover stored as a video
  stream before the film would otherwise be read as a one-frame video."""

  def rank(item):
    i, s = item
    cover = bool(s.disposition & av.stream.Disposition.attached_pic)
    cc = s.codec_context
    area = (cc.width or 0) * (cc.height or 0) if cc is not None else 0
    return (not cover, area, -i)

  return max(enumerate(container.streams.video), key=rank)[1]


def tag_seconds(text):
  """'00:01:02.500000000' (a Matroska DURATION tag) -> Fraction seconds; None if not that."""
  m = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*", text or "")
  if not m:
    return None
  return (int(m.group(1)) * 3600 + int(m.group(2)) * 60) + fractions.Fraction(m.group(3))


def frame_kind(fmt):
  """(is_gray, bit depth) of a PyAV VideoFormat."""
  # One colour component (gray, gray + alpha, 1-bit); PyAV's is_chroma is False for 4:4:4 chroma.
  comps = [c for c in fmt.components if not c.is_alpha]
  gray = len(comps) == 1 and not fmt.has_palette
  return gray, max(c.bits for c in comps)


def quarter_turns(frame):
  """Counter-clockwise quarter turns that show a decoded video frame upright: its display matrix
  (a phone's portrait video is stored landscape with a rotation of 90 or 270). Only quarter turns
  are applied; other angles (and flips) are left as stored."""
  degrees = frame.rotation or 0
  turns = round(degrees / 90)
  return turns % 4 if abs(degrees - 90 * turns) < 1 else 0


def packed_uint16(frame, per_pixel):
  """A packed 16-bit frame's plane (e.g. ya16be: gray, alpha) as native uint16 [H, W, per_pixel],
  read as stored (rows without their padding)."""
  dtype = ">u2" if frame.format.name.endswith("be") else "<u2"
  rows = np.frombuffer(memoryview(frame.planes[0]), dtype).reshape(frame.height, -1)
  return rows[:, :frame.width * per_pixel].astype(np.uint16).reshape(
      frame.height, frame.width, per_pixel)


def convert(x, dtype):
  """uint8 / uint16 array -> float32 in [0, 1], uint8 (16 bit rounded to 8), or as it is (None)."""
  if dtype is None:
    return x
  if dtype == np.float32:
    return x.astype(np.float32) / np.float32(65535 if x.dtype == np.uint16 else 255)
  if dtype == np.uint8:
    if x.dtype == np.uint16:
      return np.round(x.astype(np.float32) / np.float32(257)).astype(np.uint8)
    return x
  raise ValueError(f"dtype must be np.float32, np.uint8 or None, got {dtype}")


def colourless(frames):
  """Whether every frame [..., H, W, C] has R = G = B (or one channel): gray stored as colour.
  Frame by frame, so that no copy of a whole clip is made."""
  return not any(np.any(f[..., 1:] != f[..., :1]) for f in frames)


def image_alpha(path):
  """An image file's alpha channel, [H, W] uint8 (255: opaque), or None where it has none or every
  pixel is opaque. The file is one that `reading.read_image` has read (its errors said there)."""
  with av.open(path) as c:
    frame = next(c.decode(c.streams.video[0]))
    fmt = frame.format
    if not (fmt.has_palette or any(comp.is_alpha for comp in fmt.components)):
      return None
    alpha = frame.to_ndarray(format="rgba")[..., 3]
  return None if alpha.min() == 255 else alpha


def reason(err):
  """Short one-line reason from a PyAV / OS error."""
  text = getattr(err, "strerror", None) or str(err) or type(err).__name__
  return " ".join(str(text).split())


def _mp4_without_index(path):
  """Whether `path` is an MP4 / MOV file whose top-level boxes hold no 'moov' (its index)."""
  try:
    with open(path, "rb") as f:
      size, pos, kinds = os.fstat(f.fileno()).st_size, 0, []
      while pos + 8 <= size and len(kinds) < 1000:
        f.seek(pos)
        n, kind = struct.unpack(">I4s", f.read(8))
        if n == 1:  # a 64-bit size follows
          large = f.read(8)
          n = struct.unpack(">Q", large)[0] if len(large) == 8 else 0
        kinds.append(kind)
        if n < 8:  # 0: to the end of the file
          break
        pos += n
  except OSError:
    return False
  return bool(kinds) and kinds[0] == b"ftyp" and b"moov" not in kinds


def open_failure(path, err):
  """Why PyAV could not open `path` (its error `err`), in words for a user."""
  if isinstance(err, PermissionError):
    return "no permission to read it"
  try:
    if os.path.getsize(path) == 0:
      return "the file is empty"
  except OSError:
    pass
  if _mp4_without_index(path):
    return ("an MP4 / MOV file without its index (the 'moov' box): it was cut short while it was "
            "recorded, downloaded or copied, and its frames cannot be found without it")
  return f"not a video PyAV can open ({reason(err)})"


_HDR_TRANSFERS = {16: "PQ", 18: "HLG"}  # AVCOL_TRC_SMPTE2084, AVCOL_TRC_ARIB_STD_B67


def hdr_note(frame, path):
  """A note where `frame` is coded with an HDR transfer (PQ, HLG), which is read as SDR; or None."""
  transfer = _HDR_TRANSFERS.get(getattr(frame, "color_trc", None))
  if transfer is None:
    return None
  return (f"{path} is HDR video ({transfer}): it is read as SDR, without tone mapping, so its "
          "lightness and colours come out wrong; tone-map it to SDR first (e.g. with ffmpeg's "
          "zscale and tonemap filters)")


def interlace_note(frame, path):
  """A note where `frame` is coded interlaced (old TV and camcorder video often is); or None."""
  if not getattr(frame, "interlaced_frame", False):
    return None
  return (f"{path} is coded interlaced: each frame is read with its two fields woven together; "
          "where they were shot at different moments (video, not a film transfer) moving edges "
          "comb, and the colour follows the combs: deinterlace it first for clean colour (e.g. "
          "ffmpeg -vf bwdif=mode=send_frame)")


def video_note(frame, path):
  """The notes about a video's first decoded `frame` (HDR, interlaced) in one line, or None."""
  notes = [n for n in (hdr_note(frame, path), interlace_note(frame, path)) if n]
  return "; ".join(notes) or None
