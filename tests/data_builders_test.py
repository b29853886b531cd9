"""Builds the data/ TFDS builders (ArrayRecord, no TensorFlow) on tiny fixtures and reads back."""

import os
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow_datasets as tfds

from tcvc_jax.data import datasets
from tcvc_jax.data import sources as data_sources
from tcvc_jax.data import synthetic
from tcvc_jax.media import reading
from tcvc_jax.media import resizing

import data_testlib as dt


def setUpModule():
  tfds.disable_progress_bar()


def _read_all(source):
  return [source[i] for i in range(len(source))]


class SyntheticClipsTest(absltest.TestCase):

  def test_build_and_read_back(self):
    data_dir = dt.tempdir(self)
    builder = data_sources.build("synthetic_clips", data_dir, config="tiny")
    self.assertNotIn("tensorflow", sys.modules)
    c = builder.builder_config
    self.assertEqual({s: builder.info.splits[s].num_examples for s in builder.info.splits},
                     {"train": c.num_train, "validation": c.num_validation, "test": c.num_test})
    self.assertTrue(any(f.endswith("array_record-00000-of-00001") for f in os.listdir(
        builder.data_dir)))
    for split, split_id in (("train", 0), ("test", 2)):
      source, index = data_sources.open_split("synthetic_clips", split, data_dir, config="tiny")
      elements = _read_all(source)
      self.assertEqual(list(index.names), [e["clip"].decode() for e in elements])
      for i, element in enumerate(elements):
        expected = synthetic.generate_clip((c.seed, split_id, i), height=c.height,
                                           width=c.width, num_frames=c.num_frames)
        np.testing.assert_array_equal(element["frames"], expected.frames)
        self.assertEqual(element["frame_names"][-1], f"{c.num_frames - 1:05d}".encode())
      np.testing.assert_array_equal(index.num_frames, c.num_frames)
      np.testing.assert_array_equal(index.heights, c.height)

  def test_painted_config_holds_painted_clips(self):
    # The demo's set: the generator's clips with paint; some differ from the unpainted ones.
    data_dir = dt.tempdir(self)
    builder = data_sources.build("synthetic_clips", data_dir, config="painted")
    c = builder.builder_config
    self.assertGreater(c.paint_probability, 0)
    source, _ = data_sources.open_split("synthetic_clips", "test", data_dir, config="painted")
    changed = 0
    for i, element in enumerate(_read_all(source)):
      args = dict(height=c.height, width=c.width, num_frames=c.num_frames)
      painted = synthetic.generate_clip((c.seed, 2, i), paint_probability=c.paint_probability,
                                        **args)
      np.testing.assert_array_equal(element["frames"], painted.frames)
      changed += not np.array_equal(painted.frames,
                                    synthetic.generate_clip((c.seed, 2, i), **args).frames)
    self.assertGreaterEqual(changed, c.num_test // 2)

  def test_index_of_a_slice_is_read_from_the_clips(self):
    data_dir = dt.tempdir(self)
    data_sources.build("synthetic_clips", data_dir, config="tiny")
    source, index = data_sources.open_split("synthetic_clips", "train[2:4]", data_dir,
                                            config="tiny")
    self.assertEqual(index.names, ("synthetic-train-00002", "synthetic-train-00003"))
    self.assertLen(source, 2)


  def test_building_leaves_nothing_in_the_temporary_folder(self):
    # TFDS made an empty /tmp/tmp*tfds folder per builder of an unprepared dataset, never removed.
    data_dir = dt.tempdir(self)
    tmp = dt.tempdir(self)
    with mock.patch.object(tempfile, "tempdir", tmp):
      data_sources.build("synthetic_clips", data_dir, config="tiny")
      data_sources.open_split("synthetic_clips", "train", data_dir, config="tiny")
    self.assertEqual(os.listdir(tmp), [])


class VideoFramesTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = dt.tempdir(self)
    self.data_dir = dt.tempdir(self)
    self.rng = np.random.default_rng(3)

  def _clip(self, rel, n=4, size=(10, 12), ext=".png"):
    frames = dt.random_clip(self.rng, n, *size)
    paths = dt.write_frames(os.path.join(self.root, rel), frames, ext)
    return frames, paths

  def _build(self, config="folder"):
    return data_sources.build("video_frames", self.data_dir, config=config,
                              manual_dir=self.root)

  def test_generic_layout_with_bad_clips(self):
    good, _ = self._clip("good")
    video = dt.random_clip(self.rng, 3, 10, 12)
    dt.write_video(os.path.join(self.root, "movie.mkv"), video)
    _, corrupt_paths = self._clip("corrupt")
    with open(corrupt_paths[2], "wb") as f:
      f.write(b"not a png")
    self._clip("short", n=1)
    self._clip("mixed", n=2)
    odd = dt.write_frames(os.path.join(self.root, "mixed"), dt.random_clip(self.rng, 1, 11, 12),
                          names=["00009"])[0]
    os.makedirs(os.path.join(self.root, "nothing"))
    builder = self._build()
    source, index = data_sources.open_split("video_frames", "train", self.data_dir,
                                            config="folder")
    self.assertEqual(index.names, ("good", "movie"))
    elements = _read_all(source)
    np.testing.assert_array_equal(elements[0]["frames"], good)
    np.testing.assert_array_equal(elements[1]["frames"], video)
    self.assertEqual([n.decode() for n in elements[0]["frame_names"]],
                     ["00000", "00001", "00002", "00003"])
    skipped = dict(builder.info.metadata["skipped"]["train"])
    self.assertEqual(sorted(skipped), ["corrupt", "mixed", "nothing", "short"])
    self.assertIn(corrupt_paths[2], skipped["corrupt"])
    self.assertIn(odd, skipped["mixed"])
    self.assertIn("min_frames=2", skipped["short"])

  def test_davis_layout_with_list_files_and_resize(self):
    a, _ = self._clip("JPEGImages/480p/bear", ext=".jpg", size=(16, 24))
    b, _ = self._clip("JPEGImages/480p/boat", n=3, ext=".jpg", size=(16, 24))
    self._clip("JPEGImages/480p/unlisted")
    os.makedirs(os.path.join(self.root, "splits"))
    for split, names in (("train", "bear\nghost\n"), ("test", "boat\n")):
      with open(os.path.join(self.root, "splits", f"{split}.txt"), "w") as f:
        f.write(names)
    module = datasets
    config = module.VideoFramesConfig(name="tiny_resized", resize=(8, 12),
                                      resize_splits=("train",))
    builder = self._build(config)
    self.assertEqual(set(builder.info.splits), {"train", "test"})
    source, index = data_sources.open_split("video_frames", "train", self.data_dir,
                                            config="tiny_resized")
    self.assertEqual(index.names, ("bear",))
    frames = source[0]["frames"]
    self.assertEqual(frames.shape, (4, 8, 12, 3))
    jpeg = np.stack([reading.read_image(os.path.join(self.root, "JPEGImages/480p/bear",
                                                     f"{t:05d}.jpg")) for t in range(4)])
    np.testing.assert_array_equal(frames, resizing.resize_bilinear(jpeg, 8, 12))
    self.assertLessEqual(np.abs(jpeg.astype(int) - a).mean(), 8)  # lossy JPEG round trip
    self.assertIn("ghost", dict(builder.info.metadata["skipped"]["train"])["ghost"])
    source, index = data_sources.open_split("video_frames", "test", self.data_dir,
                                            config="tiny_resized")
    self.assertEqual((index.names, source[0]["frames"].shape), (("boat",), b.shape))

  def test_embedded_lists_are_the_original_ones(self):
    lists = os.path.join(os.path.dirname(datasets.__file__), "lists")
    counts = {f: len(data_sources.read_list_file(os.path.join(lists, f)))
              for f in ("DAVIS_train.txt", "DAVIS_test.txt", "videvo_train.txt")}
    self.assertEqual(counts, {"DAVIS_train.txt": 60, "DAVIS_test.txt": 30,
                              "videvo_train.txt": 80})
    self._clip("JPEGImages/480p/blackswan", ext=".jpg")  # one of the 30 DAVIS test clips
    self._clip("JPEGImages/480p/bear", ext=".jpg")  # one of the 60 DAVIS train clips
    builder = self._build("davis")
    self.assertEqual({s: builder.info.splits[s].num_examples for s in builder.info.splits},
                     {"train": 1, "test": 1})
    self.assertLen(builder.info.metadata["skipped"]["train"], 59)
    _, index = data_sources.open_split("video_frames", "train", self.data_dir, config="davis")
    self.assertEqual((index.heights[0], index.widths[0]), (300, 300))

  def test_split_folders(self):
    self._clip("train/a")
    self._clip("val/b")
    builder = self._build()
    self.assertEqual(set(builder.info.splits), {"train", "validation"})

  def test_nothing_usable_is_an_error(self):
    _, paths = self._clip("only")
    with open(paths[0], "wb") as f:
      f.write(b"")
    with self.assertRaisesRegex(data_sources.DataError,
                                f"no usable clip.*empty image file {paths[0]}"):
      self._build()

  def test_missing_or_empty_manual_dir(self):
    self.root = os.path.join(self.root, "absent")
    with self.assertRaisesRegex(Exception, "absent"):
      self._build()
    os.makedirs(os.path.join(self.root, "stuff"))
    with self.assertRaisesRegex(data_sources.DataError, "no image frames"):
      self._build()


if __name__ == "__main__":
  absltest.main()
