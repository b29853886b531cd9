"""Procedural colour video clips whose colours follow from their luminance structure (NumPy only).

Every clip is a sequence of shots. A shot shows a textured background that pans at a constant
velocity and one to three textured objects that move at constant velocities, bounce off the
frame border and occlude each other. Each surface is made of one *material*: a texture (checker,
stripes, dots, blobs, rings, plain, fine checker), a band of CIE L* and one fixed (a*, b*). The
colour is therefore a function of the local lightness pattern, which a colorization model can
learn from the gray input alone. Shots are separated by hard scene cuts.

The generator also returns what it knows exactly: the forward optical flow, the visible material
of every pixel and the shot of every frame. Everything is deterministic in the seed.

*Painted* surfaces (`paint_probability` > 0) are the exception to "colour follows lightness", as
in real footage, where a dress may be red or blue in the same gray: each surface of a shot is, with
that probability, painted in a hue drawn uniformly for that shot instead of its material's, with
the material's texture and lightness band. No model can tell a painted surface's hue from the
gray frames; a colour hint can (guided colorization, tcvc_jax/guidance.py). With
`paint_probability` 0 (the default) no paint is drawn and clips are exactly as before.
"""

import dataclasses
from typing import Callable
from typing import Sequence

import numpy as np

from tcvc_jax.ops import color

_Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Material:
  """One surface type: texture, lightness band and colour.

  Attributes:
    name: short name.
    hue: CIE Lab hue angle h in degrees; with `chroma` it fixes a* and b*.
    chroma: CIE Lab chroma C*.
    low: L* where the texture is 0.
    high: L* where the texture is 1.
    texture: `(u, v, rng) -> t in [0, 1]`, evaluated at surface coordinates in pixels.
  """
  name: str
  hue: float
  chroma: float
  low: float
  high: float
  texture: _Texture

  @property
  def ab(self) -> np.ndarray:
    """Normalised (a, b) of the material, as the model's Lab normalisation (ab* / 110)."""
    h = np.deg2rad(self.hue)
    return np.array([np.cos(h), np.sin(h)], np.float32) * self.chroma / color.AB_NORM


def _checker(period):
  def texture(u, v, rng):
    del rng
    return ((np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2).astype(np.float32)
  return texture


def _stripes(period):
  def texture(u, v, rng):
    # Orientation is drawn per surface, so stripes never tell their hue by direction alone
    # (the training pipeline rotates and flips windows).
    theta = rng.uniform(0, np.pi)
    return 0.5 + 0.5 * np.sin(2 * np.pi * (u * np.cos(theta) + v * np.sin(theta)) / period)
  return texture


def _dots(period, radius):
  def texture(u, v, rng):
    del rng
    du = (u % period) - period / 2
    dv = (v % period) - period / 2
    return np.clip(radius + 0.5 - np.sqrt(du * du + dv * dv), 0, 1)
  return texture


def _blobs(u, v, rng):
  # A few long-period sinusoids: smooth, low-frequency shading.
  t = np.zeros(np.broadcast(u, v).shape, np.float32)
  for _ in range(3):
    fu, fv = rng.uniform(-1, 1, 2) * 2 * np.pi / 24
    t = t + np.sin(fu * u + fv * v + rng.uniform(0, 2 * np.pi))
  return 0.5 + t / 6


def _rings(period):
  def texture(u, v, rng):
    del rng
    return 0.5 + 0.5 * np.cos(2 * np.pi * np.sqrt(u * u + v * v) / period)
  return texture


def _plain(u, v, rng):
  del rng
  return np.full(np.broadcast(u, v).shape, 0.5, np.float32)


# Background materials first, then object materials; the index is the material id in `labels`.
# Hues and lightness bands are chosen so that every colour stays inside the sRGB gamut.
BACKGROUNDS = (
    Material("checker", 140, 40, 35, 55, _checker(8)),
    Material("stripes", 285, 40, 50, 70, _stripes(6)),
    Material("dots", 325, 45, 40, 62, _dots(8, 2.5)),
    Material("blobs", 70, 40, 55, 75, _blobs),
)
OBJECTS = (
    Material("rings", 35, 50, 40, 58, _rings(5)),
    Material("plain", 200, 20, 26, 34, _plain),
    Material("fine_checker", 95, 55, 70, 88, _checker(4)),
)
MATERIALS = BACKGROUNDS + OBJECTS
# Object material k is always drawn in this shape, so shape is a cue as well.
_SHAPES = ("disc", "square", "diamond")


@dataclasses.dataclass(frozen=True)
class SyntheticClip:
  """A generated clip.

  Attributes:
    frames: `[T, H, W, 3]` uint8 sRGB frames.
    flow: `[T-1, H, W, 2]` float32 forward flow in pixels, (x, y) order: the surface seen at
      pixel p of frame t is at p + flow[t, p] in frame t+1. Zero where a cut follows frame t.
    labels: `[T, H, W]` int8 material id (index into `MATERIALS`) of the visible surface.
    shot: `[T]` int32 shot number; a scene cut precedes frame t where shot[t] != shot[t-1].
  """
  frames: np.ndarray
  flow: np.ndarray
  labels: np.ndarray
  shot: np.ndarray


def material_rgb(material: Material, t: np.ndarray) -> np.ndarray:
  """sRGB colours `[..., 3]` float32 in [0, 1] of a material for texture values `t` in [0, 1].

  L* follows the texture inside the material's band; a* and b* are the material's. The
  conversion is the model's own (`color.lab_to_rgb` with `xp=numpy`).
  """
  lightness = material.low + (material.high - material.low) * np.clip(t, 0, 1)
  lab = np.empty(np.shape(t) + (3,), np.float32)
  lab[..., 0] = (lightness - color.L_CENT) / color.L_NORM
  lab[..., 1:] = material.ab
  return np.clip(color.lab_to_rgb(lab, np), 0, 1)


def _reflect(x, low, high):
  """Folds positions into [low, high] as a ball bouncing between two walls would move."""
  span = high - low
  y = np.mod(x - low, 2 * span)
  return low + np.where(y > span, 2 * span - y, y)


def _shape_alpha(shape, du, dv, radius):
  """Anti-aliased coverage in [0, 1] from a signed distance in pixels."""
  if shape == "disc":
    dist = np.sqrt(du * du + dv * dv) - radius
  elif shape == "square":
    dist = np.maximum(np.abs(du), np.abs(dv)) - radius * 0.85
  else:
    dist = (np.abs(du) + np.abs(dv)) / np.sqrt(2) - radius * 0.85
  return np.clip(0.5 - dist, 0, 1).astype(np.float32)


def _plan_shots(rng, num_frames, num_cuts):
  """Shot id per frame, with cuts drawn so that every shot has at least 3 frames."""
  shot = np.zeros(num_frames, np.int32)
  starts = []
  for _ in range(num_cuts):
    lo, hi = (starts[-1] if starts else 0) + 3, num_frames - 3
    if hi < lo:
      break
    starts.append(int(rng.integers(lo, hi + 1)))
  for s in starts:
    shot[s:] += 1
  return shot


PAINT_CHROMA = 35.0  # chroma of painted surfaces: inside the sRGB gamut for most hues and bands


def _paint(material, rng, probability):
  """The material, or (with `probability`) the material in a uniformly drawn hue."""
  if rng.random() >= probability:
    return material
  return dataclasses.replace(material, hue=float(rng.uniform(0, 360)), chroma=PAINT_CHROMA)


def _plan_shot(rng, height, width, max_objects, max_speed):
  """Random layout of one shot: background, pan and objects (positions as functions of time)."""
  scale = min(height, width) / 64.0
  shot = {
      "background": int(rng.integers(len(BACKGROUNDS))),
      "bg_seed": int(rng.integers(2**31)),
      "pan": rng.uniform(-1, 1, 2) * max_speed * scale * 0.5,
      "pan0": rng.uniform(0, 64, 2),
      "objects": [],
  }
  for _ in range(int(rng.integers(1, max_objects + 1))):
    kind = int(rng.integers(len(OBJECTS)))
    radius = rng.uniform(6, 13) * scale
    shot["objects"].append({
        "material": kind,
        "radius": radius,
        "pos0": rng.uniform([radius, radius], [width - radius, height - radius]),
        "vel": rng.uniform(-1, 1, 2) * max_speed * scale,
        "tex_seed": int(rng.integers(2**31)),
    })
  return shot


def _object_centre(obj, step, height, width):
  r = obj["radius"]
  x, y = obj["pos0"] + obj["vel"] * step
  return np.array([_reflect(x, r, width - r), _reflect(y, r, height - r)])


def _render(shot, step, xs, ys):
  """Renders frame `step` of a shot: colours, visible material and per-pixel owner."""
  height, width = xs.shape
  bg = shot.get("bg_material", BACKGROUNDS[shot["background"]])
  offset = shot["pan0"] + shot["pan"] * step
  u, v = xs - offset[0], ys - offset[1]
  image = material_rgb(bg, bg.texture(u, v, np.random.default_rng(shot["bg_seed"])))
  labels = np.full(xs.shape, shot["background"], np.int8)
  owner = np.full(xs.shape, -1, np.int32)
  for k, obj in enumerate(shot["objects"]):
    centre = _object_centre(obj, step, height, width)
    du, dv = xs - centre[0], ys - centre[1]
    material = obj.get("painted", OBJECTS[obj["material"]])
    alpha = _shape_alpha(_SHAPES[obj["material"]], du, dv, obj["radius"])[..., None]
    colour = material_rgb(material, material.texture(
        du, dv, np.random.default_rng(obj["tex_seed"])))
    image = image * (1 - alpha) + colour * alpha
    inside = alpha[..., 0] > 0.5
    labels[inside] = len(BACKGROUNDS) + obj["material"]
    owner[inside] = k
  return image, labels, owner


def _shot_flow(shot, step, owner, height, width):
  """Flow from frame `step` to `step + 1` of the same shot, given the visible owners."""
  flow = np.empty(owner.shape + (2,), np.float32)
  flow[...] = shot["pan"]
  for k, obj in enumerate(shot["objects"]):
    move = (_object_centre(obj, step + 1, height, width)
            - _object_centre(obj, step, height, width))
    flow[owner == k] = move
  return flow


def generate_clip(seed: int | Sequence[int], *, height: int = 64, width: int = 64,
                  num_frames: int = 20, max_objects: int = 3, max_cuts: int = 1,
                  cut_probability: float = 0.5, max_speed: float = 2.0,
                  paint_probability: float = 0.0) -> SyntheticClip:
  """Generates one clip.

  Args:
    seed: an int or a sequence of ints (e.g. `(seed, split, index)`), fed to
      `np.random.SeedSequence`.
    height: frame height in pixels.
    width: frame width in pixels.
    num_frames: number of frames T.
    max_objects: up to this many objects per shot (at least one).
    max_cuts: up to this many scene cuts.
    cut_probability: probability of each of the `max_cuts` cuts.
    max_speed: largest object speed in pixels per frame at 64x64 (scaled with the size).
    paint_probability: chance that a surface (the background or an object) of a shot is painted
      in a random hue (see the module docstring); drawn from a stream of its own, so the layout
      and motion do not depend on it.

  Returns:
    A `SyntheticClip`.
  """
  if not 0 <= paint_probability <= 1:
    raise ValueError(f"paint_probability must be in [0, 1], got {paint_probability}")
  seeds = np.random.SeedSequence(seed)
  rng = np.random.default_rng(seeds)
  num_cuts = int((rng.random(max_cuts) < cut_probability).sum())
  shot_of = _plan_shots(rng, num_frames, num_cuts)
  shots = [_plan_shot(rng, height, width, max_objects, max_speed)
           for _ in range(int(shot_of[-1]) + 1)]
  if paint_probability > 0:
    paint_rng = np.random.default_rng(seeds.spawn(1)[0])
    for shot in shots:
      bg = BACKGROUNDS[shot["background"]]
      if (painted := _paint(bg, paint_rng, paint_probability)) is not bg:
        shot["bg_material"] = painted
      for obj in shot["objects"]:
        material = OBJECTS[obj["material"]]
        if (painted := _paint(material, paint_rng, paint_probability)) is not material:
          obj["painted"] = painted
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  labels = np.empty((num_frames, height, width), np.int8)
  flow = np.zeros((max(num_frames - 1, 0), height, width, 2), np.float32)
  for t in range(num_frames):
    s = int(shot_of[t])
    step = t - int(np.argmax(shot_of == s))
    image, labels[t], owner = _render(shots[s], step, xs, ys)
    frames[t] = np.round(image * 255).astype(np.uint8)
    if t + 1 < num_frames and shot_of[t + 1] == s:
      flow[t] = _shot_flow(shots[s], step, owner, height, width)
  return SyntheticClip(frames=frames, flow=flow, labels=labels, shot=shot_of)
