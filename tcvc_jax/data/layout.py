"""Clips in a user's folder on disk: finding them (DAVIS, split folders, flat), list files, reading
a clip's frames, and the fingerprint of a folder that a dataset built from it records."""

import dataclasses
import hashlib
import json
import os
from typing import Any
from typing import Sequence

from absl import logging
import numpy as np

from tcvc_jax.data.sources import ClipFiles
from tcvc_jax.data.sources import DataError
from tcvc_jax.media import reading
from tcvc_jax.media import resizing

# Videvo-style roots hold one folder per split.
SPLIT_FOLDERS = ("train", "val", "validation", "test")
# How clips become a dataset: a dataset built by other rules is rebuilt. 2: splits/val.txt makes the
# validation split; JPEG frames are read upright (EXIF orientation). 3: JPEG frames decoded to
# OpenCV's pixels (libjpeg-turbo through Pillow, not FFmpeg).
BUILD_RULES = 3
# Split list files a user may put in a root: <root>/splits/<split>.txt.
USER_SPLITS = "splits"


def read_list_file(path: str) -> list[str]:
  """Clip names from a list file: one per line; blank lines and `#` comments are ignored."""
  if not os.path.isfile(path):
    raise DataError(f"missing list file {path}")
  with open(path, encoding="utf-8-sig") as f:  # a BOM (Windows editors) is not part of a name
    names = [line.split("#", 1)[0].strip() for line in f]
  return [n for n in names if n]


def _clips_in(folder: str) -> dict[str, ClipFiles]:
  """Clips directly under `folder`: sub-folders of images and video files."""
  clips = {}
  for entry in sorted(os.listdir(folder), key=reading.natural_key):
    path = os.path.join(folder, entry)
    stem, ext = os.path.splitext(entry)
    if entry.startswith("."):
      continue
    if os.path.islink(path) and not os.path.exists(path) and (
        ext.lower() not in reading.VIDEO_EXTENSIONS):  # (a video's reading says it is missing)
      logging.warning("%s is a link to %s, which does not exist: not read as a clip", path,
                      os.readlink(path))
      continue
    if os.path.isdir(path):
      name, clip = entry, ClipFiles(entry, frames=tuple(
          os.path.join(path, f) for f in reading.list_frame_files(path)), folder=path)
    elif ext.lower() in reading.VIDEO_EXTENSIONS:
      name, clip = stem, ClipFiles(stem, video=path)
    else:
      continue
    if name in clips:  # a video beside its extracted frames, take.mp4 and take.mov
      first = clips[name].video or clips[name].folder
      raise DataError(f"two clips are named {name} in {folder}: "
                      f"{os.path.basename(first)} and {entry}; rename or move one")
    clips[name] = clip
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


def _is_split_folder(clip: ClipFiles) -> bool:
  """Whether a root entry named like a split holds clips (and no frames of its own)."""
  return (clip.folder is not None and not clip.frames
          and any(c.has_media for c in _clips_in(clip.folder).values()))


def discover(root: str) -> Layout:
  """Finds the clips under a dataset root.

  The rule: a root with `JPEGImages/480p` is DAVIS. Else a folder named `train`, `val`,
  `validation` or `test` is a split folder if it holds clips (frame folders or videos) and no
  frames of its own; otherwise it is a clip like any other. A root with split folders must hold
  no other clip (a folder of frames or a video beside them is an error: which one is meant cannot
  be told); folders beside them without frames are ignored with a warning (`splits/`, the split
  lists, silently). A root without split folders is flat: each folder and video is a clip.

  Args:
    root: a DAVIS-2017 root (with `JPEGImages/480p`), a root with `train/`, `test/`, ...
      folders of clips, or a folder of clip folders and/or video files.

  Returns:
    The `Layout`.

  Raises:
    DataError: the root is missing, split folders sit beside clips, a split folder holds the
      same clip name as another, or no clip is found.
  """
  if not os.path.isdir(root):
    raise DataError(f"{root} is a file, not a data directory (a folder of clips)"
                    if os.path.exists(root) else f"missing data directory {root}")
  davis = os.path.join(root, "JPEGImages", "480p")
  if os.path.isdir(davis):
    layout = Layout("davis", _clips_in(davis), {})
  else:
    top = _clips_in(root)
    splits = [s for s in SPLIT_FOLDERS if s in top and _is_split_folder(top[s])]
    others = [c for name, c in top.items() if name not in splits]
    if splits:
      beside = [c.location for c in others if c.has_media]
      if beside:
        raise DataError(
            f"{root} holds both split folders ({', '.join(s + '/' for s in splits)}, each a "
            f"folder of clips) and clips beside them ({', '.join(beside[:5])}"
            f"{', ...' if len(beside) > 5 else ''}): move those into a split folder, or the "
            "split folders' clips up to the top")
      ignored = [c.location for c in others if c.name != USER_SPLITS]
      if ignored:
        logging.warning("%s: split folders %s; ignoring what is beside them (no frames): %s",
                        root, ", ".join(splits), ", ".join(ignored))
      clips, split_of = {}, {}
      for split in splits:
        for name, clip in _clips_in(os.path.join(root, split)).items():
          if name in clips:
            raise DataError(f"clip {name!r} appears in two split folders: {clip.location} and "
                            f"{clips[name].location}")
          clips[name], split_of[name] = clip, split
      layout = Layout("split_folders", clips, split_of)
    else:
      # A folder `splits/` of list files is not a clip (one of frames is).
      layout = Layout("flat", {n: c for n, c in top.items()
                               if n != USER_SPLITS or c.has_media}, {})
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
  frames, names = [], []
  for frame, name in iter_clip(clip, resize):
    frames.append(frame)
    names.append(name)
  return np.stack(frames), names


def frame_names(clip: ClipFiles) -> list[str]:
  """The names of a frame folder's frames (file names without extension); [] for a video."""
  return [os.path.splitext(os.path.basename(p))[0] for p in clip.frames]


def iter_clip(clip: ClipFiles, resize: Sequence[int] | None = None):
  """Yields `(frame [H, W, 3] uint8, frame name)` of a clip, one frame at a time, as `load_clip`
  reads them; raises as it does, at the frame concerned (a clip without frames: at once)."""
  size = None if resize is None else (int(resize[0]), int(resize[1]))
  # Resized as read: a long clip is never held at its full size (nor in float32, all at once).
  kept = lambda image: image if size is None else resizing.resize_bilinear(image, *size)
  if clip.video:
    for i, image in enumerate(reading.iter_video(clip.video)):
      yield kept(image), f"{i:05d}"
    return
  if not clip.frames:
    inside = sorted(os.listdir(clip.folder)) if clip.folder and os.path.isdir(clip.folder) else []
    videos = [n for n in inside if os.path.splitext(n)[1].lower() in reading.VIDEO_EXTENSIONS]
    raise DataError(f"no image frames ({', '.join(reading.IMAGE_EXTENSIONS)}) in the clip folder "
                    f"{clip.folder or clip.name}" + (
                        f"; its videos ({', '.join(videos[:3])}) are not read: a video is a "
                        "clip directly in the data folder" if videos else ""))
  first = None
  for path, name in zip(clip.frames, frame_names(clip), strict=True):
    image = reading.read_image(path)
    first = image.shape if first is None else first
    if image.shape != first:
      raise DataError(f"frame size {image.shape[:2]} of {path} differs from {first[:2]} of "
                      f"{clip.frames[0]}")
    yield kept(image), name


def fingerprint(root: str, layout: "Layout | None" = None) -> dict[str, Any]:
  """What a dataset built from `root` records about it: a digest of its clip listing.

  The digest covers the layout, each clip's name and its files' relative paths, sizes and
  modification times, and the split list files (`<root>/splits/*.txt`); no file is read.

  Args:
    root: the folder of clips.
    layout: `discover(root)`, if already at hand.

  Returns:
    `{"clips": count, "files": count, "digest": hex, "rules": BUILD_RULES}`.

  Raises:
    DataError: as `discover`.
  """
  layout = layout or discover(root)
  digest = hashlib.sha256(layout.kind.encode())
  files = 0
  paths = []
  for name in sorted(layout.clips):
    clip = layout.clips[name]
    media = clip.frames or ((clip.video,) if clip.video else ())
    paths += [(name, p) for p in media] or [(name, None)]  # a folder without frames: its name
  lists = os.path.join(root, USER_SPLITS)
  if os.path.isdir(lists):
    paths += [("", os.path.join(lists, f)) for f in sorted(os.listdir(lists)) if f.endswith(".txt")]
  for name, path in paths:
    entry = [name]
    if path is not None:
      st = os.stat(path)
      entry += [os.path.relpath(path, root), st.st_size, st.st_mtime_ns]
      files += 1
    digest.update(json.dumps(entry).encode())
  return {"clips": len(layout.clips), "files": files, "digest": digest.hexdigest(),
          "rules": BUILD_RULES}
