"""Reading clips from disk: frame folders (DAVIS, Videvo, generic) and video files, via PyAV.

Decoding never needs TensorFlow, OpenCV or Pillow: images and videos both go through FFmpeg
(PyAV). Every error names the file or folder it is about.
"""

import dataclasses
import os
import re
from typing import Sequence

import av
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Videvo-style roots hold one folder per split.
SPLIT_FOLDERS = ("train", "val", "validation", "test")


class DataError(ValueError):
  """Unusable data: the message names the file or folder."""


@dataclasses.dataclass(frozen=True)
class ClipFiles:
  """Where one clip lives: an ordered list of frame images or one video file."""
  name: str
  frames: tuple[str, ...] = ()
  video: str | None = None

  @property
  def location(self) -> str:
    """The clip's video file or frame folder, for messages."""
    return self.video or os.path.dirname(self.frames[0])


def natural_key(name: str):
  """Sort key that orders "2.png" before "10.png"."""
  return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _to_rgb8(frame) -> np.ndarray:
  if max(c.bits for c in frame.format.components) > 8:
    # Deep frames: scale by the real maximum (65535 -> 255) with rounding; FFmpeg's own
    # conversion to 8 bits truncates and dithers.
    deep = frame.to_ndarray(format="rgb48le").astype(np.float32)
    return np.rint(deep / 257.0).astype(np.uint8)
  return frame.to_ndarray(format="rgb24")


def _decode_first_frame(path: str) -> np.ndarray:
  with av.open(path) as container:
    for frame in container.decode(video=0):
      return _to_rgb8(frame)
  raise DataError(f"no image data in {path}")


def read_image(path: str) -> np.ndarray:
  """Reads a PNG or JPEG file as `[H, W, 3]` uint8 RGB (gray is replicated, alpha dropped).

  Args:
    path: image file.

  Returns:
    The image. 16-bit PNGs are scaled to 8 bits.

  Raises:
    DataError: the file is missing, empty, not an image or corrupt.
  """
  if not os.path.isfile(path):
    raise DataError(f"missing image file {path}")
  if os.path.getsize(path) == 0:
    raise DataError(f"empty image file {path}")
  try:
    return _decode_first_frame(path)
  except (av.FFmpegError, StopIteration, ValueError, IndexError) as e:
    raise DataError(f"cannot decode image {path}: {e}") from e


def read_video(path: str) -> np.ndarray:
  """Decodes every frame of a video file.

  Args:
    path: a video file in any container FFmpeg reads.

  Returns:
    `[T, H, W, 3]` uint8 RGB frames (deeper formats scaled to 8 bits).

  Raises:
    DataError: the file is missing, unreadable, has no video stream or no frames.
  """
  if not os.path.isfile(path):
    raise DataError(f"missing video file {path}")
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise DataError(f"no video stream in {path}")
      frames = [_to_rgb8(f) for f in container.decode(video=0)]
  except av.FFmpegError as e:
    raise DataError(f"cannot decode video {path}: {e}") from e
  if not frames:
    raise DataError(f"no frames in video {path}")
  if any(f.shape != frames[0].shape for f in frames):
    raise DataError(f"frames of different sizes in video {path}")
  return np.stack(frames)


def _axis_taps(size_in: int, size_out: int):
  # Half-pixel centres; positions left of the first pixel clamp to it (as cv2.INTER_LINEAR).
  pos = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0)
  i0 = np.minimum(np.floor(pos).astype(np.int64), size_in - 1)
  i1 = np.minimum(i0 + 1, size_in - 1)
  w1 = (pos - i0).astype(np.float32)
  return i0, i1, w1


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of `[..., H, W, C]` uint8 images, half-pixel centres, no antialias.

  These are the semantics of `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` that the original
  used to make its 300x300 training frames; cv2 rounds through 11-bit fixed point, so single
  values may differ by one.

  Args:
    images: `[..., H, W, C]` uint8.
    height: output height.
    width: output width.

  Returns:
    `[..., height, width, C]` uint8.
  """
  h, w = images.shape[-3], images.shape[-2]
  if (h, w) == (height, width):
    return images
  r0, r1, wr = _axis_taps(h, height)
  c0, c1, wc = _axis_taps(w, width)
  x = images.astype(np.float32)
  rows = x[..., r0, :, :] * (1 - wr)[:, None, None] + x[..., r1, :, :] * wr[:, None, None]
  out = rows[..., c0, :] * (1 - wc)[:, None] + rows[..., c1, :] * wc[:, None]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def read_list_file(path: str) -> list[str]:
  """Clip names from a list file: one per line; blank lines and `#` comments are ignored."""
  if not os.path.isfile(path):
    raise DataError(f"missing list file {path}")
  with open(path) as f:
    names = [line.split("#", 1)[0].strip() for line in f]
  return [n for n in names if n]


def _clips_in(folder: str) -> dict[str, ClipFiles]:
  """Clips directly under `folder`: sub-folders of images and video files."""
  clips = {}
  for entry in sorted(os.listdir(folder), key=natural_key):
    path = os.path.join(folder, entry)
    stem, ext = os.path.splitext(entry)
    if os.path.isdir(path):
      frames = tuple(os.path.join(path, f) for f in sorted(os.listdir(path), key=natural_key)
                     if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
      clips[entry] = ClipFiles(entry, frames=frames)
    elif ext.lower() in VIDEO_EXTENSIONS:
      clips[stem] = ClipFiles(stem, video=path)
  return clips


@dataclasses.dataclass(frozen=True)
class Layout:
  """What `discover` found under a root.

  Attributes:
    kind: "davis" (`JPEGImages/480p/<clip>/`), "split_folders" (`<split>/<clip>/`, as the
      Videvo release) or "flat" (`<clip>/` and `<clip>.mp4` directly under the root).
    clips: clip name -> files, over all splits.
    split_of: for "split_folders", clip name -> split folder name; else empty.
  """
  kind: str
  clips: dict[str, ClipFiles]
  split_of: dict[str, str]


def discover(root: str) -> Layout:
  """Finds the clips under a dataset root.

  Args:
    root: a DAVIS-2017 root (with `JPEGImages/480p`), a root with `train/`, `test/`, ...
      folders of clips, or a folder of clip folders and/or video files.

  Returns:
    The `Layout`.

  Raises:
    DataError: the root is missing, a split folder holds the same clip name as another, or
      no clip is found.
  """
  if not os.path.isdir(root):
    raise DataError(f"missing data directory {root}")
  davis = os.path.join(root, "JPEGImages", "480p")
  splits = [s for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, s))]
  if os.path.isdir(davis):
    layout = Layout("davis", _clips_in(davis), {})
  elif splits:
    clips, split_of = {}, {}
    for split in splits:
      for name, clip in _clips_in(os.path.join(root, split)).items():
        if name in clips:
          raise DataError(f"clip {name!r} appears in two split folders: {clip.location} and "
                          f"{clips[name].location}")
        clips[name], split_of[name] = clip, split
    layout = Layout("split_folders", clips, split_of)
  else:
    layout = Layout("flat", _clips_in(root), {})
  if not layout.clips:
    raise DataError(f"no clips (frame folders or video files) found under {root}")
  return layout


def load_clip(clip: ClipFiles, resize: Sequence[int] | None = None):
  """Reads a clip.

  Args:
    clip: where the clip lives.
    resize: optional `(height, width)`; frames are resized with `resize_bilinear`.

  Returns:
    `(frames [T, H, W, 3] uint8, frame_names list[str])`; frame names are file names without
    extension, or `%05d` frame numbers for a video.

  Raises:
    DataError: naming the file: no frames, an unreadable or corrupt frame, or frames of
      different sizes within the clip.
  """
  if clip.video:
    frames = read_video(clip.video)
    names = [f"{i:05d}" for i in range(len(frames))]
  else:
    if not clip.frames:
      raise DataError(f"no image frames ({', '.join(IMAGE_EXTENSIONS)}) in clip folder of "
                      f"{clip.name!r}")
    images = []
    for path in clip.frames:
      image = read_image(path)
      if images and image.shape != images[0].shape:
        raise DataError(f"frame size {image.shape[:2]} of {path} differs from "
                        f"{images[0].shape[:2]} of {clip.frames[0]}")
      images.append(image)
    frames = np.stack(images)
    names = [os.path.splitext(os.path.basename(p))[0] for p in clip.frames]
  if resize is not None:
    frames = resize_bilinear(frames, int(resize[0]), int(resize[1]))
  return frames, names
