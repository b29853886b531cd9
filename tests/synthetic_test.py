"""Tests for tcvc_jax.data.synthetic: determinism, exact flow and cuts, colour follows luminance."""

from absl.testing import absltest
import numpy as np

from tcvc_jax.data import synthetic
from tcvc_jax.ops import color


class SyntheticTest(absltest.TestCase):

  def test_deterministic_in_the_seed(self):
    a = synthetic.generate_clip((0, 1, 2), height=24, width=32, num_frames=6)
    b = synthetic.generate_clip((0, 1, 2), height=24, width=32, num_frames=6)
    c = synthetic.generate_clip((0, 1, 3), height=24, width=32, num_frames=6)
    for field in ("frames", "flow", "labels", "shot"):
      np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    self.assertFalse(np.array_equal(a.frames, c.frames))
    self.assertEqual((a.frames.shape, a.frames.dtype), ((6, 24, 32, 3), np.uint8))
    self.assertEqual((a.flow.shape, a.labels.shape, a.shot.shape),
                     ((5, 24, 32, 2), (6, 24, 32), (6,)))

  def test_cuts(self):
    clips = [synthetic.generate_clip(s, height=16, width=16, num_frames=12, max_cuts=2,
                                     cut_probability=1.0) for s in range(4)]
    for clip in clips:
      shot = clip.shot
      self.assertEqual(shot[0], 0)
      self.assertTrue(np.all(np.diff(shot) >= 0))
      self.assertGreaterEqual(shot[-1], 1)
      cuts = np.flatnonzero(np.diff(shot))  # a cut follows these frames
      self.assertTrue(np.all(clip.flow[cuts] == 0))
      runs = np.diff(np.concatenate([[0], cuts + 1, [len(shot)]]))
      self.assertGreaterEqual(runs.min(), 3)
    still = synthetic.generate_clip(0, num_frames=12, cut_probability=0.0)
    np.testing.assert_array_equal(still.shot, 0)

  def test_flow_moves_each_surface_to_where_it_is_next(self):
    ys, xs = np.mgrid[0:48, 0:48]
    errors = {"true": [], "zero": [], "negated": []}
    for seed in range(6):
      clip = synthetic.generate_clip(seed, height=48, width=48, num_frames=6, max_cuts=0,
                                     max_objects=1)
      for t in range(5):
        # One object: the flow on it is one vector, the shift of the object's centroid.
        before, after = clip.labels[t] >= 4, clip.labels[t + 1] >= 4
        shift = [xs[after].mean() - xs[before].mean(), ys[after].mean() - ys[before].mean()]
        vectors = np.unique(clip.flow[t][before], axis=0)
        self.assertLen(vectors, 1)
        for name, flow in (("true", vectors[0]), ("zero", 0 * vectors[0]),
                           ("negated", -vectors[0])):
          errors[name].append(np.linalg.norm(np.asarray(shift) - flow))
        # The background moves as one: the pan.
        self.assertLen(np.unique(clip.flow[t][~before], axis=0), 1)
    mean = {k: np.mean(v) for k, v in errors.items()}
    self.assertLess(mean["true"], 0.3, mean)  # pixel masks quantise the centroid
    self.assertGreater(mean["zero"], 0.9, mean)
    self.assertGreater(mean["negated"], 2.0, mean)

  def test_flow_explains_the_next_frame(self):
    # Backward warping frame t+1 with the flow reconstructs frame t much better than no
    # motion or the opposite motion (bilinear sampling blurs fine textures, hence no equality).
    ys, xs = np.mgrid[0:48, 0:48].astype(np.float32)
    for seed in range(4):
      clip = synthetic.generate_clip(seed, height=48, width=48, num_frames=5, max_cuts=0)
      frames = clip.frames.astype(np.float32)
      errors = {}
      for name, sign in (("true", 1), ("zero", 0), ("negated", -1)):
        e = []
        for t in range(4):
          x2 = xs + sign * clip.flow[t, ..., 0]
          y2 = ys + sign * clip.flow[t, ..., 1]
          inside = (x2 >= 1) & (x2 <= 46) & (y2 >= 1) & (y2 <= 46)
          e.append(((_bilinear(frames[t + 1], x2, y2) - frames[t]) ** 2)[inside].mean())
        errors[name] = np.mean(e)
      self.assertLess(errors["true"], 0.6 * errors["zero"], errors)
      self.assertLess(errors["true"], 0.6 * errors["negated"], errors)

  def test_colour_is_a_function_of_the_material(self):
    clip = synthetic.generate_clip(7, height=64, width=64, num_frames=10, max_cuts=3,
                                   cut_probability=1.0, max_objects=3)
    gray, ab = color.rgb_to_gray_ab(clip.frames, np)
    labels = clip.labels
    # Pixels away from edges (anti-aliasing mixes the colours of two surfaces there).
    interior = np.ones(labels.shape, bool)
    for axis in (1, 2):
      for step in (1, -1):
        interior &= np.roll(labels, step, axis=axis) == labels
    present = np.unique(labels)
    self.assertGreaterEqual(len(present), 4)
    for m in present:
      material = synthetic.MATERIALS[m]
      here = interior & (labels == m)
      # Pixels just outside an object keep the background label but get a little of the
      # object's colour; they are rare.
      off = np.abs(ab[here] - material.ab).max(axis=-1) > 0.01
      self.assertLess(off.mean(), 0.002, material.name)
      lightness = gray[..., 0][here] * 100 + 50
      self.assertGreaterEqual(lightness.min(), material.low - 1, material.name)
      self.assertLessEqual(lightness.max(), material.high + 1, material.name)
    hues = np.array([m.hue for m in synthetic.MATERIALS])
    self.assertLen(set(hues), len(hues))  # every material has its own colour

  def test_painted_surfaces_keep_layout_and_lightness_but_not_hue(self):
    # Paint changes the hue of whole surfaces of a shot, nothing else: same layout, motion,
    # materials and lightness; a painted surface's ab is one value per shot, and across shots
    # and clips the paint takes many hues.
    painted_hues = []
    for seed in range(6):
      plain = synthetic.generate_clip(seed, height=48, width=48, num_frames=6, max_cuts=1,
                                      cut_probability=1.0)
      paint = synthetic.generate_clip(seed, height=48, width=48, num_frames=6, max_cuts=1,
                                      cut_probability=1.0, paint_probability=0.5)
      for field in ("flow", "labels", "shot"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(paint, field))
      gray_p, ab_p = color.rgb_to_gray_ab(plain.frames, np)
      gray_q, ab_q = color.rgb_to_gray_ab(paint.frames, np)
      interior = np.ones(plain.labels.shape, bool)
      for axis in (1, 2):
        for step in (1, -1):
          interior &= np.roll(plain.labels, step, axis=axis) == plain.labels
      for s in np.unique(plain.shot):
        for m in np.unique(plain.labels[plain.shot == s]):
          here = interior & (plain.labels == m) & (plain.shot == s)[:, None, None]
          if here.sum() < 20:
            continue
          # Lightness within a few L* (uint8 rounding; out-of-gamut paint is clipped in RGB).
          dl = np.abs(gray_p[..., 0][here] - gray_q[..., 0][here]) * 100
          self.assertLess(np.median(dl), 2.5)
          ab = np.median(ab_q[here], axis=0)
          if np.abs(ab - synthetic.MATERIALS[m].ab).max() > 0.02:
            painted_hues.append(np.degrees(np.arctan2(ab[1], ab[0])) % 360)
            if m >= len(synthetic.BACKGROUNDS):
              continue  # two objects of one material may be painted differently
            # One paint per surface: its pixels share the ab (up to edge mixing and clipping).
            self.assertGreater((np.abs(ab_q[here] - ab).max(-1) < 0.02).mean(), 0.95)
    self.assertGreaterEqual(len(painted_hues), 8)
    self.assertGreater(np.histogram(painted_hues, bins=6, range=(0, 360))[0].astype(bool).sum(),
                       3)  # uniform hues, not a few fixed ones

  def test_paint_probability_bounds(self):
    unpainted = synthetic.generate_clip(3, height=16, width=16, num_frames=4)
    zero = synthetic.generate_clip(3, height=16, width=16, num_frames=4, paint_probability=0.0)
    np.testing.assert_array_equal(unpainted.frames, zero.frames)
    always = synthetic.generate_clip(3, height=16, width=16, num_frames=4, paint_probability=1.0)
    self.assertFalse(np.array_equal(unpainted.frames, always.frames))
    for bad in (-0.1, 1.5):
      with self.assertRaisesRegex(ValueError, "paint_probability"):
        synthetic.generate_clip(3, height=16, width=16, num_frames=4, paint_probability=bad)

  def test_material_rgb_follows_lightness(self):
    for material in synthetic.MATERIALS:
      rgb = synthetic.material_rgb(material, np.linspace(0, 1, 5))
      luma = rgb @ np.array([0.299, 0.587, 0.114])
      self.assertTrue(np.all(np.diff(luma) > 0), material.name)


def _bilinear(image, x, y):
  h, w = image.shape[:2]
  x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
  y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
  bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
  return top * (1 - fy) + bottom * fy


if __name__ == "__main__":
  absltest.main()
