"""Simulated colour hints for training, drawn from the ground truth as SIGGRAPH17 drew them.

So that a model trained here follows user hints (clicks and colour references, see
tcvc_jax/guidance.py), the anchors of a training window (frames 0 and N-1, the only frames whose
hints TCVC reads) get hints sampled from their own ground-truth ab. The rule, per window:

  * with probability `none_fraction` the window has no hint at all: TCVC's unguided mode, the
    way it is used and validated without hints;
  * otherwise each anchor, independently:
      - with probability `dense_fraction` a dense hint, as a hand-coloured reference frame gives
        (and, with holes, as the hints carried from another anchor are): ab = the ground truth
        and mask 1 everywhere, except in 0..`dense_max_holes` random rectangles (sides uniform
        in 1..H/2 and 1..W/2, uniform position) where ab and mask are 0;
      - else K points with K ~ Geometric: P(K = k) = (1 - p)^k p, k >= 0, p = `points_p`
        (SIGGRAPH17: p = 1/8, so K = 0 one time in 8 and E[K] = 7). Each point is a square patch
        of side uniform in 1..`max_patch` (all sizes, SIGGRAPH17's 1..9), placed as SIGGRAPH17
        placed it: `location` "normal", top-left ~ N((H-P+1)/2, ((H-P+1)/4)^2) per axis, clipped
        to the frame, or "uniform". The patch's hint ab is the mean ground-truth ab over the
        patch, its mask 1; a later patch overwrites an earlier one where they overlap.

With the defaults (1/4, 1/8, 1/8): a window has no hint with probability 1/4 + 3/4 (7/64)^2
~ 0.26; an anchor is dense with probability 3/4 * 1/8 ~ 0.09, has points with 3/4 * 7/8 * 7/8
~ 0.57, and nothing with ~ 0.33.

Hints are drawn on the frames as the model sees them (after crop, flips and rotation), so they
always lie on those frames; the draws come from the generator grain gives each element, so the
stream is reproducible and resumes exactly. NumPy only: the pipeline's workers never start JAX.
"""

import dataclasses
from typing import Any
from typing import Mapping

import grain
import numpy as np

from tcvc_jax.ops import color

HINT_KEYS = ("hint_ab", "hint_mask")


def _is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class HintSpec:
  """How hints are simulated (see the module docstring for the rule)."""
  none_fraction: float = 0.25
  dense_fraction: float = 0.125
  points_p: float = 0.125
  max_patch: int = 9
  location: str = "normal"
  dense_max_holes: int = 4

  def __post_init__(self):
    for name in ("none_fraction", "dense_fraction"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"simulated_hints.{name} must be in [0, 1], got {getattr(self, name)}")
    if not 0 < self.points_p <= 1:
      raise ValueError(f"simulated_hints.points_p must be in (0, 1], got {self.points_p}")
    if not _is_int(self.max_patch) or self.max_patch < 1:
      raise ValueError(f"simulated_hints.max_patch must be a positive integer, got "
                       f"{self.max_patch!r}")
    if not _is_int(self.dense_max_holes) or self.dense_max_holes < 0:
      raise ValueError(f"simulated_hints.dense_max_holes must be a non-negative integer, got "
                       f"{self.dense_max_holes!r}")
    if self.location not in ("normal", "uniform"):
      raise ValueError(f"simulated_hints.location must be 'normal' or 'uniform', "
                       f"got {self.location!r}")

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | Any | None) -> "HintSpec | None":
    """The spec of a `config.data.simulated_hints` block, or None when it is off or absent."""
    if config is None:
      return None
    fields = dict(config) if isinstance(config, Mapping) else config.to_dict()
    if not fields.pop("enabled", False):
      return None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"simulated_hints: unknown field(s) {', '.join(unknown)}; "
                       f"known: enabled, {', '.join(sorted(known))}")
    return cls(**fields)


def draw_patches(rng: np.random.Generator, height: int, width: int,
                 spec: HintSpec) -> np.ndarray:
  """[K, 3] int (top, left, size) of the point patches of one frame, in painting order."""
  count = int(rng.geometric(spec.points_p)) - 1  # failures before the first success: K >= 0
  sizes = np.minimum(rng.integers(1, spec.max_patch + 1, count), min(height, width))
  spans = np.stack([height - sizes + 1, width - sizes + 1], axis=-1).astype(np.float64)
  if spec.location == "normal":
    corner = rng.normal(spans / 2.0, spans / 4.0)
    corner = np.clip(corner, 0, spans - 1).astype(np.int64)  # int() of the clipped draw
  else:
    corner = np.floor(rng.random((count, 2)) * spans).astype(np.int64)
  return np.concatenate([corner, sizes[:, None]], axis=-1).astype(np.int64).reshape(-1, 3)


def paint_patches(ab: np.ndarray, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(hint ab [H, W, 2], mask [H, W, 1]) of point patches on ground truth ab [H, W, 2]."""
  hint = np.zeros(ab.shape[:2] + (2,), np.float32)
  mask = np.zeros(ab.shape[:2] + (1,), np.float32)
  for top, left, size in patches:
    region = np.s_[top:top + size, left:left + size]
    hint[region] = ab[region].mean(axis=(0, 1), dtype=np.float64)
    mask[region] = 1.0
  return hint, mask


def dense_hint(ab: np.ndarray, rng: np.random.Generator,
               spec: HintSpec) -> tuple[np.ndarray, np.ndarray]:
  """(hint ab, mask) of a dense hint: the ground truth everywhere but in random holes."""
  height, width = ab.shape[:2]
  hint = np.array(ab, np.float32)
  mask = np.ones((height, width, 1), np.float32)
  for _ in range(int(rng.integers(0, spec.dense_max_holes + 1))):
    hh = int(rng.integers(1, max(height // 2, 1) + 1))
    ww = int(rng.integers(1, max(width // 2, 1) + 1))
    top, left = int(rng.integers(0, height - hh + 1)), int(rng.integers(0, width - ww + 1))
    hint[top:top + hh, left:left + ww] = 0.0
    mask[top:top + hh, left:left + ww] = 0.0
  return hint, mask


def anchor_indices(num_frames: int) -> list[int]:
  """The frames that get hints: 0 and N-1."""
  return sorted({0, num_frames - 1})


def sample_window_hints(ab: np.ndarray, rng: np.random.Generator,
                        spec: HintSpec) -> dict[str, np.ndarray]:
  """{'hint_ab' [N, H, W, 2], 'hint_mask' [N, H, W, 1]} float32 for a window's ab [N, H, W, 2].

  Only the anchors (frames 0 and N-1) can be nonzero, and only their ab is read.
  """
  n, height, width = ab.shape[:3]
  hint_ab = np.zeros((n, height, width, 2), np.float32)
  hint_mask = np.zeros((n, height, width, 1), np.float32)
  if rng.random() < spec.none_fraction:
    return {"hint_ab": hint_ab, "hint_mask": hint_mask}
  for t in anchor_indices(n):
    if rng.random() < spec.dense_fraction:
      hint_ab[t], hint_mask[t] = dense_hint(ab[t], rng, spec)
    else:
      hint_ab[t], hint_mask[t] = paint_patches(ab[t], draw_patches(rng, height, width, spec))
  return {"hint_ab": hint_ab, "hint_mask": hint_mask}


class SimulateHints(grain.transforms.RandomMap):
  """Adds `hint_ab` and `hint_mask` to a training window (from its `ab`, else its `rgb`)."""

  def __init__(self, spec: HintSpec):
    self._spec = spec

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    element = dict(element)
    if "ab" in element:
      ab = element["ab"]
    else:  # output="rgb": the ab of the anchors only, in NumPy
      n = element["rgb"].shape[0]
      ab = np.zeros(element["rgb"].shape[:3] + (2,), np.float32)
      idx = anchor_indices(n)
      ab[idx] = color.rgb_to_gray_ab(element["rgb"][idx], np)[1]
    element.update(sample_window_hints(ab, rng, self._spec))
    return element
