"""Reading media (video files, frame folders, images) through PyAV (FFmpeg), with one-line errors.

One reader for every caller (training data, evaluation, colorize):
  * a video file in any container FFmpeg reads, or a folder of PNG / JPEG frames;
  * frames gray or colour, 8 or 16 bit (alpha dropped), as float32 in [0, 1] (divided by the maximum
    of their real bit depth) or uint8 (16 bit rounded to 8), [H, W, 1] when every frame is gray
    (unless colour is asked for) and [H, W, 3] RGB otherwise;
  * the frames of a folder in natural file-name order ("2.png" before "10.png"; hidden files and
    other extensions ignored): `list_frame_files` is the one rule; JPEGs upright (EXIF orientation);
  * every problem raises `MediaError` with a one-line message that names the file.
JPEG images are decoded as OpenCV decodes them (libjpeg-turbo, through Pillow: media/jpeg.py)."""

import fractions
import io
import math
import os
import re

from absl import logging
import av
import numpy as np

from tcvc_jax.media import av_frames
from tcvc_jax.media import folders
from tcvc_jax.media import image_headers
from tcvc_jax.media import jpeg
from tcvc_jax.media import levels

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm")
DEFAULT_FOLDER_FPS = 25


class MediaError(ValueError):
  """A missing, unreadable or unsupported file or folder; the message is one line and names it."""

  def __init__(self, message):
    super().__init__(" ".join(str(message).split()))


def natural_key(name: str):
  """Sort key that orders "2.png" before "10.png" (case-insensitive)."""
  return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def list_frame_files(folder: str) -> list[str]:
  """The frame images of a folder (file names, not paths), in the order every reader uses.

  Raises:
    MediaError: the folder cannot be listed.
  """
  try:
    entries = os.listdir(folder)
  except OSError as e:
    raise MediaError(f"cannot list {folder}: {av_frames.reason(e)}") from e
  names = [n for n in entries if not n.startswith(".")
           and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
           and os.path.isfile(os.path.join(folder, n))]
  return sorted(names, key=lambda n: (natural_key(n), n))


def image_header(path):
  """(width, height, bit depth, is_gray, EXIF orientation) from a PNG or JPEG header; the size
  upright, as viewers show the image (and `_decode_image` returns it).

  Raises:
    MediaError: the file cannot be read or is no PNG / JPEG.
  """
  try:
    with open(path, "rb") as f:
      head = f.read(32)
      info = image_headers.png_header(head)
      if info is None and head[:2] == b"\xff\xd8":
        f.seek(0)
        info = image_headers.jpeg_header(f)
  except (OSError, ValueError) as e:  # ValueError: a seek before the file's start
    raise MediaError(f"cannot read {path}: {av_frames.reason(e)}") from e
  if info is None or info[0] == 0 or info[1] == 0:
    raise MediaError(f"cannot read {path}: not a valid PNG or JPEG image")
  return (info[1], info[0]) + info[2:] if info[4] >= 5 else info


# --------------------------------------------------------------------------------------------------
# Decoding one PyAV frame
# --------------------------------------------------------------------------------------------------


def _to_array(frame, gray_out):
  """Frame -> uint8 or uint16 array [H, W, 1 | 3] at its own bit depth; alpha dropped. FFmpeg's
  converter is used within one bit depth (8 <-> 16 bits it rescales inexactly), not where `levels`
  converts, nor for 16-bit gray + alpha (its ya16 -> gray16 got rows wrong at 360 px wide)."""
  gray_in, depth = av_frames.frame_kind(frame.format)
  if frame.format.name in ("ya16be", "ya16le"):
    x = av_frames.packed_uint16(frame, 2)[..., :1]
  elif levels.needs_own_conversion(frame, gray_in, depth):
    x = levels.limited_gray(frame, depth) if gray_in else levels.deep_yuv_to_rgb(frame, depth)
  elif gray_in:
    x = frame.to_ndarray(format="gray16le" if depth > 8 else "gray")[..., None]
  else:
    x = frame.to_ndarray(format="rgb48le" if depth > 8 else "rgb24")
  if x.shape[-1] == 3 and gray_out:
    raise MediaError("a colour frame in a source opened as gray")
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 and not gray_out else x


def _decode_image(path, gray_out):
  try:
    orientation = 1
    with open(path, "rb") as f:
      if (data := f.read(2)) == b"\xff\xd8":
        if image_headers.jpeg_is_cut(data := data + f.read()):
          raise MediaError(f"cannot decode {path}: truncated JPEG (no end of image marker)")
        orientation = (image_headers.jpeg_header(io.BytesIO(data)) or (1,) * 5)[4]
        if (image := jpeg.decode(data, gray_out)) is not None:
          return image_headers.upright(image, orientation)
    with av.open(path) as c:
      if not c.streams.video:  # e.g. a sound file, or text FFmpeg takes for a subtitle file
        raise MediaError(f"cannot decode {path}: no image in the file")
      frames = c.decode(c.streams.video[0])
      image = _to_array(next(frames), gray_out)
      try:  # a video or an animation (GIF, APNG) is no one image; bytes after an image are ignored
        more = next(frames, None) is not None
      except (av.error.FFmpegError, OSError):
        more = False
      if more:
        raise MediaError(f"{path} holds more than one frame (a video or an animation), not one "
                         "image")
      return image_headers.upright(image, orientation)
  except StopIteration:
    raise MediaError(f"cannot decode {path}: no image in the file") from None
  except (av.error.FFmpegError, OSError) as e:
    raise MediaError(f"cannot decode {path}: {av_frames.reason(e)}") from e


class FrameSource:
  """A video file or frame folder; iterate it (any number of times) for its frames in order.

  Attributes:
    path: the input path.
    kind: "video", "folder" or "image" (one PNG / JPEG file, read as a 1-frame folder: `names` is
      [its file name]; an animated PNG is a "video").
    fps: frames per second (Fraction); DEFAULT_FOLDER_FPS for folders unless given.
    height, width: frame size, upright (a video's display rotation applied).
    sample_aspect_ratio: the pixels' width : height (Fraction; 1 for square pixels and folders;
      e.g. 32/27 for a 16:9 DVD stored 720x480), upright.
    rotation: a video's display rotation, counter-clockwise degrees (0, 90, 180, 270; 0 for a
      folder); its frames are yielded upright, as players show them (and as ffmpeg converts them).
    num_frames: frame count (None when a video's container does not store it).
    names: file names for a folder source (None for videos); note: the warning reading logged
      about it, or None (`folders.folder_note`, `av_frames.video_note`).
    is_gray: True when frames are yielded as [H, W, 1].
    bit_depth: bits per sample (8 or 16 for typical inputs; a folder's deepest frame's).
    has_audio: whether a video file has an audio stream (what a writer's `audio_from` copies).
    short_read: None, or once a pass over a video has decoded fewer frames than its container
      lists (a truncated or damaged file), a sentence that says so.
    time_base: a video stream's time base (Fraction), the unit of its timestamps; None for a folder.
    frame_times: for a video, the presentation time of each frame the current (or last) pass has
      yielded, in seconds after the first frame (Fractions, exact in `time_base`; a variable frame
      rate source's times are uneven), None where a frame has no timestamp (or the first has
      none); None for a folder.
  """

  def __init__(self, path, fps=None):
    self.path = os.fspath(path)
    self.short_read = self._listed_end = self.time_base = self.frame_times = None
    if not os.path.exists(self.path):
      raise MediaError(f"no such file or folder: {self.path}")
    if os.path.isdir(self.path):
      self._init_folder(fps)
    elif _is_still_image(self.path):
      self._init_image(fps)
    else:
      self._init_video(fps)
    if self.note:
      logging.warning("%s", self.note)

  def _init_image(self, fps):
    """One PNG / JPEG file (a photo), read as a folder's frames are (upright, by libjpeg-turbo)."""
    self._root, name = os.path.split(os.path.abspath(self.path))
    self._init_frames([name], fps)
    self.kind, self.note = "image", None

  def _init_folder(self, fps):
    self._root = self.path
    names = list_frame_files(self.path)
    if not names:
      other = folders.ignored_images_note(self.path, os.listdir(self.path), natural_key)
      subs = sorted(e for e in os.listdir(self.path) if os.path.isdir(os.path.join(self.path, e)))
      raise MediaError(f"no frames (*.png, *.jpg) in folder {self.path}"
                       + (f"; {other[len(self.path) + 2:]}" if other else "")
                       + (f"; it holds folders ({', '.join(subs[:3])}): are the clips one level "
                          "deeper?" if subs else ""))
    self._init_frames(names, fps)
    self.kind = "folder"
    self.note = folders.folder_note(self.path, self.names, os.listdir(self.path), natural_key)

  def _init_frames(self, names, fps):
    """Image files `names` in `self._root`: size, depth, gray, from their headers."""
    self.names = names
    heads = [image_header(os.path.join(self._root, n)) for n in self.names]
    w, h = heads[0][:2]
    for name, head in zip(self.names, heads, strict=True):
      if head[:2] != (w, h):
        raise MediaError(f"frames differ in size in {self.path}: {self.names[0]} is {w}x{h}, "
                           f"{name} is {head[0]}x{head[1]}")
    self.width, self.height, self.rotation, self.num_frames = w, h, 0, len(self.names)
    self.sample_aspect_ratio = fractions.Fraction(1)
    self.is_gray = all(head[3] for head in heads)
    self.bit_depth = max(head[2] for head in heads)  # 8-bit frames among 16-bit ones: widened
    self.fps = fractions.Fraction(fps if fps is not None else DEFAULT_FOLDER_FPS)
    self.has_audio = False

  def _open_container(self):
    try:
      container = av.open(self.path)
    except (av.error.FFmpegError, OSError) as e:
      raise MediaError(f"cannot read {self.path}: {av_frames.open_failure(self.path, e)}") from e
    if not container.streams.video:
      container.close()
      raise MediaError(f"no video stream in {self.path}")
    stream = av_frames.main_video_stream(container)
    if stream.codec_context is None:
      container.close()
      raise MediaError(f"unsupported codec in {self.path}: no decoder for its video stream")
    return container, stream

  def _init_video(self, fps):
    self.kind = "video"
    self.names = None
    container, stream = self._open_container()
    damage = []
    with container:
      self.has_audio = bool(container.streams.audio)
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
      self.fps = fractions.Fraction(fps if fps is not None else (rate or DEFAULT_FOLDER_FPS))
      self._frame_seconds = 1 / fractions.Fraction(rate) if rate else fractions.Fraction(1, 25)
      self.num_frames = stream.frames or None
      if self.num_frames and stream.duration and stream.time_base:
        # The count includes frames an edit list hides (a copy trimmed without re-encoding); the
        # duration does not: 12 frames listed, 0.36 s at 25 fps, 9 shown and read (9.5: 9 read).
        shown = math.floor(stream.duration * stream.time_base / self._frame_seconds + 0.01)
        self.num_frames = max(1, min(self.num_frames, shown))
      # Matroska / WebM store no frame count but a DURATION tag per track: a pass that ends well
      # before it read a cut-off file.
      self._listed_end = (None if self.num_frames
                          else av_frames.tag_seconds(stream.metadata.get("DURATION")))
      self.time_base = stream.time_base
      sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
      first = next(self._decode(container, stream, damage), None)
    if first is None:
      raise MediaError(f"cannot decode {self.path}: {damage[0]}" if damage
                       else f"no frames in {self.path}")
    self.is_gray, self.bit_depth = av_frames.frame_kind(first.format)
    self._stored_size = (first.width, first.height)
    self._turns = av_frames.quarter_turns(first)
    self.note = av_frames.video_note(first, self.path)
    self.rotation = 90 * self._turns
    self.width, self.height = self._stored_size[::-1] if self._turns % 2 else self._stored_size
    sar = fractions.Fraction(sar) if sar and sar > 0 else fractions.Fraction(1)
    self.sample_aspect_ratio = 1 / sar if self._turns % 2 else sar

  def _decode(self, container, stream, damage):
    """The stream's frames. A packet the decoder refuses is skipped, as the ffmpeg tool does, and
    the reason appended to `damage`; a container that cannot be read further ends the stream."""
    # Not frame threading: its decoder ends a cut-off stream quietly, dropping the frames still in
    # its threads (measured: 4 frames and no error where one thread gives 6 and the error).
    # Decoding is a small part of the time of any model here.
    stream.thread_type = "SLICE"
    try:
      for packet in container.demux(stream):
        try:
          frames = packet.decode()
        except av.error.DecoderNotFoundError:
          raise
        except av.error.FFmpegError as e:
          damage.append(av_frames.reason(e))
          continue
        yield from frames
    except av.error.DecoderNotFoundError as e:
      raise MediaError(f"unsupported codec in {self.path}: {av_frames.reason(e)}") from e
    except av.error.FFmpegError as e:  # from the demuxer
      damage.append(av_frames.reason(e))

  def iter_frames(self, dtype=np.float32, rgb=False):
    """Yields frames as float32 in [0, 1] (dtype=np.float32), uint8, or as stored (None: uint8, or
    uint16 for a source deeper than 8 bits).

    A damaged or truncated video yields the frames that decode; `short_read` then says so.

    Args:
      dtype: np.float32, np.uint8 or None.
      rgb: always [H, W, 3] (gray replicated); else [H, W, 1] when `is_gray`.
    """
    gray = self.is_gray and not rgb
    if self.kind in ("folder", "image"):
      for name in self.names:
        x = _decode_image(os.path.join(self._root, name), gray)
        if dtype is None and self.bit_depth > 8 and x.dtype == np.uint8:
          x = x.astype(np.uint16) * np.uint16(257)  # the same value in [0, 1], to the last bit
        yield av_frames.convert(x, dtype)
      return
    container, stream = self._open_container()
    decoded, damage, end = 0, [], None
    self.frame_times, first_pts = [], None
    with container:
      for i, frame in enumerate(self._decode(container, stream, damage)):
        if frame.pts is not None and self.time_base:
          end = frame.pts * self.time_base + self._frame_seconds
        if (frame.width, frame.height) != self._stored_size:
          w, h = self._stored_size
          raise MediaError(f"frame size changes in {self.path} at frame {i}: "
                           f"{w}x{h} -> {frame.width}x{frame.height}")
        if i == 0:
          first_pts = frame.pts
        timed = frame.pts is not None and first_pts is not None and self.time_base
        self.frame_times.append((frame.pts - first_pts) * self.time_base if timed else None)
        decoded += 1
        x = _to_array(frame, gray)
        if self._turns:  # upright, as players show it (and as ffmpeg writes it by default)
          x = np.ascontiguousarray(np.rot90(x, self._turns))
        yield av_frames.convert(x, dtype)
    self._tell_short_read(decoded, damage, end)

  def _tell_short_read(self, decoded, damage, end=None):
    """Sets `short_read` (and logs it) after a pass that met damage or fell short of the count,
    or (`end`: the last frame's end time) of the duration the container lists.

    Fewer frames than the container lists is not by itself an error: that count can include
    frames an edit list drops.
    """
    short = self.num_frames is not None and decoded < self.num_frames
    listed = self._listed_end
    cut = (end is not None and listed is not None
           and end < listed - max(2 * self._frame_seconds, fractions.Fraction(1, 4)))
    if self.short_read is not None or not (short or cut or damage):
      return
    of = f" of the {self.num_frames} frames its container lists" if self.num_frames else ""
    if cut:
      of = f" frames ({float(end):.2f} s of the {float(listed):.2f} s its container lists)"
    why = f"; {len(damage)} undecodable part(s) skipped ({damage[0]})" if damage else ""
    self.short_read = (f"{self.path}: {decoded}{of} could be decoded{why} (a truncated or "
                       "damaged file?)")
    logging.warning("%s", self.short_read)

  def __iter__(self):
    return self.iter_frames(np.float32)

  def as_stored(self) -> "StoredFrames":
    """The frames as stored (`iter_frames(None)`): a quarter of float32's memory for 8-bit frames,
    the same lightness from `windows.frames_to_l` to the last bit."""
    return StoredFrames(self)

  def read_all(self, dtype=np.uint8, rgb=False):
    """All frames stacked, [n, H, W, C] (loads the whole clip)."""
    return np.stack(list(self.iter_frames(dtype, rgb)))


class StoredFrames:
  """A FrameSource's frames as stored, iterable again and again (for two-pass guided runs)."""

  def __init__(self, source: FrameSource):
    self.source = source

  @property
  def num_frames(self):
    return self.source.num_frames

  def __iter__(self):
    return self.source.iter_frames(None)


def _is_still_image(path):
  """Whether the file `path` is one PNG or JPEG image, named so (a photo): not an animated PNG,
  and not a video named like an image (FFmpeg reads those)."""
  if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
    return False
  try:
    with open(path, "rb") as f:
      head = f.read(32)
      if image_headers.png_header(head) is not None:
        f.seek(0)
        return not image_headers.png_is_animated(f)
  except OSError:
    return False  # the video reader names the problem
  return head[:2] == b"\xff\xd8"


def open_source(path, fps=None):
  """Opens a video file, frame folder or image (checks it, decodes one frame of a video).

  Args:
    path: video file, folder of PNG / JPEG frames, or one PNG / JPEG image.
    fps: overrides the frame rate (folders default to DEFAULT_FOLDER_FPS).

  Returns:
    FrameSource.

  Raises:
    MediaError: missing path, unreadable file, empty folder, frames of mixed sizes, no video
      stream, unsupported codec.
  """
  return FrameSource(path, fps)


def read_image(path: str) -> np.ndarray:
  """Reads a PNG or JPEG file as `[H, W, 3]` uint8 RGB.

  Gray is replicated, alpha dropped, 16 bit rounded.

  Raises:
    MediaError: the file is missing, empty, not an image, corrupt or cut off (a truncated JPEG,
      which FFmpeg would decode with its missing part made up).
  """
  if not os.path.isfile(path):
    raise MediaError(f"{path} is a folder, not an image file" if os.path.isdir(path)
                     else f"missing image file {path}")
  if os.path.getsize(path) == 0:
    raise MediaError(f"empty image file {path}")
  return av_frames.convert(_decode_image(path, gray_out=False), np.uint8)


def iter_video(path: str):
  """The frames of a video file, decoded one at a time, as `[H, W, 3]` uint8 RGB.

  Raises (at once):
    MediaError: the file is missing, unreadable, has no video stream or no frames.
  """
  if not os.path.isfile(path):
    link = f" (a link to {os.readlink(path)}, which does not exist)" if os.path.islink(path) else ""
    raise MediaError(f"missing video file {path}{link}")
  return open_source(path).iter_frames(np.uint8, rgb=True)
