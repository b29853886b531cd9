"""The test set of an evaluation: clips read from a folder (frame folders or videos) or from a
data/ TFDS dataset split."""

import dataclasses
import os
from typing import Any

from absl import logging
import numpy as np

from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.evaluation.eval_config import EvalError
from tcvc_jax.media import av_frames
from tcvc_jax.media import folders
from tcvc_jax.media import reading


@dataclasses.dataclass
class Clip:
  """One test clip: input frames for the model, uint8 ground truth (or None) and frame names."""

  name: str
  frames: np.ndarray  # [n, H, W, 1 | 3]: uint8, or float32 in [0, 1] for 16-bit files
  gt: np.ndarray | None  # uint8 [n, H, W, 3]
  names: list
  fps: Any = None  # a video clip's frame rate (Fraction); None for frame folders


# Folders that systems and archives leave beside a user's files: never clips.
_NOT_CLIPS = frozenset({"__MACOSX", "@eaDir", "System Volume Information", "$RECYCLE.BIN"})


def _clip_dirs(root, only):
  if not root:
    raise EvalError("no test set: set --config.data.root")
  if os.path.exists(root) and not os.path.isdir(root):
    if os.path.splitext(root)[1].lower() in reading.VIDEO_EXTENSIONS:
      raise EvalError(f"test set {root} is a video, not a folder: give the folder that holds it "
                      "(each video there is one clip, named by its file name without extension)")
    raise EvalError(f"test set {root} is a file, not a folder (expected <root>/<clip>/*.png "
                    "frame folders or <root>/<clip>.mp4 videos)")
  if not os.path.isdir(root):
    raise EvalError(f"test set folder not found: {root}")
  clips = {}  # name -> frame folder or video file
  for entry in sorted(os.listdir(root)):
    path = os.path.join(root, entry)
    stem, ext = os.path.splitext(entry)
    if entry.startswith(".") or entry in _NOT_CLIPS:
      continue
    if os.path.islink(path) and not os.path.exists(path):  # the test set would lose a clip
      raise EvalError(f"{path} is a link to {os.readlink(path)}, which does not exist: mend or "
                      "remove it (or name the clips to evaluate, --config.data.clips)")
    if os.path.isdir(path):
      name = entry
    elif os.path.isfile(path) and ext.lower() in reading.VIDEO_EXTENSIONS:
      name = stem
    else:
      continue
    if name in clips:
      raise EvalError(f"two clips are named {name} in {root}: {os.path.basename(clips[name])} and "
                      f"{entry}")
    clips[name] = path
  wanted = [c.strip() for c in only.split(",") if c.strip()]
  missing = [c for c in wanted if c not in clips]
  if missing:
    named = [f"{c} (clips are named without their file extension: {os.path.splitext(c)[0]})"
             if os.path.splitext(c)[0] in clips else c for c in missing]
    raise EvalError(f"clips not found in {root}: {', '.join(named)}")
  names = wanted or sorted(clips)
  if not names:
    frames = sorted(e for e in os.listdir(root) if e.lower().endswith(reading.IMAGE_EXTENSIONS))
    raise EvalError(f"no clips in {root} (expected <root>/<clip>/*.png frame folders or "
                    "<root>/<clip>.mp4 videos)" + (
                        f"; it holds frames ({frames[0]}, ...): it is one clip, so give its "
                        "parent folder as the test set" if frames else ""))
  return [(n, clips[n]) for n in names]


def _too_short(name):
  return protocol.ClipTooShortError(f"clip {name} has 1 frame; the protocol needs at least 2")


def _open_clip(name, path, no_gt):
  src = reading.open_source(path)
  if src.num_frames is not None and src.num_frames < 2:  # a video may not say: checked when read
    raise _too_short(name)
  if not no_gt and src.is_gray:
    raise EvalError(f"clip {name}: the ground truth is gray; set --config.data.no_gt=True")
  return src


def _read_clip(name, src, no_gt):
  too_short = _too_short(name)
  gt = None if no_gt else src.read_all(np.uint8)
  if src.bit_depth > 8:
    frames = src.read_all(np.float32)  # the model sees all 16 bits; metrics use 8
  else:
    frames = gt if gt is not None else src.read_all(np.uint8)
  if len(frames) < 2:
    raise too_short
  names = src.names or [f"{i:05d}.png" for i in range(len(frames))]  # a video's frames
  colourless = [] if gt is None else [av_frames.colourless(f[None]) for f in gt]
  if colourless and all(colourless):
    logging.warning("clip %s: its ground truth has no colour (R = G = B in every frame): its "
                    "PSNR and CDC measure against gray (no_gt=True measures without it)", name)
  elif colourless:  # one gray file among colour ones (a frame re-saved as gray) scores apart
    gray = [names[i] for i, f in enumerate(gt)
            if colourless[i] and int(f.max()) - int(f.min()) > 16]
    if gray:
      logging.warning("clip %s: %d of its %d ground-truth frames have no colour (R = G = B; %s): "
                      "gray frames among colour ones? They are measured against gray", name,
                      len(gray), len(gt), ", ".join(gray[:5]) + (", ..." if len(gray) > 5 else ""))
  return Clip(name, frames, gt, names, fps=src.fps if src.kind == "video" else None)


def iter_clips(data_config):
  """The test set's clips in name order, read one at a time (whole clips, as the original).

  The clip list is checked at once; each clip is read when the iterator reaches it.

  Args:
    data_config: `config.data` (source, root, clips, no_gt).

  Returns:
    `Clips`: an iterable of Clip with the number of clips (`len`).

  Raises:
    EvalError: unknown source, missing or empty root (at once).
    reading.MediaError, protocol.ClipTooShortError: an unreadable or 1-frame clip (a folder's
      frame headers, a video's container are checked at once; frames that do not decode and a
      video with fewer frames than it lists when read).
  """
  if data_config.source == "tfds":
    return _tfds_clips(data_config)
  if data_config.source != "folder":
    raise EvalError(f"unknown data source {data_config.source!r}; use 'folder' or 'tfds'")
  dirs = _clip_dirs(data_config.root, data_config.clips)
  # Every clip opened (its frame headers read) before the first is colorized: fail at once.
  opened = [(name, _open_clip(name, path, data_config.no_gt)) for name, path in dirs]
  for name, src in opened:  # (names go into CSV and JSON files, as UTF-8)
    if problem := folders.not_utf8_problem(name, [name, *(src.names or ())]):
      raise EvalError(problem)
  return Clips((_read_clip(name, src, data_config.no_gt) for name, src in opened), len(opened))


@dataclasses.dataclass(frozen=True)
class Clips:
  """The test set's clips, read as they are iterated (once), and how many there are."""
  iterator: Any
  count: int

  def __iter__(self):
    return self.iterator

  def __len__(self):
    return self.count


def _tfds_clips(data_config):
  """Clips of a data/ dataset split (built first if it is not prepared yet)."""
  from tcvc_jax.data import building as data_building  # pylint: disable=g-import-not-at-top
  from tcvc_jax.data import raw_records  # pylint: disable=g-import-not-at-top
  name, config = data_config.name, data_config.config or None
  try:
    data_building.build(name, data_config.data_dir, config=config,
                        manual_dir=data_config.manual_dir)
    source, index = data_building.open_split(name, data_config.split, data_config.data_dir,
                                             config=config)
  except Exception as e:  # tfds raises many types; the user needs the message, not the type
    raise EvalError(f"cannot open {name}/{config} split {data_config.split!r}: {e}") from e
  wanted = {c.strip() for c in (data_config.clips or "").split(",") if c.strip()}
  known = set(index.names) | {f"clip{i:04d}" for i in range(len(index))}  # unnamed: by position
  missing = sorted(wanted - known)
  if missing:
    raise EvalError(f"clips not found in {name}/{config} split {data_config.split!r}: "
                    f"{', '.join(missing)} (it has {len(index)}: "
                    f"{', '.join(sorted(index.names)[:5])}{', ...' if len(index) > 5 else ''})")

  def clips():
    for i in range(len(index)):
      clip = index.names[i] or f"clip{i:04d}"
      if wanted and clip not in wanted:
        continue
      frames = np.asarray(raw_records.clip_frames(source, index, i))  # uint8 [n, H, W, 3]
      if frames.shape[0] < 2:
        raise protocol.ClipTooShortError(f"clip {clip} has 1 frame; the protocol needs at least 2")
      names = [f"{j:05d}.png" for j in range(frames.shape[0])]
      yield Clip(clip, frames, None if data_config.no_gt else frames, names)

  count = len(wanted) if wanted else len(index)
  return Clips(clips(), count)
