"""Tests for tcvc_jax.data.eval_pipeline: whole clips cut into padded, masked evaluation chunks."""

from absl.testing import absltest
import numpy as np

from tcvc_jax.data import eval_pipeline
from tcvc_jax.data import input_pipeline as ip
from tcvc_jax.data import sources as data_sources
from tcvc_jax.ops import color

import data_testlib as dt


def _take(ds, n=None):
  n = len(ds) if n is None else n
  return [ds[i] for i in range(n)]


def _jax_lab(rgb):
  return np.asarray(color.rgb_to_lab(rgb.astype(np.float32) / 255.0))


class EvalTest(absltest.TestCase):

  def test_whole_clips_padded_and_masked(self):
    rng = np.random.default_rng(6)
    clips = [dt.random_clip(rng, 5, 8, 8), dt.random_clip(rng, 3, 6, 10),
             dt.random_clip(rng, 8, 8, 8)]
    source = data_sources.ArraySource(clips)
    per_process = [_take(eval_pipeline.make_eval_dataset(source, source.index(), batch_size=2,
                                                         max_frames=4, process_index=p,
                                                         process_count=2))
                   for p in range(2)]
    self.assertEqual([len(x) for x in per_process], [4, 4])  # 5 chunks -> 3 + 2, padded to 4
    covered = []
    for e in per_process[0] + per_process[1]:
      self.assertEqual(e["rgb"].shape, (4, 8, 10, 3))
      if not e["mask"]:
        self.assertEqual((e["clip_id"], e["valid"].sum()), (-1, 0))
        continue
      c, s, n = int(e["clip_id"]), int(e["start"]), int(e["num_frames"])
      h, w = clips[c].shape[1:3]
      self.assertEqual((e["height"], e["width"]), (h, w))
      np.testing.assert_array_equal(e["valid"], np.arange(4) < n)
      np.testing.assert_array_equal(e["rgb"][:n, :h, :w], clips[c][s:s + n])
      self.assertEqual(e["rgb"][n:].sum() + e["rgb"][:, h:].sum() + e["rgb"][:, :, w:].sum(), 0)
      lab = _jax_lab(e["rgb"])
      np.testing.assert_allclose(e["gray"], lab[..., :1], atol=2e-6)
      np.testing.assert_allclose(e["ab"], lab[..., 1:], atol=2e-6)
      covered += [(c, s + t) for t in range(n)]
    self.assertCountEqual(covered, [(c, t) for c in range(3) for t in range(len(clips[c]))])
    evaluation = eval_pipeline.make_eval_dataset(source, source.index(), batch_size=2)
    batches = list(ip.to_batches(evaluation, 2, drop_remainder=False))
    self.assertLen(batches, 2)
    self.assertEqual(batches[0]["gray"].shape, (2, 8, 8, 10, 1))
    np.testing.assert_array_equal(batches[1]["mask"], [True, False])


if __name__ == "__main__":
  absltest.main()
