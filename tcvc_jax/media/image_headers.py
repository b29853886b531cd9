"""PNG and JPEG headers: size, bit depth, gray and a JPEG's EXIF orientation, read without decoding
(a whole folder of frames is checked this way before any frame is decoded); a cut-off JPEG, found
by walking its markers; and an image turned upright. `reading.image_header` is the entry point."""

import os
import re
import struct

import numpy as np

# A marker followed by a length, or the end of image (EOI, FF D9): not byte stuffing (FF 00), fill
# (FF FF), TEM (FF 01), a restart marker (FF D0 .. FF D7) or SOI (FF D8).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd8\xff]")


def png_header(data):
  """(width, height, bit depth, is_gray, 1) from a PNG file's first 26 bytes, or None."""
  # IHDR is the first chunk: width, height, bit depth, colour type (0 gray, 4 gray + alpha).
  if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
    return None
  w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
  return w, h, depth, ctype in (0, 4), 1


def png_is_animated(f):
  """True when the PNG file `f` (binary, at its start) holds an animation (APNG: an acTL chunk
  before its first IDAT); False for a still PNG or a file cut short before either."""
  f.seek(8)
  while len(head := f.read(8)) == 8:
    length, kind = struct.unpack(">I4s", head)
    if kind in (b"acTL", b"IDAT"):
      return kind == b"acTL"
    f.seek(length + 4, os.SEEK_CUR)  # the chunk's data and CRC
  return False


def exif_orientation(payload):
  """The EXIF orientation (1..8; 1 upright) in an APP1 segment's payload; 1 where it has none."""
  tiff = payload[6:] if payload[:6] == b"Exif\0\0" else b""
  order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
  try:
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for i in range(count):
      tag, kind, _, value = struct.unpack(order + "HHI2s", tiff[ifd + 2 + 12 * i:ifd + 12 + 12 * i])
      if tag == 0x0112 and kind == 3:  # Orientation, a SHORT
        value = struct.unpack(order + "H", value)[0]
        return value if 1 <= value <= 8 else 1
  except (TypeError, struct.error):  # no TIFF byte order, or cut short
    pass
  return 1


def jpeg_header(f):
  """(width, height, bit depth, is_gray, EXIF orientation) from a JPEG file object at its start,
  or None; the size as stored (orientations 5..8 show it transposed)."""
  # Walks the marker segments up to the first start-of-frame (SOFn) segment.
  if f.read(2) != b"\xff\xd8":
    return None
  orientation = None
  while True:
    b = f.read(1)
    if not b:
      return None
    if b != b"\xff":
      continue
    marker = f.read(1)
    while marker == b"\xff":
      marker = f.read(1)
    if not marker or marker in (b"\xd8", b"\x01") or b"\xd0" <= marker <= b"\xd7":
      continue
    seglen = f.read(2)
    if len(seglen) < 2:
      return None
    (length,) = struct.unpack(">H", seglen)
    m = marker[0]
    if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
      seg = f.read(6)
      if len(seg) < 6:
        return None
      depth, h, w, comps = struct.unpack(">BHHB", seg)
      return w, h, depth, comps == 1, orientation or 1
    if m == 0xE1 and orientation is None and length > 2:  # APP1: EXIF (or XMP: none found)
      orientation = exif_orientation(f.read(length - 2))
      orientation = None if orientation == 1 else orientation
    else:
      f.seek(length - 2, os.SEEK_CUR)


def jpeg_is_cut(data):
  """Whether JPEG bytes end before their end of image marker (EOI): a cut-off file.

  FFmpeg's decoder conceals the missing part of such a file without an error. The marker segments
  are walked by their lengths (an EXIF thumbnail, with its own EOI, lies inside one); entropy-coded
  data holds no marker but restarts (an FF byte there is stuffed: FF 00). Bytes after the EOI (and
  further pictures there) are ignored.
  """
  pos = 2
  while (m := _JPEG_MARKER.search(data, pos)) is not None:
    if data[m.end() - 1] == 0xD9:
      return False
    if m.end() + 2 > len(data):
      break
    pos = m.end() + int.from_bytes(data[m.end():m.end() + 2], "big")
  return True


# Array views that turn an image stored in EXIF orientation 2..8 upright (PIL's exif_transpose).
_UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
            7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


def upright(image, orientation):
  """An [H, W, C] image stored in EXIF `orientation`, as viewers show it."""
  turn = _UPRIGHT.get(orientation)
  return image if turn is None else np.ascontiguousarray(turn(image))
