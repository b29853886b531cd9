"""PNG and JPEG headers: size, bit depth and gray, read without decoding (a whole folder of frames
is checked this way before any frame is decoded); and a cut-off JPEG, found by walking its markers.
`reading.image_header` is the entry point."""

import os
import re
import struct

# A marker followed by a length, or the end of image (EOI, FF D9): not byte stuffing (FF 00), fill
# (FF FF), TEM (FF 01), a restart marker (FF D0 .. FF D7) or SOI (FF D8).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd8\xff]")


def png_header(data):
  """(width, height, bit depth, is_gray) from a PNG file's first 26 bytes, or None."""
  # IHDR is the first chunk: width, height, bit depth, colour type (0 gray, 4 gray + alpha).
  if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
    return None
  w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
  return w, h, depth, ctype in (0, 4)


def jpeg_header(f):
  """(width, height, bit depth, is_gray) from a JPEG file object at its start, or None."""
  # Walks the marker segments up to the first start-of-frame (SOFn) segment.
  if f.read(2) != b"\xff\xd8":
    return None
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
      return w, h, depth, comps == 1
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
