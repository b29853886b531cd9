"""Writing media: mp4 / mov / mkv videos (with the source's audio copied) and PNG frame folders.

Sinks (`open_writer`): an mp4 / m4v / mov / mkv file (H.264 by default, the source's fps, its
audio (`sound`: copied packet by packet where the container holds its codec, else re-encoded) and
its container's tags) or a folder of PNG frames.
Outputs are written under a temporary name in the target's folder and renamed at the end
(`tcvc_jax.atomic`), so a failed or interrupted run leaves nothing behind; an existing output is
only replaced with `overwrite=True`. Files get the permissions the user's umask gives.
"""

import collections
import fractions
import io
import os

import av
import numpy as np
from PIL import Image

from tcvc_jax import allocator
from tcvc_jax import atomic
from tcvc_jax.media import sound
from tcvc_jax.media.av_frames import reason
from tcvc_jax.media.reading import DEFAULT_FOLDER_FPS
from tcvc_jax.media.reading import VIDEO_EXTENSIONS
from tcvc_jax.media.reading import MediaError
from tcvc_jax.media.reading import natural_key

VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv")
# One picture (a photo's colorization): PNG, 8 or 16-bit, or JPEG, 8-bit.
IMAGE_OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Outputs written at 8 bits only (frame folders and PNGs take 16).
EIGHT_BIT_OUTPUT_EXTENSIONS = VIDEO_OUTPUT_EXTENSIONS + (".jpg", ".jpeg")
JPEG_QUALITY = 95
# Videos are coded with the BT.709 matrix in limited range and tagged so (matrix, primaries and
# transfer: those of sRGB, whose primaries BT.709 shares). Untagged, players guess the matrix from
# the size: BT.709 for HD, BT.601 below; FFmpeg's default conversion is BT.601, so an untagged HD
# output was shown with its reds and greens shifted (200, 40, 40 shown as 213, 55, 37).
_BT709 = 1  # AVCOL_SPC_BT709 = AVCOL_PRI_BT709 = AVCOL_TRC_BT709
_LIMITED = 1  # AVCOL_RANGE_MPEG
# The encoder for odd-sized frames (see VideoWriter._add_video_stream).
ODD_SIZE_CODEC = "libvpx-vp9"


def _target(path, overwrite, directory=False, suffix=""):
  """An AtomicOutput for `path`, with the reader's one error type."""
  try:
    return atomic.AtomicOutput(path, directory=directory, overwrite=overwrite, suffix=suffix)
  except atomic.OutputExistsError as e:
    raise MediaError(str(e)) from e
  except OSError as e:
    why = reason(e)  # atomic's own checks already say "cannot write PATH: ..."
    raise MediaError(why if why.startswith("cannot write ") else
                     f"cannot write {os.fspath(path)}: {why}") from e


def png_names(names):
  """The PNG file names for frames named `names` (an input folder's, in its reading order).

  Each frame keeps its name with .png for its extension, unless two frames would then share a file
  (f1.png and f1.jpg, or names that differ only in case: one file on a case-insensitive disk); those
  keep their whole name (f1.jpg.png, f1.png.png). Where even that collides, or the new names would
  not list in the frames' order, every frame is numbered (00000.png, ...), so that no frame
  overwrites another and the folder reads back in order.
  """
  base = [os.path.basename(os.fspath(n)) for n in names]
  out = [os.path.splitext(b)[0] + ".png" for b in base]
  count = collections.Counter(o.casefold() for o in out)
  out = [b + ".png" if count[o.casefold()] > 1 else o for b, o in zip(base, out, strict=True)]
  unique = len({o.casefold() for o in out}) == len(out)
  if not unique or sorted(out, key=lambda n: (natural_key(n), n)) != out:
    return [f"{i:05d}.png" for i in range(len(out))]
  return out


def _frame_uint8(frame, keep_uint16=False):
  """[H, W] or [H, W, 1 | 3 | 4], uint8 or float in [0, 1] -> uint8 [H, W, 3] (gray replicated);
  with `keep_uint16`, a uint16 frame stays uint16."""
  x = np.asarray(frame)
  if np.issubdtype(x.dtype, np.floating):
    x = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
  elif x.dtype != np.uint8 and not (keep_uint16 and x.dtype == np.uint16):
    if keep_uint16:
      raise ValueError(f"frames to write must be uint8, uint16 or float, got {x.dtype}")
    raise ValueError(f"frames to write must be uint8 or float (videos are written at 8 bits; a "
                     f"frame folder takes uint16), got {x.dtype}")
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
    raise ValueError(f"frames to write must be [H, W, 1|3|4], got {x.shape}")
  x = x[..., :3]
  return np.ascontiguousarray(np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x)


class _Writer:
  """Context-manager behaviour shared by the writers: commit on success, discard on error."""

  notes = ()  # what the output does not keep as it was (a video's sound re-encoded)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self.abort()
    return False


class VideoWriter(_Writer):
  """Encodes frames into a video file, with the audio stream of another file alongside."""

  def __init__(self, path, fps, audio_from=None, overwrite=False, codec="libx264", crf=18,
               sample_aspect_ratio=None, time_base=None, tags=None):
    """Opens the output under a temporary name.

    Args:
      path: output file; its extension picks the container (VIDEO_OUTPUT_EXTENSIONS).
      fps: frame rate (int, float or Fraction).
      audio_from: a video file whose first audio stream goes into the output (`sound.SourceSound`:
        copied, or re-encoded where the container cannot hold its codec; `notes` says so); None
        or a file without audio gives a silent output.
      overwrite: replace an existing output.
      codec: video encoder; H.264 ("libx264") by default.
      crf: constant rate factor for libx264 (lower is better quality).
      sample_aspect_ratio: the pixels' width : height (e.g. 32/27 for a 16:9 DVD stored 720x480),
        written to the video so players show it at the source's shape; None: square pixels.
      time_base: the unit of the video's timestamps (a Fraction of a second; a source video's,
        so that its frame times given to `write` are kept exactly); None: 1 / fps.
      tags: the container's tags ({name: value}: title, creation_time, ...).
    """
    self.path = os.path.abspath(os.fspath(path))
    ext = os.path.splitext(self.path)[1].lower()
    if ext not in VIDEO_OUTPUT_EXTENSIONS:
      raise MediaError(f"unsupported output type {ext!r}: use "
                         f"{', '.join(VIDEO_OUTPUT_EXTENSIONS)} or a folder")
    if codec not in av.codecs_available:
      raise MediaError(f"unsupported codec {codec!r}: this PyAV build has no such encoder")
    self.fps = fractions.Fraction(fps).limit_denominator(1_000_000)
    if self.fps <= 0:
      raise MediaError(f"fps must be positive, got {fps}")
    self._codec, self._crf, self._stream, self._count = codec, crf, None, 0
    self._time_base = fractions.Fraction(time_base) if time_base else 1 / self.fps
    if self._time_base <= 0:
      raise MediaError(f"time base must be positive, got {time_base}")
    self._pts = None  # the last frame's timestamp, in _time_base
    self._sar = (fractions.Fraction(sample_aspect_ratio) if sample_aspect_ratio else None)
    if self._sar is not None and self._sar <= 0:
      raise MediaError(f"sample aspect ratio must be positive, got {sample_aspect_ratio}")
    self._target = _target(self.path, overwrite, suffix=ext)
    self._tmp = self._target.tmp
    self._out = self._sound = None
    self.notes = []
    self._offset = 0  # the first picture's time, in _time_base: after sound that starts earlier
    try:
      self._out = av.open(self._tmp, "w")
      self._out.metadata.update(tags or {})
      if audio_from is not None:
        self._sound = sound.SourceSound(os.fspath(audio_from), self._out.format.name, ext)
        self.notes += self._sound.notes
        self._offset = round(self._sound.video_offset / self._time_base)
    except BaseException:
      self.abort()
      raise

  def _add_video_stream(self, h, w):
    codec, pix_fmt = self._codec, "yuv420p"
    if h % 2 or w % 2:
      # H.264 in 4:2:0 cannot code an odd width or height (its crop unit is 2 pixels), and 4:4:4
      # H.264 is refused by many players. VP9 codes 4:2:0 at any size and plays in browsers, VLC,
      # mpv and current desktop players, so odd sizes keep their exact size in VP9 4:2:0.
      # Matroska keeps a pixel aspect ratio only where the codec does (PyAV cannot set the
      # stream's, which it reads): VP9 has none, H.264 has, so non-square pixels stay H.264.
      ext = os.path.splitext(self.path)[1].lower()
      vp9 = ext == ".mp4" or (ext == ".mkv" and self._sar in (None, 1))
      if codec == "libx264" and ODD_SIZE_CODEC in av.codecs_available and vp9:
        codec = ODD_SIZE_CODEC
      elif codec == "libx264":
        pix_fmt = "yuv444p"  # .mov / .m4v hold no VP9 (or no encoder): exact size, 4:4:4 H.264
    s = self._out.add_stream(codec, rate=self.fps)
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    cc = s.codec_context
    s.time_base = cc.time_base = self._time_base
    cc.colorspace, cc.color_primaries, cc.color_trc = _BT709, _BT709, _BT709
    cc.color_range = _LIMITED
    if self._sar is not None and self._sar != 1:
      cc.sample_aspect_ratio = self._sar
    if codec == "libx264":
      s.options = {"crf": str(self._crf)}
    elif codec == ODD_SIZE_CODEC:  # constant quality, about libx264's crf 18
      s.options = {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
    self._stream = s
    if self._sound is not None:
      self._sound.add_to(self._out)

  def write(self, frame, time=None):
    """Appends one frame (uint8 or float in [0, 1]; [H, W, 1 | 3 | 4]).

    Args:
      frame: the picture.
      time: when it is shown, in seconds after the first frame (a Fraction or float: e.g. a
        variable frame rate source's own times, `FrameSource.frame_times`, so that the pictures
        stay in sync with its audio); None: one frame period (1 / fps) after the previous frame.
        A time that is not after the previous frame's is moved to just after it.
    """
    if self._out is None:
      raise MediaError(f"{self.path} is already closed")
    x = _frame_uint8(frame)
    if self._stream is None:
      self._add_video_stream(*x.shape[:2])
    elif (x.shape[0], x.shape[1]) != (self._stream.height, self._stream.width):
      raise MediaError(f"frame {self._count} is {x.shape[1]}x{x.shape[0]}, the video is "
                         f"{self._stream.width}x{self._stream.height}")
    vf = av.VideoFrame.from_ndarray(x, format="rgb24").reformat(
        format=self._stream.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
    period = max(1, round(1 / (self.fps * self._time_base)))  # one frame, in time-base units
    if time is not None:
      pts = self._offset + round(fractions.Fraction(time) / self._time_base)
    else:
      pts = self._offset if self._pts is None else self._pts + period
    if self._pts is not None and pts <= self._pts:
      pts = self._pts + 1
    vf.pts, vf.time_base, self._pts = pts, self._time_base, pts
    try:  # (a full disk: the output named, not its temporary file)
      with allocator.filled_allocations():  # the same frames, the same file (see there)
        for pkt in self._stream.encode(vf):
          self._out.mux(pkt)
      self._count += 1
      if self._sound is not None:
        self._sound.mux_until(self._out, (pts + period) * self._time_base)
    except (av.error.FFmpegError, OSError) as e:
      raise MediaError(f"cannot write {self.path}: {reason(e)}") from e

  def close(self):
    """Flushes the encoder, finishes the file and renames it into place."""
    if self._out is None:
      return
    if self._stream is None:
      self.abort()
      raise MediaError(f"no frames were written to {self.path}")
    try:
      with allocator.filled_allocations():
        for pkt in self._stream.encode(None):
          self._out.mux(pkt)
      if self._sound is not None:
        self._sound.finish(self._out)
      self._out.close()
      self._out = None
      self._target.commit()
    except (av.error.FFmpegError, OSError) as e:
      self.abort()
      raise MediaError(f"cannot write {self.path}: {reason(e)}") from e
    finally:
      self._close_audio()

  def _close_audio(self):
    if self._sound is not None:
      self._sound.close()

  def abort(self):
    """Discards the output."""
    out, self._out = self._out, None
    if out is not None:
      try:
        out.close()
      except (av.error.FFmpegError, ValueError):
        pass  # the file is deleted next anyway
    self._close_audio()
    self._target.discard()


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


class _FilesWriter(_Writer):
  """A writer of whole files into its output's temporary name (`_target`), renamed into place
  when closed; `_none_written` says that nothing was."""

  _none_written = "no frames were written to"

  def _write_file(self, path, data):
    try:
      with open(path, "wb") as f:
        f.write(data)
    except OSError as e:  # (a full disk: "[Errno 28] No space left on device", naming nothing)
      raise MediaError(f"cannot write {self.path}: {reason(e)}") from e
    self._count += 1

  def close(self):
    """Renames the finished output into place."""
    if self._tmp is None:
      return
    if not self._count:
      self.abort()
      raise MediaError(f"{self._none_written} {self.path}")
    self._tmp = None
    self._target.commit()

  def abort(self):
    """Discards everything written."""
    self._tmp = None
    self._target.discard()


class FolderWriter(_FilesWriter):
  """Writes frames as RGB PNG files into a new folder (built under a temporary name): 8-bit, or
  16-bit for uint16 frames."""

  def __init__(self, path, overwrite=False, names=None):
    """Creates the temporary folder.

    Args:
      path: output folder.
      overwrite: replace an existing output.
      names: the frames' names, in order (an input folder's); they become `png_names(names)`.
        Default: 00000.png, ...
    """
    self.path = os.path.abspath(os.fspath(path))
    self._names = png_names(names) if names is not None else None
    self._count = 0
    if overwrite:  # only an earlier folder of frames: nothing else of the user's goes with it
      atomic.check_replaceable_folder(self.path, (".png",), "PNG frames")
    self._target = _target(self.path, overwrite, directory=True)
    self._tmp = self._target.tmp

  def write(self, frame, time=None):  # pylint: disable=unused-argument
    """Writes the next frame (uint8, uint16 (a 16-bit PNG) or float in [0, 1] (8-bit);
    [H, W, 1 | 3 | 4]); `time` is ignored: a folder of frames keeps no timing."""
    if self._tmp is None:
      raise MediaError(f"{self.path} is already closed")
    if self._names is not None:
      if self._count >= len(self._names):
        raise MediaError(f"more frames than names for {self.path}")
      name = self._names[self._count]
    else:
      name = f"{self._count:05d}.png"
    self._write_file(os.path.join(self._tmp, name),
                     encode_png(_frame_uint8(frame, keep_uint16=True)))


class ImageWriter(_FilesWriter):
  """Writes one frame as an image file (PNG: 8-bit, 16-bit for a uint16 frame; JPEG: 8-bit,
  quality JPEG_QUALITY, chroma kept at full resolution), under a temporary name until closed."""

  _none_written = "no frame was written to"

  def __init__(self, path, overwrite=False):
    self.path = os.path.abspath(os.fspath(path))
    self._ext = os.path.splitext(self.path)[1].lower()
    if self._ext not in IMAGE_OUTPUT_EXTENSIONS:
      raise MediaError(f"unsupported image type {self._ext!r}: use "
                       f"{', '.join(IMAGE_OUTPUT_EXTENSIONS)}")
    self._target = _target(self.path, overwrite, suffix=self._ext)
    self._tmp = self._target.tmp
    self._count = 0

  def write(self, frame, time=None):  # pylint: disable=unused-argument
    """Writes the frame (as `FolderWriter.write`; a JPEG takes no uint16 frame); a second frame
    raises MediaError: an image holds one."""
    if self._tmp is None:
      raise MediaError(f"{self.path} is already closed")
    if self._count:
      raise MediaError(f"{self.path} is an image file, which holds one frame, and the input has "
                       "more: give a video file or a folder")
    if self._ext == ".png":
      data = encode_png(_frame_uint8(frame, keep_uint16=True))
    else:
      if np.asarray(frame).dtype == np.uint16:
        raise MediaError(f"{self.path}: a JPEG holds 8 bits per sample (write a .png for 16)")
      buf = io.BytesIO()
      image = Image.fromarray(_frame_uint8(frame))
      image.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)  # 0: 4:4:4
      data = buf.getvalue()
    self._write_file(self._tmp, data)


def check_paths(input_path, output_path):
  """Raises ValueError for an empty path (a shell variable not set: the output would be the current
  folder), or an output ending in '/' that is named like a video (a folder of PNGs named x.mp4)."""
  for what, path, give in (("input", input_path, "a video file or a folder of frames"),
                           ("output", output_path, "a video file or a folder for PNG frames")):
    if not isinstance(path, (str, os.PathLike)):  # frames in memory: streaming.colorize_frames
      raise ValueError(f"the {what} must be a path ({give}), got {type(path).__name__}")
    if not os.fspath(path).strip():
      raise ValueError(f"the {what} path is empty: give {give}")
  out = os.fspath(output_path)
  folder = out.rstrip("/" + os.sep)
  if folder != out and os.path.splitext(folder)[1].lower() in VIDEO_EXTENSIONS:
    raise ValueError(f"output {out} ends with '/' (a folder of PNG frames) but is named like a "
                     f"video: give {folder} for a video, or a folder name without a video "
                     "extension")


def open_writer(path, fps=DEFAULT_FOLDER_FPS, audio_from=None, overwrite=False, names=None,
                sample_aspect_ratio=None, time_base=None, tags=None):
  """A VideoWriter for a path with a video extension, an ImageWriter for an image's, else a
  FolderWriter; use as a context manager.

  Args:
    path: output file (VIDEO_OUTPUT_EXTENSIONS, IMAGE_OUTPUT_EXTENSIONS: one frame) or folder
      (a name without extension).
    fps: frame rate of a video output.
    audio_from: source file whose audio a video output copies (ignored for folders).
    overwrite: replace an existing output.
    names: frame file names for a folder output.
    sample_aspect_ratio: pixel aspect ratio of a video output (None: square pixels; folders store
      the frames as they are).
    time_base: the unit of a video output's timestamps (see VideoWriter).
    tags: a video output's container tags (see VideoWriter).

  Raises:
    MediaError: the output exists (without overwrite), its folder is missing, or its type is
      not supported.
  """
  kind = output_kind(path)
  if kind == "image":
    return ImageWriter(path, overwrite=overwrite)
  if kind == "video":
    return VideoWriter(path, fps, audio_from=audio_from, overwrite=overwrite,
                       sample_aspect_ratio=sample_aspect_ratio, time_base=time_base, tags=tags)
  return FolderWriter(path, overwrite=overwrite, names=names)


def output_kind(path) -> str:
  """"video", "image" (one frame) or "folder" (a name without extension); MediaError for a type not
  written."""
  ext = os.path.splitext(os.fspath(path))[1].lower()
  if not ext:
    return "folder"
  if ext in VIDEO_OUTPUT_EXTENSIONS:
    return "video"
  if ext in IMAGE_OUTPUT_EXTENSIONS:
    return "image"
  raise MediaError(f"unsupported output {os.fspath(path)}: use a video file "
                   f"({', '.join(VIDEO_OUTPUT_EXTENSIONS)}), a folder without an extension or, "
                   f"for one frame, an image ({', '.join(IMAGE_OUTPUT_EXTENSIONS)})")
