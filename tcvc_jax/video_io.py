"""Reading and writing videos and frame folders with PyAV, streaming and with one-line errors.

Sources (`open_source`): a video file in any container PyAV (FFmpeg) reads, or a folder of PNG /
JPEG frames taken in sorted file-name order (as the original scripts do, so names should be
zero-padded). Frames are gray or colour, 8 or 16 bit; alpha is dropped. A source yields frames
one at a time as float32 in [0, 1] (divided by the maximum of their real bit depth) or as uint8,
shaped [H, W, 1] when every frame is gray and [H, W, 3] (RGB) otherwise.

Sinks (`open_writer`): an mp4 / m4v / mov / mkv file (H.264 by default, the source's fps, and the
source's audio stream copied packet by packet, without re-encoding) or a folder of PNG frames.
Outputs are written under a temporary name in the target's folder and renamed at the end, so a
failed run leaves nothing behind; an existing output is only replaced with `overwrite=True`.

Every problem with a path or its contents raises `VideoIOError` with a one-line message.
Pillow is not needed: PNG and JPEG go through FFmpeg's codecs, which also read 16-bit PNGs exactly.
"""

import fractions
import io
import os
import shutil
import struct
import tempfile

import av
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")
DEFAULT_FOLDER_FPS = 25


class VideoIOError(Exception):
  """A missing, unreadable or unsupported input or output; the message is one line."""

  def __init__(self, message):
    super().__init__(" ".join(str(message).split()))


def _reason(err):
  """Short one-line reason from a PyAV / OS error."""
  text = getattr(err, "strerror", None) or str(err) or type(err).__name__
  return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------------
# Image headers (cheap checks of a whole folder before decoding anything)
# --------------------------------------------------------------------------------------------------


def _png_header(data):
  # IHDR is the first chunk: width, height, bit depth, colour type (0 gray, 4 gray + alpha).
  if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
    return None
  w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
  return w, h, depth, ctype in (0, 4)


def _jpeg_header(f):
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


def image_header(path):
  """(width, height, bit depth, is_gray) from a PNG or JPEG header.

  Raises:
    VideoIOError: the file cannot be read or is no PNG / JPEG.
  """
  try:
    with open(path, "rb") as f:
      head = f.read(32)
      info = _png_header(head)
      if info is None and head[:2] == b"\xff\xd8":
        f.seek(0)
        info = _jpeg_header(f)
  except OSError as e:
    raise VideoIOError(f"cannot read {path}: {_reason(e)}") from e
  if info is None or info[0] == 0 or info[1] == 0:
    raise VideoIOError(f"cannot read {path}: not a valid PNG or JPEG image")
  return info


# --------------------------------------------------------------------------------------------------
# Decoding one PyAV frame
# --------------------------------------------------------------------------------------------------


def _frame_kind(fmt):
  """(is_gray, bit depth) of a PyAV VideoFormat."""
  # One colour component (gray, gray + alpha, 1-bit); PyAV's is_chroma is False for 4:4:4 chroma.
  comps = [c for c in fmt.components if not c.is_alpha]
  gray = len(comps) == 1 and not fmt.has_palette
  return gray, max(c.bits for c in comps)


def _to_array(frame, gray_out):
  """Frame -> uint8 or uint16 array [H, W, 1 | 3] at its own bit depth; alpha dropped.

  FFmpeg's converter is only used within one bit depth (8 -> 8, 16 -> 16), where it is exact; from
  8 to 16 bits or back it is not (3 -> 766), so values are never rescaled by it.
  """
  gray_in, depth = _frame_kind(frame.format)
  high = depth > 8
  if gray_in:
    x = frame.to_ndarray(format="gray16le" if high else "gray")[..., None]
    return x if gray_out else np.repeat(x, 3, axis=-1)
  if gray_out:
    raise VideoIOError("a colour frame in a source opened as gray")
  return frame.to_ndarray(format="rgb48le" if high else "rgb24")


def _convert(x, dtype):
  """uint8 / uint16 array -> float32 in [0, 1], or uint8 (16 bit rounded to 8)."""
  if dtype == np.float32:
    return x.astype(np.float32) / np.float32(65535 if x.dtype == np.uint16 else 255)
  if dtype == np.uint8:
    if x.dtype == np.uint16:
      return np.round(x.astype(np.float32) / np.float32(257)).astype(np.uint8)
    return x
  raise ValueError(f"dtype must be np.float32 or np.uint8, got {dtype}")


def _decode_image(path, gray_out):
  try:
    with av.open(path) as c:
      for frame in c.decode(video=0):
        return _to_array(frame, gray_out)
  except (av.error.FFmpegError, OSError) as e:
    raise VideoIOError(f"cannot decode {path}: {_reason(e)}") from e
  raise VideoIOError(f"cannot decode {path}: no image in the file")


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


class FrameSource:
  """A video file or frame folder; iterate it (any number of times) for its frames in order.

  Attributes:
    path: the input path.
    kind: "video" or "folder".
    fps: frames per second (Fraction); DEFAULT_FOLDER_FPS for folders unless given.
    height, width: frame size.
    num_frames: frame count (None when a video's container does not store it).
    names: file names for a folder source (None for videos).
    is_gray: True when frames are yielded as [H, W, 1].
    bit_depth: bits per sample of the first frame (8 or 16 for typical inputs).
    has_audio: whether a video file has an audio stream (what a writer's `audio_from` copies).
  """

  def __init__(self, path, fps=None):
    self.path = os.fspath(path)
    if not os.path.exists(self.path):
      raise VideoIOError(f"no such file or folder: {self.path}")
    if os.path.isdir(self.path):
      self._init_folder(fps)
    else:
      self._init_video(fps)

  def _init_folder(self, fps):
    self.kind = "folder"
    try:
      entries = sorted(os.listdir(self.path))
    except OSError as e:
      raise VideoIOError(f"cannot list {self.path}: {_reason(e)}") from e
    self.names = [n for n in entries if not n.startswith(".")
                  and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(self.path, n))]
    if not self.names:
      raise VideoIOError(f"no frames (*.png, *.jpg) in folder {self.path}")
    heads = [image_header(os.path.join(self.path, n)) for n in self.names]
    w, h = heads[0][:2]
    for name, head in zip(self.names, heads):
      if head[:2] != (w, h):
        raise VideoIOError(f"frames differ in size in {self.path}: {self.names[0]} is {w}x{h}, "
                           f"{name} is {head[0]}x{head[1]}")
    self.width, self.height = w, h
    self.num_frames = len(self.names)
    self.is_gray = all(head[3] for head in heads)
    self.bit_depth = heads[0][2]
    self.fps = fractions.Fraction(fps if fps is not None else DEFAULT_FOLDER_FPS)
    self.has_audio = False

  def _open_container(self):
    try:
      container = av.open(self.path)
    except (av.error.FFmpegError, OSError) as e:
      raise VideoIOError(
          f"cannot read {self.path}: not a video PyAV can open ({_reason(e)})") from e
    if not container.streams.video:
      container.close()
      raise VideoIOError(f"no video stream in {self.path}")
    stream = container.streams.video[0]
    if stream.codec_context is None:
      container.close()
      raise VideoIOError(f"unsupported codec in {self.path}: no decoder for its video stream")
    return container, stream

  def _init_video(self, fps):
    self.kind = "video"
    self.names = None
    container, stream = self._open_container()
    with container:
      self.has_audio = bool(container.streams.audio)
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
      self.fps = fractions.Fraction(fps if fps is not None else (rate or DEFAULT_FOLDER_FPS))
      self.num_frames = stream.frames or None
      first = next(self._decode(container, stream), None)
    if first is None:
      raise VideoIOError(f"no frames in {self.path}")
    self.is_gray, self.bit_depth = _frame_kind(first.format)
    self.width, self.height = first.width, first.height

  def _decode(self, container, stream):
    stream.thread_type = "AUTO"
    try:
      yield from container.decode(stream)
    except av.error.DecoderNotFoundError as e:
      raise VideoIOError(f"unsupported codec in {self.path}: {_reason(e)}") from e
    except av.error.FFmpegError as e:
      raise VideoIOError(f"cannot decode {self.path}: {_reason(e)}") from e

  def iter_frames(self, dtype=np.float32):
    """Yields frames [H, W, 1 | 3] as float32 in [0, 1] (dtype=np.float32) or uint8."""
    if self.kind == "folder":
      for name in self.names:
        yield _convert(_decode_image(os.path.join(self.path, name), self.is_gray), dtype)
      return
    container, stream = self._open_container()
    with container:
      for i, frame in enumerate(self._decode(container, stream)):
        if (frame.width, frame.height) != (self.width, self.height):
          raise VideoIOError(f"frame size changes in {self.path} at frame {i}: "
                             f"{self.width}x{self.height} -> {frame.width}x{frame.height}")
        yield _convert(_to_array(frame, self.is_gray), dtype)

  def __iter__(self):
    return self.iter_frames(np.float32)

  def read_all(self, dtype=np.uint8):
    """All frames stacked, [n, H, W, C] (loads the whole clip; for evaluation clips)."""
    return np.stack(list(self.iter_frames(dtype)))


def open_source(path, fps=None):
  """Opens a video file or frame folder (checks it, decodes one frame of a video).

  Args:
    path: video file or folder of PNG / JPEG frames.
    fps: overrides the frame rate (folders default to DEFAULT_FOLDER_FPS).

  Returns:
    FrameSource.

  Raises:
    VideoIOError: missing path, unreadable file, empty folder, frames of mixed sizes, no video
      stream, unsupported codec.
  """
  return FrameSource(path, fps)


# --------------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------------


def _check_target(path, overwrite):
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  if not os.path.isdir(parent):
    raise VideoIOError(f"output folder does not exist: {parent}")
  if os.path.lexists(path) and not overwrite:
    raise VideoIOError(f"output exists: {path} (pass overwrite to replace it)")
  return path


def _replace(tmp, final):
  """Moves the finished temp output onto `final`; an old folder is swapped out, then deleted."""
  if os.path.isdir(final) and not os.path.islink(final):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=os.path.dirname(final))
    os.rename(final, os.path.join(old, "x"))
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, final)


def _frame_uint8(frame):
  """[H, W] or [H, W, 1 | 3 | 4], uint8 or float in [0, 1] -> uint8 [H, W, 3] (gray replicated)."""
  x = np.asarray(frame)
  if np.issubdtype(x.dtype, np.floating):
    x = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
  elif x.dtype != np.uint8:
    raise ValueError(f"frames to write must be uint8 or float, got {x.dtype}")
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
    raise ValueError(f"frames to write must be [H, W, 1|3|4], got {x.shape}")
  x = x[..., :3]
  return np.ascontiguousarray(np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x)


class _Writer:
  """Context-manager behaviour shared by the writers: commit on success, discard on error."""

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


class VideoWriter(_Writer):
  """Encodes frames into a video file, copying the audio stream of another file alongside."""

  def __init__(self, path, fps, audio_from=None, overwrite=False, codec="libx264", crf=18):
    """Opens the output under a temporary name.

    Args:
      path: output file; its extension picks the container (VIDEO_OUTPUT_EXTENSIONS).
      fps: frame rate (int, float or Fraction).
      audio_from: a video file whose first audio stream is copied (remuxed) into the output; None
        or a file without audio gives a silent output.
      overwrite: replace an existing output.
      codec: video encoder; H.264 ("libx264") by default.
      crf: constant rate factor for libx264 (lower is better quality).
    """
    self.path = _check_target(path, overwrite)
    ext = os.path.splitext(self.path)[1].lower()
    if ext not in VIDEO_OUTPUT_EXTENSIONS:
      raise VideoIOError(f"unsupported output type {ext!r}: use "
                         f"{', '.join(VIDEO_OUTPUT_EXTENSIONS)} or a folder")
    if codec not in av.codecs_available:
      raise VideoIOError(f"unsupported codec {codec!r}: this PyAV build has no such encoder")
    self.fps = fractions.Fraction(fps).limit_denominator(1_000_000)
    if self.fps <= 0:
      raise VideoIOError(f"fps must be positive, got {fps}")
    self._codec, self._crf, self._stream, self._count = codec, crf, None, 0
    fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.tmp-", suffix=ext,
                                     dir=os.path.dirname(self.path))
    os.close(fd)
    self._out = self._audio_in = self._audio_template = self._audio_out = None
    self._audio_packets = self._next_audio = None
    try:
      self._out = av.open(self._tmp, "w")
      if audio_from is not None:
        self._open_audio(os.fspath(audio_from), ext)
    except BaseException:
      self.abort()
      raise

  def _open_audio(self, src, ext):
    try:
      self._audio_in = av.open(src)
    except (av.error.FFmpegError, OSError) as e:
      raise VideoIOError(f"cannot read audio from {src}: {_reason(e)}") from e
    if not self._audio_in.streams.audio:
      return
    stream = self._audio_in.streams.audio[0]
    # Try the container in memory first, so an audio codec it cannot hold fails before any work.
    try:
      with av.open(io.BytesIO(), "w", format=self._out.format.name) as probe:
        probe.add_stream_from_template(stream)
        probe.start_encoding()
    except (av.error.FFmpegError, ValueError) as e:
      raise VideoIOError(f"cannot copy the {stream.codec_context.name} audio of {src} into a {ext} "
                         f"file without re-encoding ({_reason(e)})") from e
    self._audio_template = stream  # added after the video stream, so video is stream 0

  def _mux_audio_until(self, t):
    """Copies the source's audio packets that start before time t (seconds; None: all the rest).

    Interleaving audio with the video as it is written keeps the muxer's buffer small.
    """
    while self._audio_packets is not None:
      if self._next_audio is None:
        self._next_audio = next(self._audio_packets, None)
        if self._next_audio is None:
          self._audio_packets = None
          return
      pkt = self._next_audio
      if pkt.dts is None:  # the demuxer's flush packet
        self._next_audio = None
        continue
      if t is not None and pkt.pts is not None and float(pkt.pts * pkt.time_base) > t:
        return
      pkt.stream = self._audio_out
      self._out.mux(pkt)
      self._next_audio = None

  def _add_video_stream(self, h, w):
    s = self._out.add_stream(self._codec, rate=self.fps)
    s.width, s.height = w, h
    # 4:2:0 needs even sizes; odd-sized frames are kept whole in 4:4:4 instead of being cropped.
    s.pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
    if self._codec == "libx264":
      s.options = {"crf": str(self._crf)}
    self._stream = s
    if self._audio_template is not None:
      self._audio_out = self._out.add_stream_from_template(self._audio_template)
      self._audio_packets = self._audio_in.demux(self._audio_template)

  def write(self, frame):
    """Appends one frame (uint8 or float in [0, 1]; [H, W, 1 | 3 | 4])."""
    if self._out is None:
      raise VideoIOError(f"{self.path} is already closed")
    x = _frame_uint8(frame)
    if self._stream is None:
      self._add_video_stream(*x.shape[:2])
    elif (x.shape[0], x.shape[1]) != (self._stream.height, self._stream.width):
      raise VideoIOError(f"frame {self._count} is {x.shape[1]}x{x.shape[0]}, the video is "
                         f"{self._stream.width}x{self._stream.height}")
    vf = av.VideoFrame.from_ndarray(x, format="rgb24")
    vf.pts = self._count
    vf.time_base = 1 / self.fps
    for pkt in self._stream.encode(vf):
      self._out.mux(pkt)
    self._count += 1
    self._mux_audio_until(float(self._count / self.fps))

  def close(self):
    """Flushes the encoder, finishes the file and renames it into place."""
    if self._out is None:
      return
    if self._stream is None:
      self.abort()
      raise VideoIOError(f"no frames were written to {self.path}")
    try:
      for pkt in self._stream.encode(None):
        self._out.mux(pkt)
      self._mux_audio_until(None)
      self._out.close()
      self._out = None
      _replace(self._tmp, self.path)
    except av.error.FFmpegError as e:
      self.abort()
      raise VideoIOError(f"cannot write {self.path}: {_reason(e)}") from e
    finally:
      self._close_audio()

  def _close_audio(self):
    if self._audio_in is not None:
      self._audio_in.close()
      self._audio_in = None

  def abort(self):
    """Discards the output."""
    out, self._out = self._out, None
    if out is not None:
      try:
        out.close()
      except (av.error.FFmpegError, ValueError):
        pass  # the file is deleted next anyway
    self._close_audio()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)


_PNG_FORMATS = {(np.uint8, 1): "gray", (np.uint8, 3): "rgb24", (np.uint8, 4): "rgba",
                (np.uint16, 1): "gray16be", (np.uint16, 3): "rgb48be", (np.uint16, 4): "rgba64be"}


def encode_png(frame):
  """PNG file bytes of a uint8 or uint16 frame [H, W] or [H, W, 1 | 3 | 4] (gray, RGB, RGBA)."""
  x = np.asarray(frame)
  if x.ndim == 2:
    x = x[..., None]
  key = (x.dtype.type, x.shape[-1]) if x.ndim == 3 else None
  if key not in _PNG_FORMATS:
    raise ValueError(f"cannot write a {x.dtype} array of shape {x.shape} as PNG")
  ctx = av.CodecContext.create("png", "w")
  ctx.width, ctx.height, ctx.pix_fmt = x.shape[1], x.shape[0], _PNG_FORMATS[key]
  data = np.ascontiguousarray(x[..., 0] if x.shape[-1] == 1 else x)
  vf = av.VideoFrame.from_ndarray(data, format=_PNG_FORMATS[key].replace("be", "le"))
  return b"".join(bytes(p) for p in ctx.encode(vf)) + b"".join(bytes(p) for p in ctx.encode(None))


class FolderWriter(_Writer):
  """Writes frames as 8-bit RGB PNG files into a new folder (built under a temporary name)."""

  def __init__(self, path, overwrite=False, names=None):
    """Creates the temporary folder.

    Args:
      path: output folder.
      overwrite: replace an existing output.
      names: file names to use in order (their extension becomes .png); default 00000.png, ...
    """
    self.path = _check_target(path, overwrite)
    self._names = list(names) if names is not None else None
    self._count = 0
    self._tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.tmp-",
                                 dir=os.path.dirname(self.path))

  def write(self, frame):
    """Writes the next frame (uint8 or float in [0, 1]; [H, W, 1 | 3 | 4])."""
    if self._tmp is None:
      raise VideoIOError(f"{self.path} is already closed")
    if self._names is not None:
      if self._count >= len(self._names):
        raise VideoIOError(f"more frames than names for {self.path}")
      name = os.path.splitext(os.path.basename(self._names[self._count]))[0] + ".png"
    else:
      name = f"{self._count:05d}.png"
    with open(os.path.join(self._tmp, name), "wb") as f:
      f.write(encode_png(_frame_uint8(frame)))
    self._count += 1

  def close(self):
    """Renames the finished folder into place."""
    if self._tmp is None:
      return
    if not self._count:
      self.abort()
      raise VideoIOError(f"no frames were written to {self.path}")
    _replace(self._tmp, self.path)
    self._tmp = None

  def abort(self):
    """Discards everything written."""
    if self._tmp is not None:
      shutil.rmtree(self._tmp, ignore_errors=True)
      self._tmp = None


def open_writer(path, fps=DEFAULT_FOLDER_FPS, audio_from=None, overwrite=False, names=None):
  """A VideoWriter for a path with a video extension, else a FolderWriter; use as a context manager.

  Args:
    path: output file (VIDEO_OUTPUT_EXTENSIONS) or folder (a name without extension).
    fps: frame rate of a video output.
    audio_from: source file whose audio a video output copies (ignored for folders).
    overwrite: replace an existing output.
    names: frame file names for a folder output.

  Raises:
    VideoIOError: the output exists (without overwrite), its folder is missing, or its type is
      not supported.
  """
  ext = os.path.splitext(os.fspath(path))[1].lower()
  if ext in VIDEO_OUTPUT_EXTENSIONS:
    return VideoWriter(path, fps, audio_from=audio_from, overwrite=overwrite)
  if ext:
    raise VideoIOError(f"unsupported output {os.fspath(path)}: use a video file "
                       f"({', '.join(VIDEO_OUTPUT_EXTENSIONS)}) or a folder without an extension")
  return FolderWriter(path, overwrite=overwrite, names=names)
