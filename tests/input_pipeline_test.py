"""Tests for tcvc_jax.data.input_pipeline.

Sampling, augmentation, Lab, sharding, resume, bad data, settings.
"""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
import grain
import numpy as np
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds

from tcvc_jax.data import building as data_building
from tcvc_jax.data import eval_pipeline
from tcvc_jax.data import input_pipeline as ip
from tcvc_jax.data import sources as data_sources
from tcvc_jax.ops import color

import data_testlib as dt
import train_testlib

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# The 4 ops the original's augment() produces (docs/original.md#training), as functions of HWC.
ALLOWED_OPS = {
    "id": lambda x: x,
    "hflip": lambda x: x[:, ::-1],
    "rot90cw": lambda x: x[::-1].transpose(1, 0, 2),
    "rot90cw_hflip": lambda x: x[:, ::-1][::-1].transpose(1, 0, 2),
}
OTHER_OPS = {
    "vflip": lambda x: x[::-1],
    "rot180": lambda x: x[::-1, ::-1],
    "transpose": lambda x: x.transpose(1, 0, 2),
    "rot90ccw": lambda x: x[:, ::-1].transpose(1, 0, 2),
}


def _take(ds, n=None):
  n = len(ds) if n is None else n
  return [ds[i] for i in range(n)]


def _jax_lab(rgb):
  from tcvc_jax.ops import color  # pylint: disable=g-import-not-at-top
  return np.asarray(color.rgb_to_lab(rgb.astype(np.float32) / 255.0))


def resume_pipeline(data_dir, num_workers=0):
  """The pipeline of the resume test (also built by the child process)."""
  source, index = data_building.open_split("synthetic_clips", "train", data_dir, config="tiny")
  spec = ip.WindowSpec(num_frames=3, crop_size=(16, 16), interval_list=(1, 2),
                       random_reverse=True)
  ds = ip.make_train_dataset(source, index, spec, seed=11)
  return ip.to_batches(ds, 3, num_workers=num_workers, read_threads=1)


class LabTest(absltest.TestCase):

  def test_numpy_conversion_is_the_models(self):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 9, 11, 3), dtype=np.uint8)
    rgb[0, 0, :6] = [[0, 0, 0], [255, 255, 255], [10, 11, 12], [255, 0, 0], [0, 255, 0],
                     [0, 0, 255]]
    gray, ab = color.rgb_to_gray_ab(rgb, np)
    self.assertEqual((gray.dtype, gray.shape, ab.shape), (np.float32, (4, 9, 11, 1),
                                                          (4, 9, 11, 2)))
    lab = _jax_lab(rgb)
    np.testing.assert_allclose(gray, lab[..., :1], atol=2e-6)
    np.testing.assert_allclose(ab, lab[..., 1:], atol=2e-6)

  def test_elements_are_lab_of_the_sampled_frames(self):
    rng = np.random.default_rng(1)
    clips = [dt.random_clip(rng, n, 6, 7) for n in (5, 8)]
    source = data_sources.ArraySource(clips)
    spec = ip.WindowSpec(num_frames=3, hflip=False, rot90=False)
    for e in _take(ip.make_train_dataset(source, source.index(), spec, seed=0, num_epochs=1)):
      lab = _jax_lab(clips[e["clip_id"]][e["frame_ids"]])
      np.testing.assert_allclose(e["gray"], lab[..., :1], atol=2e-6)
      np.testing.assert_allclose(e["ab"], lab[..., 1:], atol=2e-6)


class SamplingTest(absltest.TestCase):

  def test_one_key_per_frame_per_epoch(self):
    lengths = (5, 9, 4)
    source, index, _ = dt.marked_source(lengths)
    spec = ip.WindowSpec(num_frames=4)
    elements = _take(ip.make_train_dataset(source, index, spec, seed=1, num_epochs=1))
    np.testing.assert_array_equal(sorted(e["key"] for e in elements), np.arange(sum(lengths)))
    counts = np.bincount([e["clip_id"] for e in elements])
    np.testing.assert_array_equal(counts, lengths)  # clips drawn in proportion to length

  def test_windows_strides_and_reversal(self):
    lengths = (4, 7, 15)
    source, index, _ = dt.marked_source(lengths)
    spec = ip.WindowSpec(num_frames=4, interval_list=(1, 2, 3, 9), random_reverse=True)
    elements = _take(ip.make_train_dataset(source, index, spec, seed=2, num_epochs=4))
    offsets = index.offsets
    seen_strides, reversed_count, starts_at_key = set(), 0, []
    for e in elements:
      ids, length = e["frame_ids"], lengths[e["clip_id"]]
      self.assertTrue(np.all((ids >= 0) & (ids < length)), ids)
      steps = np.diff(ids)
      self.assertLen(set(steps), 1)
      stride = abs(int(steps[0]))
      self.assertIn(stride, (1, 2, 3))  # 9 never fits
      self.assertLessEqual(3 * stride, length - 1)
      seen_strides.add(stride)
      reversed_count += steps[0] < 0
      first = ids.min()
      key_frame = e["key"] % offsets[-1] - offsets[e["clip_id"]]
      if key_frame + 3 * stride < length:
        starts_at_key.append(first == key_frame)
    self.assertEqual(seen_strides, {1, 2, 3})
    self.assertBetween(reversed_count / len(elements), 0.35, 0.65)
    self.assertTrue(all(starts_at_key))

  def test_reproduce_original_sampling_reads_the_first_frames(self):
    source, index, clips = dt.marked_source((6, 10))
    spec = ip.WindowSpec(num_frames=5, interval_list=(1, 2), random_reverse=True,
                         hflip=False, rot90=False, reproduce_original_sampling=True)
    ds = ip.make_train_dataset(source, index, spec, seed=3, num_epochs=2, output="rgb")
    for e in _take(ds):
      np.testing.assert_array_equal(e["frame_ids"], np.arange(5))
      np.testing.assert_array_equal(e["rgb"], clips[e["clip_id"]][:5])
    fixed = ip.WindowSpec(num_frames=5, interval_list=(1, 2), hflip=False, rot90=False)
    starts = {int(e["frame_ids"][0]) for e in _take(ip.make_train_dataset(
        source, index, fixed, seed=3, num_epochs=2))}
    self.assertGreater(len(starts), 3)

  def test_same_seed_same_batches(self):
    source, index, _ = dt.marked_source((6, 9, 7), height=16, width=16)
    spec = ip.WindowSpec(num_frames=3, crop_size=(8, 8), interval_list=(1, 2),
                         random_reverse=True)

    def batches(seed):
      it = iter(ip.to_batches(ip.make_train_dataset(source, index, spec, seed=seed), 4))
      return [next(it) for _ in range(5)]

    a, b, c = batches(7), batches(7), batches(8)
    for x, y in zip(a, b, strict=True):
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])
    self.assertFalse(all(np.array_equal(x["gray"], y["gray"]) for x, y in zip(a, c, strict=True)))
    self.assertEqual(a[0]["gray"].shape, (4, 3, 8, 8, 1))
    self.assertEqual(a[0]["ab"].shape, (4, 3, 8, 8, 2))


class AugmentTest(absltest.TestCase):

  def test_one_crop_and_flip_for_all_frames(self):
    source, index, clips = dt.marked_source((6, 8), height=12, width=12, seed=4)
    spec = ip.WindowSpec(num_frames=4, crop_size=(6, 6), interval_list=(1, 2),
                         random_reverse=True)
    ds = ip.make_train_dataset(source, index, spec, seed=5, num_epochs=6, output="rgb")
    used = {}
    for e in _take(ds):
      out, ids = e["rgb"], e["frame_ids"].astype(np.int64)
      # Frame t of the source is frame 0 plus t: equal transforms keep that offset exactly.
      for t in range(1, 4):
        np.testing.assert_array_equal(out[t] - out[0], np.uint8((ids[t] - ids[0]) % 256))
      frame = clips[e["clip_id"]][ids[0]]
      matches = [(name, top, left)
                 for name, op in {**ALLOWED_OPS, **OTHER_OPS}.items()
                 for top in range(7) for left in range(7)
                 if np.array_equal(op(frame[top:top + 6, left:left + 6]), out[0])]
      self.assertLen(matches, 1)
      used[matches[0][0]] = used.get(matches[0][0], 0) + 1
    self.assertEqual(set(used), set(ALLOWED_OPS), used)

  def test_rot90_needs_square_crops(self):
    with self.assertRaisesRegex(ValueError, "square"):
      ip.WindowSpec(num_frames=3, crop_size=(4, 6))


class ShardingTest(absltest.TestCase):

  def test_two_processes_disjoint_and_covering(self):
    source, index, _ = dt.marked_source((5, 7, 4, 6), height=10, width=10)
    spec = ip.WindowSpec(num_frames=3, crop_size=(6, 6), random_reverse=True)
    make = lambda p, n: ip.make_train_dataset(source, index, spec, seed=9, num_epochs=1,
                                              process_index=p, process_count=n, output="rgb")
    single, first, second = make(0, 1), make(0, 2), make(1, 2)
    keys = [{int(e["key"]) for e in _take(ds)} for ds in (first, second)]
    self.assertEqual(len(keys[0]) + len(keys[1]), sum((5, 7, 4, 6)))
    self.assertEmpty(keys[0] & keys[1])
    self.assertEqual(keys[0] | keys[1], set(range(22)))
    # Each process sees exactly its share of the single-process stream.
    for p, ds in enumerate((first, second)):
      for i in range(len(ds)):
        np.testing.assert_array_equal(ds[i]["rgb"], single[2 * i + p]["rgb"])


class ResumeTest(absltest.TestCase):

  def test_resume_from_an_orbax_checkpoint_in_a_fresh_process(self):
    tfds.disable_progress_bar()
    data_dir, ckpt_dir = dt.tempdir(self), dt.tempdir(self)
    data_building.build("synthetic_clips", data_dir, config="tiny")
    it = iter(resume_pipeline(data_dir))
    for _ in range(4):  # mid-epoch: 48 keys, 12 consumed
      next(it)
    with ocp.CheckpointManager(ckpt_dir) as mngr:
      mngr.save(4, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
      mngr.wait_until_finished()
    expected = [next(it) for _ in range(3)]
    out = os.path.join(ckpt_dir, "resumed.npz")
    child = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {TESTS_DIR!r})
        import grain, numpy as np, orbax.checkpoint as ocp
        import input_pipeline_test as t
        it = iter(t.resume_pipeline({data_dir!r}))
        with ocp.CheckpointManager({ckpt_dir!r}) as mngr:
          mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
              data_iter=grain.checkpoint.CheckpointRestore(it)))
        batches = [next(it) for _ in range(3)]
        np.savez({out!r}, **{{f"{{i}}/{{k}}": v for i, b in enumerate(batches)
                            for k, v in b.items()}})
        """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          check=False, timeout=120)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    got = np.load(out)
    for i, batch in enumerate(expected):
      for k, v in batch.items():
        np.testing.assert_array_equal(got[f"{i}/{k}"], v, err_msg=f"batch {i} {k}")

  def test_workers_give_the_same_batches_and_resume(self):
    source, index, _ = dt.marked_source((6, 9, 7, 5), height=10, width=10)
    spec = ip.WindowSpec(num_frames=3, crop_size=(6, 6), random_reverse=True)
    ds = ip.make_train_dataset(source, index, spec, seed=12)
    plain = iter(ip.to_batches(ds, 2))
    expected = [next(plain) for _ in range(6)]
    workers = iter(ip.to_batches(ds, 2, num_workers=2, read_threads=1))
    self.addCleanup(workers.close)
    got = [next(workers) for _ in range(3)]
    state = workers.get_state()
    got += [next(workers) for _ in range(3)]
    for x, y in zip(expected, got, strict=True):
      np.testing.assert_array_equal(x["gray"], y["gray"])
    again = iter(ip.to_batches(ds, 2, num_workers=2, read_threads=1))
    self.addCleanup(again.close)
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["key"], expected[3]["key"])


class GetDatasetsTest(absltest.TestCase):

  def test_from_a_config_block(self):
    tfds.disable_progress_bar()
    config = {"name": "synthetic_clips", "config": "tiny", "data_dir": dt.tempdir(self),
              "crop_size": 16, "interval_list": (1, 2), "eval_batch_size": 2}
    train, evaluation = ip.get_datasets(config, num_frames=3, global_batch_size=4, seed=0,
                                        process_index=1, process_count=2)
    batch = next(iter(train))
    self.assertEqual((batch["gray"].shape, batch["ab"].shape),
                     ((2, 3, 16, 16, 1), (2, 3, 16, 16, 2)))
    batches = list(evaluation)
    self.assertLen(batches, 1)  # 2 validation clips over 2 processes, padded to batch 2
    self.assertEqual(batches[0]["gray"].shape, (2, 8, 32, 32, 1))
    np.testing.assert_array_equal(batches[0]["mask"], [True, False])
    one = dict(global_batch_size=4, seed=0, process_index=0, process_count=1, num_frames=3)
    for off in (None, "None", ""):  # ("None" is what --config.data.eval_split=None gives)
      _, none = ip.get_datasets({**config, "eval_split": off}, **one)
      self.assertIsNone(none)
    # A split name that the dataset lacks is a mistake (a typo), not "no evaluation". (Datasets
    # without the configs' usual "validation" / "test" train without evaluation, with a warning.)
    with self.assertRaisesRegex(ip.DataError, "has no split 'valdation' .*its splits: .*"
                                "validation.*; did you mean 'validation'"):
      ip.get_datasets({**config, "eval_split": "valdation"}, **one)
    # The validation clips' sizes are checked before any training (train.py: the model's size
    # multiple where they run at their own size).
    from tcvc_jax.training import train_config  # pylint: disable=g-import-not-at-top
    train = train_testlib.tiny_config(eval_every_steps=10)
    train.eval.network_size, train.flow.type = None, "flownet2"  # multiples of 64
    check = train_config.eval_size_check(train)
    with self.assertRaisesRegex(ValueError, r"validation clip '.*' is 32x32: the flownet2 flow "
                                "needs positive multiples of 64; set eval.network_size"):
      ip.get_datasets({**config, "eval_size_check": check}, **one)
    train.eval.network_size = (64, 64)
    self.assertIsNone(train_config.eval_size_check(train))
    # A slice of a split is that split's first clips.
    _, first = ip.get_datasets({**config, "eval_split": "validation[:1]"}, **one)
    batches = list(first)
    self.assertLen(batches, 1)
    np.testing.assert_array_equal(batches[0]["mask"], [True, False])
    with self.assertRaisesRegex(ValueError, "not divisible"):
      ip.get_datasets(config, num_frames=3, global_batch_size=3, seed=0, process_index=0,
                      process_count=2)


class BadDataTest(absltest.TestCase):

  def test_short_and_small_clips_are_skipped_and_reported(self):
    source, index, _ = dt.marked_source((2, 9, 3, 6), height=10, width=10)
    index = data_sources.ClipIndex.from_lists(index.names, index.num_frames,
                                              [10, 10, 10, 5], [10, 10, 10, 10])
    kept, skipped = data_sources.select_clips(index, min_frames=4, min_height=8, min_width=8)
    self.assertEqual(kept.names, ("clip00001",))
    self.assertEqual([n for n, _ in skipped], ["clip00000", "clip00002", "clip00003"])
    self.assertIn("2 frames, shorter than the 4 needed", skipped[0][1])
    self.assertIn("5x10, smaller than 8x8", skipped[2][1])
    spec = ip.WindowSpec(num_frames=4, crop_size=(8, 8))
    with self.assertLogs(level="WARNING") as logs:
      ds = ip.make_train_dataset(source, index, spec, seed=0, num_epochs=1)
    self.assertIn("skipped 3 of 4 clips", "\n".join(logs.output))
    self.assertEqual({int(e["clip_id"]) for e in _take(ds)}, {1})  # only the kept clip

  def test_nothing_left_is_an_error(self):
    source, index, _ = dt.marked_source((2, 3))
    with self.assertRaisesRegex(ip.DataError, "no usable clip among 2"):
      ip.make_train_dataset(source, index, ip.WindowSpec(num_frames=4), seed=0)
    # Each distinct reason is given, not only the first clip's.
    with self.assertRaisesRegex(ip.DataError, "2 skipped: 2 frames, shorter than the 4 needed; "
                                "3 frames, shorter than the 4 needed"):
      ip.make_train_dataset(source, index, ip.WindowSpec(num_frames=4), seed=0)
    empty = data_sources.ArraySource([])
    with self.assertRaisesRegex(ip.DataError, "no usable clip among 0"):
      ip.make_train_dataset(empty, empty.index(), ip.WindowSpec(num_frames=2), seed=0)
    with self.assertRaisesRegex(ip.DataError, "no usable clip among 0"):
      eval_pipeline.make_eval_dataset(empty, empty.index(), batch_size=1)

  def test_mixed_frame_sizes(self):
    frames = [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)]
    with self.assertRaisesRegex(ip.DataError, r"clip 'bad': frame 1 has size \(4, 5\)"):
      data_sources.ArraySource([frames], names=["bad"])
    source = data_sources.ArraySource([np.zeros((3, 4, 4, 3), np.uint8),
                                       np.zeros((3, 5, 5, 3), np.uint8)])
    # The message names a clip of each size.
    with self.assertRaisesRegex(ip.DataError, r"different frame sizes \('clip00000' 4x4, "
                                r"'clip00001' 5x5\); set a crop_size"):
      ip.make_train_dataset(source, source.index(), ip.WindowSpec(num_frames=2), seed=0)

  def test_stale_index_is_detected(self):
    source, index, _ = dt.marked_source((4, 4))
    stale = data_sources.ClipIndex.from_lists(["clip00001", "clip00000"], index.num_frames,
                                              index.heights, index.widths)
    ds = ip.make_train_dataset(source, stale, ip.WindowSpec(num_frames=2), seed=0)
    with self.assertRaisesRegex(
        ip.DataError, "holds clip 'clip0000.'.*metadata is stale: remove the dataset's folder"):
      ds[0]  # pylint: disable=pointless-statement


class SettingsTest(absltest.TestCase):

  def test_window_spec_mistakes_name_the_key(self):
    for kwargs, key in (({"interval_list": ()}, "interval_list"),
                        ({"interval_list": (0,)}, "interval_list"),
                        ({"interval_list": (None,)}, "interval_list"),
                        ({"crop_size": (0, 8)}, "crop_size"),
                        ({"num_frames": 0}, "num_frames")):
      with self.assertRaisesRegex(ValueError, f"^{key} must be .*got", msg=kwargs):
        ip.WindowSpec(**{"num_frames": 3, **kwargs})
    with self.assertRaisesRegex(ValueError, "^rot90 needs a square crop_size, got 8x6"):
      ip.WindowSpec(num_frames=3, crop_size=(8, 6))

  def test_crop_size_forms(self):
    self.assertEqual(ip.crop_hw(32), (32, 32))
    self.assertEqual(ip.crop_hw((32, 40)), (32, 40))
    self.assertEqual(ip.crop_hw([32, 40]), (32, 40))  # as config.json stores it
    self.assertIsNone(ip.crop_hw(None))
    for bad in ("bogus", 0, -4, True, (32,), (32, 40, 3), (32.0, 40)):
      with self.assertRaisesRegex(ValueError, "^crop_size must be", msg=repr(bad)):
        ip.crop_hw(bad)
    spec = ip.window_spec({"crop_size": [16, 8], "rot90": False, "interval_list": [1, 2]}, 4)
    self.assertEqual((spec.crop_size, spec.interval_list, spec.num_frames), ((16, 8), (1, 2), 4))
    self.assertIsNone(ip.window_spec({"crop_size": None}, 3).crop_size)

  def test_hint_settings_name_the_key(self):
    for field, value in (("max_patch", 0), ("dense_max_holes", -1), ("none_fraction", 2),
                         ("points_p", 0), ("location", "bogus")):
      block = {"enabled": True, field: value}
      with self.assertRaisesRegex(ValueError, f"^simulated_hints.{field} must be"):
        ip.hint_spec({"simulated_hints": block})
      self.assertIsNone(ip.hint_spec({"simulated_hints": {**block, "enabled": False}}))

  def test_rectangular_crops_and_whole_frames(self):
    source, index, _ = dt.marked_source((5, 6), height=10, width=12)
    spec = ip.WindowSpec(num_frames=3, crop_size=(8, 4), rot90=False)
    for e in _take(ip.make_train_dataset(source, index, spec, seed=0, num_epochs=1)):
      self.assertEqual(e["gray"].shape, (3, 8, 4, 1))
    whole = ip.WindowSpec(num_frames=3, rot90=False)
    for e in _take(ip.make_train_dataset(source, index, whole, seed=0, num_epochs=1)):
      self.assertEqual(e["gray"].shape, (3, 10, 12, 1))
    # Rotating a 10x12 window gives 12x10 ones: batches of mixed shapes.
    with self.assertRaisesRegex(ip.DataError, "rot90 on whole frames needs square frames.*10x12"):
      ip.make_train_dataset(source, index, ip.WindowSpec(num_frames=3), seed=0)

  def test_settings_are_checked_before_the_dataset_is_built(self):
    data_dir = dt.tempdir(self)
    config = {"name": "synthetic_clips", "config": "tiny", "data_dir": data_dir}
    for bad in ({"interval_list": ()}, {"crop_size": "bogus"},
                {"simulated_hints": {"enabled": True, "max_patch": 0}}):
      with self.assertRaises(ValueError, msg=bad):
        ip.get_datasets({**config, **bad}, num_frames=3, global_batch_size=2, seed=0,
                        process_index=0, process_count=1)
    self.assertEqual(os.listdir(data_dir), [])


if __name__ == "__main__":
  absltest.main()
