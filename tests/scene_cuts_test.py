"""Tests for tcvc_jax/scene_cuts.py on synthetic shots (textures under motion and noise)."""

from absl.testing import absltest
import numpy as np

from tcvc_jax import window_stream
from tcvc_jax.evaluation import scene_cuts
from tcvc_jax.evaluation import windows as protocol

_H, _W = 72, 96


def _texture(seed):
  """A smooth random texture of 3x the frame size, with its own brightness and contrast."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:3 * _H, 0:3 * _W].astype(np.float64)
  t = sum(np.sin(rng.uniform(0.02, 0.15) * x + rng.uniform(0.02, 0.15) * y + rng.uniform(0, 6))
          for _ in range(6))
  t = (t - t.min()) / (t.max() - t.min())
  return t * rng.uniform(0.4, 0.9) + rng.uniform(0, 0.1)


def _shot(seed, n, dx, dy, noise_seed=0):
  """n uint8 gray frames panning over one texture by (dx, dy) px per frame, with sensor noise."""
  tex, rng = _texture(seed), np.random.default_rng(noise_seed)
  frames = []
  for i in range(n):
    y0, x0 = int(_H + dy * i), int(_W + dx * i)
    f = tex[y0:y0 + _H, x0:x0 + _W] + rng.normal(0, 0.02, (_H, _W))
    frames.append(np.round(np.clip(f, 0, 1) * 255).astype(np.uint8))
  return frames


class CutDetectorTest(absltest.TestCase):

  def test_synthetic_cut(self):
    frames = _shot(1, 10, 3, 1) + _shot(2, 12, -2, 2, noise_seed=1)
    self.assertEqual(scene_cuts.detect_cuts(frames), [10])

  def test_two_cuts_any_input_layout(self):
    frames = _shot(1, 7, 2, 0) + _shot(2, 6, 0, 2) + _shot(3, 8, -2, -1)
    self.assertEqual(scene_cuts.detect_cuts(frames), [7, 13])
    rgb = [np.repeat(f[..., None], 3, -1) for f in frames]
    self.assertEqual(scene_cuts.detect_cuts(rgb), [7, 13])
    self.assertEqual(scene_cuts.detect_cuts([f.astype(np.float32) / 255 for f in frames]), [7, 13])
    self.assertEqual(scene_cuts.detect_cuts([f[..., None].astype(np.uint16) * 257
                                             for f in frames]), [7, 13])

  def test_no_cut_in_fast_pan_or_fade(self):
    self.assertEqual(scene_cuts.detect_cuts(_shot(1, 12, 7, -5)), [])
    base = _shot(2, 1, 0, 0)[0].astype(np.float64)
    fade = [np.round(base * (1 - 0.06 * i)).astype(np.uint8) for i in range(12)]
    self.assertEqual(scene_cuts.detect_cuts(fade), [])

  def test_no_cut_in_slow_ramps_of_flat_frames_or_a_fade_from_black(self):
    # A flat frame's histogram is one peak: with hard bins it jumped a bin every 8 levels of a slow
    # ramp (a cut every 8 frames of a sky or a title card brightening), and a textured fade from
    # black scored a cut at its third frame.
    for step in (1, 2, 4):
      ramp = [np.full((48, 64), step * i, np.uint8) for i in range(60)]
      self.assertEqual(scene_cuts.detect_cuts(ramp), [], step)
    texture = np.random.default_rng(0).random((48, 64))
    fade_in = [np.round(texture * 255 * i / 59).astype(np.uint8) for i in range(60)]
    self.assertEqual(scene_cuts.detect_cuts(fade_in), [])
    self.assertEqual(scene_cuts.detect_cuts(fade_in[::-1]), [])

  def test_frames_of_any_shape(self):
    # Frames whose short side is under 1/64 of the long one (a 2x200 strip, a 4000x16 banner)
    # stopped the colorize tool with a reshape error.
    for h, w in ((200, 2), (16, 4000), (300, 3), (1, 1), (1, 5000)):
      frames = [np.full((h, w), 30, np.uint8)] * 3 + [np.full((h, w), 220, np.uint8)] * 3
      self.assertEqual(scene_cuts.detect_cuts(frames), [3], (h, w))

  def test_flash_and_min_shot_length(self):
    frames = _shot(1, 16, 2, 1)
    frames[8] = np.full_like(frames[8], 250)  # one white frame
    self.assertEqual(scene_cuts.detect_cuts(frames), [8])
    self.assertEqual(scene_cuts.detect_cuts(frames, min_shot_length=1), [8, 9])

  def test_a_title_card_or_black_frame_before_the_film_is_a_shot_of_its_own(self):
    # Frame 1 has no shot motion to be judged against; it was never a cut, so a first frame unlike
    # the rest (a title card, a black frame) was one shot with them and its colours propagated
    # into the film.
    card = np.zeros((_H, _W), np.uint8)
    card[30:42, 20:76] = 230  # a line of white text on black
    for first in (np.zeros((_H, _W), np.uint8), card):
      frames = [first] + _shot(2, 12, -2, 2)
      self.assertEqual(scene_cuts.detect_cuts(frames), [1])
      windows = [(s, s + len(f)) for s, f in
                 window_stream.iter_windows(iter(frames), 4, scene_cuts.CutDetector())]
      self.assertEqual(windows, [(0, 1), (1, 7), (6, 12), (11, 13)])
    # Fast motion from the first frame on is no cut (it scores ~0.11, against ~0.03 for this
    # texture's usual pans), nor is a second frame equal to the first, whatever the floor; the slow
    # ramps and fades from black of the test above stay uncut at frame 1 too.
    self.assertEqual(scene_cuts.detect_cuts(_shot(1, 6, 15, 10)), [])
    self.assertEqual(scene_cuts.detect_cuts([card, card, card], min_score=0), [])

  def test_scores_and_frame_size_change(self):
    det = scene_cuts.CutDetector()
    frames = _shot(1, 3, 1, 1)
    self.assertEqual([det.update(f) for f in frames], [False, False, False])
    self.assertEqual(det.scores[0], 0.0)
    self.assertTrue(all(0 <= s < 0.08 for s in det.scores))
    self.assertTrue(det.update(frames[0][:40]))  # a new frame size starts a new shot

  def test_bad_arguments(self):
    with self.assertRaises(ValueError):
      scene_cuts.CutDetector(ratio=0)
    with self.assertRaises(ValueError):
      scene_cuts.CutDetector(min_shot_length=0)
    with self.assertRaises(TypeError):
      scene_cuts.detect_cuts([np.zeros((4, 4), np.int32)])

  def test_shots(self):
    self.assertEqual(scene_cuts.shots(10, [4, 7]), [(0, 4), (4, 7), (7, 10)])
    self.assertEqual(scene_cuts.shots(5, []), [(0, 5)])

  def test_streaming_windows_respect_the_cut(self):
    frames = _shot(1, 9, 3, 1) + _shot(2, 8, -2, 2)
    windows = [(s, s + len(f)) for s, f in
               window_stream.iter_windows(iter(frames), 4, scene_cuts.CutDetector())]
    self.assertEqual(windows, [(0, 6), (5, 9), (9, 15), (14, 17)])
    self.assertEqual(windows, [(w.start, w.stop) for w in protocol.plan_windows(17, 4, [9])])


if __name__ == "__main__":
  absltest.main()
