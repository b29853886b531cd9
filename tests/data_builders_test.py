"""Builds the data/ TFDS builders (ArrayRecord, no TensorFlow) on tiny fixtures and reads back."""

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import types
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow_datasets as tfds

from tcvc_jax import atomic
from tcvc_jax.data import building as data_building
from tcvc_jax.data import datasets
from tcvc_jax.data import eval_pipeline
from tcvc_jax.data import input_pipeline
from tcvc_jax.data import layout as data_layout
from tcvc_jax.data import raw_records
from tcvc_jax.data import sources as data_sources
from tcvc_jax.data import synthetic
from tcvc_jax.evaluation import clips as eval_clips
from tcvc_jax.media import reading
from tcvc_jax.media import resizing

import data_testlib as dt


def setUpModule():
  tfds.disable_progress_bar()


def _read_all(source):
  return [source[i] for i in range(len(source))]


def _tree(folder):
  """Every path under `folder` (relative), with a file's content: what a build must not change."""
  out = {}
  for top, dirs, files in os.walk(folder):
    out.update({os.path.relpath(os.path.join(top, d), folder): None for d in dirs})
    for name in files:
      with open(os.path.join(top, name), "rb") as f:
        out[os.path.relpath(os.path.join(top, name), folder)] = f.read()
  return out


class SyntheticClipsTest(absltest.TestCase):

  def test_build_and_read_back(self):
    data_dir = dt.tempdir(self)
    builder = data_building.build("synthetic_clips", data_dir, config="tiny")
    self.assertNotIn("tensorflow", sys.modules)
    c = builder.builder_config
    self.assertEqual({s: builder.info.splits[s].num_examples for s in builder.info.splits},
                     {"train": c.num_train, "validation": c.num_validation, "test": c.num_test})
    self.assertTrue(any(f.endswith("array_record-00000-of-00001") for f in os.listdir(
        builder.data_dir)))
    for split, split_id in (("train", 0), ("test", 2)):
      source, index = data_building.open_split("synthetic_clips", split, data_dir, config="tiny")
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
    builder = data_building.build("synthetic_clips", data_dir, config="painted")
    c = builder.builder_config
    self.assertGreater(c.paint_probability, 0)
    source, _ = data_building.open_split("synthetic_clips", "test", data_dir, config="painted")
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
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      data_building.build("synthetic_clips", data_dir, config="tiny")
    # What the build says: no "Downloading and preparing dataset Unknown size" (TFDS's words).
    said = out.getvalue()
    self.assertIn("Building dataset synthetic_clips/tiny", said)
    self.assertIn("nothing is downloaded", said)
    self.assertNotIn("Downloading", said)
    source, index = data_building.open_split("synthetic_clips", "train[2:4]", data_dir,
                                             config="tiny")
    self.assertEqual(index.names, ("synthetic-train-00002", "synthetic-train-00003"))
    self.assertLen(source, 2)


  def test_building_leaves_nothing_in_the_temporary_folder(self):
    # TFDS made an empty /tmp/tmp*tfds folder per builder of an unprepared dataset, never removed.
    data_dir = dt.tempdir(self)
    tmp = dt.tempdir(self)
    with mock.patch.object(tempfile, "tempdir", tmp):
      data_building.build("synthetic_clips", data_dir, config="tiny")
      data_building.open_split("synthetic_clips", "train", data_dir, config="tiny")
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
    return data_building.build("video_frames", self.data_dir, config=config,
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
    gray = dt.random_clip(self.rng, 2, 10, 12)[..., :1]
    dt.write_frames(os.path.join(self.root, "old_film"), np.repeat(gray, 3, -1))  # R = G = B
    with self.assertLogs(level="WARNING") as logs:
      builder = self._build()
    self.assertIn("video_frames[train]: 1 clip without colour (gray, R = G = B), whose "
                  "reconstruction loss teaches gray: old_film", "\n".join(logs.output))
    source, index = data_building.open_split("video_frames", "train", self.data_dir,
                                             config="folder")
    self.assertEqual(index.names, ("good", "movie", "old_film"))  # kept: SRL needs no colour
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
    with self.assertLogs(level="WARNING") as logs:  # reused: its skipped clips are told again
      self._build()
    self.assertIn("video_frames/folder: 4 clip(s) were skipped when it was built: corrupt (",
                  "\n".join(logs.output))

  def test_a_long_clip_takes_several_records_and_a_window_reads_its_own(self):
    # A whole clip per record failed for a 16-second 1080p video (a 2.5 GB protobuf message), and
    # every window decompressed its clip's whole record.
    long, _ = self._clip("long", n=10)
    short, _ = self._clip("short", n=2)
    video = dt.random_clip(self.rng, 5, 10, 12)
    dt.write_video(os.path.join(self.root, "movie.mkv"), video)
    with mock.patch.object(datasets, "RECORD_BYTES", 3 * long[0].nbytes + 7):  # 3 per record
      builder = self._build()
    source, index = data_building.open_split("video_frames", "train", self.data_dir,
                                             config="folder")
    self.assertEqual(index.names, ("long", "movie", "short"))
    self.assertLen(source, 4 + 2 + 1)
    self.assertEqual(builder.info.splits["train"].num_examples, 7)
    np.testing.assert_array_equal(index.records, [0, 4, 6])
    np.testing.assert_array_equal(index.chunk_frames, [3, 3, 2])  # one record: its length
    self.assertEqual([len(source[r]["frames"]) for r in range(7)], [3, 3, 3, 1, 3, 2, 2])
    self.assertEqual([n.decode() for n in source[3]["frame_names"]], ["00009"])
    clips = {"long": long, "movie": video, "short": short}
    for c, name in enumerate(index.names):
      n = len(clips[name])
      for start in range(n):
        for stop in range(start + 1, n + 1):
          np.testing.assert_array_equal(
              raw_records.clip_frames(source, index, c, start, stop), clips[name][start:stop])
    # The index a slice's reading gives (no metadata) finds the same clips.
    scanned = data_sources.scan_index(source)
    for field in ("num_frames", "records", "chunk_frames"):
      np.testing.assert_array_equal(getattr(scanned, field), getattr(index, field), field)
    self.assertEqual(scanned.names, index.names)
    # Training windows and evaluation chunks are those of the clips held whole.
    whole = data_sources.ArraySource([clips[n] for n in index.names], list(index.names))
    spec = input_pipeline.WindowSpec(num_frames=4, crop_size=(8, 8), interval_list=(1, 2))
    windows = [input_pipeline.make_train_dataset(s, s_index, spec, seed=5, num_epochs=1)
               for s, s_index in ((source, index), (whole, whole.index()))]
    got, want = list(windows[0]), list(windows[1])
    self.assertLen(got, len(want))
    for a, b in zip(got, want, strict=True):
      np.testing.assert_array_equal(a["frame_ids"], b["frame_ids"])
      np.testing.assert_array_equal(a["gray"], b["gray"])
      np.testing.assert_array_equal(a["ab"], b["ab"])
    chunks = [list(eval_pipeline.make_eval_dataset(s, s_index, batch_size=1, max_frames=4))
              for s, s_index in ((source, index), (whole, whole.index()))]
    self.assertLen(chunks[0], len(chunks[1]))
    for a, b in zip(*chunks, strict=True):
      np.testing.assert_array_equal(a["rgb"], b["rgb"])
      self.assertEqual((a["start"], a["num_frames"]), (b["start"], b["num_frames"]))
    # eval.py's clips of the split: whole, one per clip.
    data = types.SimpleNamespace(source="tfds", name="video_frames", config="folder",
                                 data_dir=self.data_dir, manual_dir=self.root, split="train",
                                 clips="long,short", no_gt=False)
    read = eval_clips.iter_clips(data)
    self.assertLen(read, 2)
    self.assertEqual([(c.name, c.frames.tobytes()) for c in read],
                     [(n, clips[n].tobytes()) for n in ("long", "short")])

  def test_a_split_over_tfds_memory_buffer_builds_without_tensorflow_in_order(self):
    # TFDS writes a split over 1 GB to files through TensorFlow first ("No module named
    # 'tensorflow'" here), all of it to one file read back whole when the keys were 0, 1, ...
    from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
    clips = {name: self._clip(name, n=n)[0] for name, n in (("a", 7), ("b", 5), ("c", 4))}
    files = []
    real_bucket = shuffle._Bucket  # pylint: disable=protected-access

    def bucket(path):
      files.append(path)
      return real_bucket(path)

    with mock.patch.object(datasets, "RECORD_BYTES", 2 * clips["a"][0].nbytes), \
        mock.patch.object(shuffle, "MAX_MEM_BUFFER_SIZE", 1000), \
        mock.patch.object(shuffle, "_Bucket", bucket):
      self._build()
    self.assertNotIn("tensorflow", sys.modules)
    self.assertLen(files, shuffle.BUCKETS_NUMBER)  # (it spilled)
    source, index = data_building.open_split("video_frames", "train", self.data_dir,
                                             config="folder")
    self.assertLen(source, 4 + 3 + 2)
    for c, name in enumerate(index.names):
      np.testing.assert_array_equal(raw_records.clip_frames(source, index, c), clips[name])
    self.assertFalse(any(os.path.exists(f) for f in files))  # (read back and removed)

  def test_a_bad_frame_in_a_clip_too_long_to_hold_ends_it_there(self):
    frames, paths = self._clip("long", n=10)
    with open(paths[7], "wb") as f:
      f.write(b"not a png")
    per_record = 3 * frames[0].nbytes
    # Held whole (the default): a bad frame skips the clip, as any bad frame of a clip does.
    with mock.patch.object(datasets, "RECORD_BYTES", per_record):
      with self.assertRaisesRegex(data_sources.DataError, "no usable clip"):
        self._build()
    # Too long to hold (more than one record here): its records are written as it is read, and
    # it keeps the frames before the bad one.
    with mock.patch.object(datasets, "RECORD_BYTES", per_record), \
        mock.patch.object(datasets, "HOLD_BYTES", per_record):
      with self.assertLogs(level="WARNING") as logs:
        builder = self._build()
    self.assertIn("video_frames[train]: clip 'long' keeps its first 7 frames: ",
                  "\n".join(logs.output))
    source, index = data_building.open_split("video_frames", "train", self.data_dir,
                                             config="folder")
    np.testing.assert_array_equal(index.num_frames, [7])
    np.testing.assert_array_equal(raw_records.clip_frames(source, index, 0), frames[:7])
    (name, kept, why), = builder.info.metadata["cut_short"]["train"]
    self.assertEqual((name, kept), ("long", 7))
    self.assertIn(paths[7], why)

  def test_davis_layout_with_list_files_and_resize(self):
    a, _ = self._clip("JPEGImages/480p/bear", ext=".jpg", size=(16, 24))
    b, _ = self._clip("JPEGImages/480p/boat", n=3, ext=".jpg", size=(16, 24))
    self._clip("JPEGImages/480p/unlisted")
    os.makedirs(os.path.join(self.root, "splits"))
    self._clip("JPEGImages/480p/held_out")
    for split, names in (("train", "bear\nghost\n"), ("test", "boat\n"), ("val", "held_out\n")):
      with open(os.path.join(self.root, "splits", f"{split}.txt"), "w") as f:
        f.write(names)
    module = datasets
    config = module.VideoFramesConfig(name="tiny_resized", resize=(8, 12),
                                      resize_splits=("train",))
    with self.assertLogs(level="WARNING") as logs:  # what the lists leave out is told
      builder = self._build(config)
    self.assertIn("1 clip(s) under " + self.root + " are in no split list, so not in the dataset: "
                  "unlisted", "\n".join(logs.output))
    # val.txt is the validation split (train.py's), as a val/ split folder is.
    self.assertEqual(set(builder.info.splits), {"train", "test", "validation"})
    source, index = data_building.open_split("video_frames", "train", self.data_dir,
                                             config="tiny_resized")
    self.assertEqual(index.names, ("bear",))
    frames = source[0]["frames"]
    self.assertEqual(frames.shape, (4, 8, 12, 3))
    jpeg = np.stack([reading.read_image(os.path.join(self.root, "JPEGImages/480p/bear",
                                                     f"{t:05d}.jpg")) for t in range(4)])
    np.testing.assert_array_equal(frames, resizing.resize_bilinear(jpeg, 8, 12))
    self.assertLessEqual(np.abs(jpeg.astype(int) - a).mean(), 8)  # lossy JPEG round trip
    self.assertIn("ghost", dict(builder.info.metadata["skipped"]["train"])["ghost"])
    source, index = data_building.open_split("video_frames", "test", self.data_dir,
                                             config="tiny_resized")
    self.assertEqual((index.names, source[0]["frames"].shape), (("boat",), b.shape))

  def test_split_lists_naming_a_clip_twice_or_in_two_splits_are_told(self):
    for name in ("a", "b"):
      self._clip(name)
    os.makedirs(os.path.join(self.root, "splits"))
    for split, names in (("train", "a\nb\na\n"), ("test", "a\n")):
      with open(os.path.join(self.root, "splits", f"{split}.txt"), "w") as f:
        f.write(names)
    with self.assertLogs(level="WARNING") as logs:
      self._build()
    text = "\n".join(logs.output)
    self.assertIn("the train list names a more than once", text)
    self.assertIn("clips in more than one split: a (test, train)", text)  # (lists in name order)

  def test_embedded_lists_are_the_original_ones(self):
    lists = os.path.join(os.path.dirname(datasets.__file__), "lists")
    counts = {f: len(data_layout.read_list_file(os.path.join(lists, f)))
              for f in ("DAVIS_train.txt", "DAVIS_test.txt", "videvo_train.txt")}
    self.assertEqual(counts, {"DAVIS_train.txt": 60, "DAVIS_test.txt": 30,
                              "videvo_train.txt": 80})
    self._clip("JPEGImages/480p/blackswan", ext=".jpg")  # one of the 30 DAVIS test clips
    self._clip("JPEGImages/480p/bear", ext=".jpg")  # one of the 60 DAVIS train clips
    builder = self._build("davis")
    self.assertEqual({s: builder.info.splits[s].num_examples for s in builder.info.splits},
                     {"train": 1, "test": 1})
    self.assertLen(builder.info.metadata["skipped"]["train"], 59)
    _, index = data_building.open_split("video_frames", "train", self.data_dir, config="davis")
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

  def test_unknown_config_lists_the_configs(self):
    self._clip("a")
    configs = "its configs: folder, folder_300, davis, davis_videvo"
    with self.assertRaisesRegex(data_sources.DataError,
                                f"unknown config 'bogus' of dataset video_frames; {configs}"):
      self._build("bogus")
    with self.assertRaisesRegex(data_sources.DataError, f"'tiny' of .*video_frames; {configs}"):
      data_building.open_split("video_frames", "train", self.data_dir, config="tiny")
    self.assertEqual(os.listdir(self.data_dir), [])
    self._build()
    with self.assertRaisesRegex(data_sources.DataError, "video_frames/davis is not built in"):
      data_building.open_split("video_frames", "train", self.data_dir, config="davis")
    with self.assertRaisesRegex(data_sources.DataError, "has no split 'test'; its splits: train"):
      data_building.open_split("video_frames", "test", self.data_dir, config="folder")
    self.assertNotIn("davis", os.listdir(os.path.join(self.data_dir, "video_frames")))

  def test_a_dataset_without_an_evaluation_split_trains_without_evaluation(self):
    for name in ("a", "b"):
      self._clip(name)
    config = {"name": "video_frames", "config": "folder", "data_dir": self.data_dir,
              "manual_dir": self.root, "crop_size": 8, "eval_split": "test"}
    one = dict(num_frames=3, global_batch_size=1, seed=0, process_index=0, process_count=1)
    with self.assertLogs(level="WARNING") as logs:
      train, evaluation = input_pipeline.get_datasets(config, **one)
    self.assertIsNone(evaluation)
    self.assertIn("has no split 'test': no evaluation data (its splits: train", logs.output[-1])
    self.assertEqual(next(iter(train))["gray"].shape, (1, 3, 8, 8, 1))
    with self.assertRaisesRegex(data_sources.DataError, r"has no split 'trian\[:2\]' "
                                r"\(config.data.eval_split\); its splits: train; did you mean "
                                "'train'"):
      input_pipeline.get_datasets({**config, "eval_split": "trian[:2]"}, **one)

  def test_videos_in_a_sub_folder_are_named_as_not_read(self):
    self._clip("good")
    dt.write_video(os.path.join(self.root, "2023", "trip.mkv"), dt.random_clip(self.rng, 4, 8, 8))
    with self.assertLogs(level="WARNING") as logs:
      self._build()
    self.assertIn("its videos (trip.mkv) are not read: a video is a clip directly in the data "
                  "folder", "\n".join(logs.output))

  def test_a_clip_whose_name_is_not_utf8_is_skipped(self):
    """A folder named in another system's encoding (b'caf\xe9', Latin-1) stopped the whole build
    (UnicodeEncodeError serializing the clip's name): skipped and told, the other clips built."""
    self._clip("good")
    bad = os.path.join(os.fsencode(self.root), b"caf\xe9")
    shutil.copytree(os.path.join(self.root, "good"), os.fsdecode(bad))
    with self.assertLogs(level="WARNING") as logs:
      builder = self._build()
    self.assertEqual(self._names(), ("good",))
    self.assertIn("is not UTF-8 text (a name from another system's encoding?): rename it",
                  "\n".join(logs.output))
    self.assertEqual([n for n, _ in builder.info.metadata["skipped"]["train"]], ["caf\\udce9"])

  def test_two_clips_of_one_name_are_refused(self):
    # A video beside its extracted frames: one of them was dropped, silently.
    self._clip("take")
    dt.write_video(os.path.join(self.root, "take.mp4"), dt.random_clip(self.rng, 4, 16, 16),
                   codec="libx264")
    with self.assertRaisesRegex(data_sources.DataError,
                                "two clips are named take in .*: take and take.mp4; rename"):
      self._build()
    self.assertFalse(os.path.exists(os.path.join(self.data_dir, "video_frames")))

  def test_clips_named_like_splits(self):
    # A flat folder with a clip named `train` was read as split folders: "no clips found".
    for name in ("a", "b", "train"):
      self._clip(name)
    self._build()
    _, index = data_building.open_split("video_frames", "train", self.data_dir, config="folder")
    self.assertEqual(index.names, ("a", "b", "train"))

  def _names(self, config="folder"):
    return data_building.open_split("video_frames", "train", self.data_dir, config=config)[1].names

  def test_another_or_changed_manual_dir_rebuilds(self):
    self._clip("a")
    self._clip("b")
    first = self._build()
    self.assertEqual(first.info.metadata["source"]["manual_dir"], os.path.abspath(self.root))
    records = os.path.join(first.data_path, "video_frames-train.array_record-00000-of-00001")
    built = os.stat(records).st_mtime_ns
    os.symlink(self.root, self.root + ".link")
    with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as prepare:
      self._build()  # nothing changed: reused, not rebuilt
      data_building.build("video_frames", self.data_dir, config="folder")  # no folder given
      data_building.build("video_frames", self.data_dir, config="folder",  # the same, by a link
                          manual_dir=self.root + ".link")
    prepare.assert_not_called()
    self.assertEqual(os.stat(records).st_mtime_ns, built)
    self._clip("c")  # a clip added
    with self.assertLogs(level="WARNING") as logs:
      self._build()
    self.assertIn(f"the clips in {os.path.abspath(self.root)} changed since it was built (2 clips, "
                  "8 files then, 3 clips, 12 files now)", "\n".join(logs.output))
    self.assertEqual(self._names(), ("a", "b", "c"))
    old_root, self.root = self.root, dt.tempdir(self)  # another project's clips
    self._clip("x")
    with self.assertLogs(level="WARNING") as logs:
      self._build()
    self.assertIn(f"it was built from {os.path.abspath(old_root)}, not "
                  f"{os.path.abspath(self.root)}", "\n".join(logs.output))
    self.assertEqual(self._names(), ("x",))
    # A folder that does not exist: the error alone, no word of a rebuild, the dataset kept.
    with mock.patch.object(data_building.logging, "warning") as warning:
      with self.assertRaisesRegex(data_sources.DataError, "missing data directory"):
        data_building.build("video_frames", self.data_dir, config="folder",
                            manual_dir=self.root + ".typo")
    warning.assert_not_called()
    self.assertEqual(self._names(), ("x",))
    folder = os.path.dirname(self._build().data_path)
    self.assertEqual(os.listdir(folder), ["1.0.0"])  # the replaced dataset is gone
    os.rename(self.root, self.root + ".moved")  # the clips gone: the dataset built from them
    self.addCleanup(os.rename, self.root + ".moved", self.root)
    with self.assertLogs(level="WARNING") as logs:
      self._build()
    self.assertIn(f"the clip folder {os.path.abspath(self.root)} is gone; using the dataset",
                  "\n".join(logs.output))
    self.assertEqual(self._names(), ("x",))

  def test_a_dataset_that_records_no_source_is_rebuilt(self):
    self._clip("a")
    builder = self._build()
    path = os.path.join(builder.data_path, "metadata.json")
    with open(path) as f:
      metadata = json.load(f)
    del metadata["source"]  # as built before the source was recorded
    with open(path, "w") as f:
      json.dump(metadata, f)
    with self.assertLogs(level="WARNING") as logs:
      self._build()
    self.assertIn("does not record the folder it was built from", "\n".join(logs.output))
    self.assertIn("source", self._build().info.metadata)
    with open(path) as f:
      metadata = json.load(f)
    del metadata["source"]["rules"]  # as built by the first rules (splits/val.txt made 'val')
    with open(path, "w") as f:
      json.dump(metadata, f)
    with self.assertLogs(level="WARNING") as logs:
      self._build()
    self.assertIn("it was built by an earlier version's rules", "\n".join(logs.output))
    self.assertEqual(self._build().info.metadata["source"]["rules"], data_layout.BUILD_RULES)

  def test_a_failed_build_leaves_nothing(self):
    os.makedirs(os.path.join(self.root, "stuff"))  # a clip folder without frames
    with self.assertRaisesRegex(data_sources.DataError, "no image frames"):
      self._build()
    self.assertEqual(os.listdir(self.data_dir), [])
    self.data_dir = os.path.join(self.data_dir, "new", "tfds")
    with self.assertRaisesRegex(data_sources.DataError, "no image frames"):
      self._build()
    self.assertFalse(os.path.exists(os.path.dirname(self.data_dir)))
    with self.assertRaisesRegex(data_sources.DataError, "is not built in .*manual_dir"):
      data_building.build("video_frames", self.data_dir, config="folder")
    self.assertFalse(os.path.exists(os.path.dirname(self.data_dir)))

  def test_a_failed_rebuild_keeps_the_dataset_it_would_replace(self):
    _, paths = self._clip("a")
    self._build()
    before = _tree(self.data_dir)
    for path in paths:
      with open(path, "wb") as f:
        f.write(b"broken")
    with self.assertRaisesRegex(data_sources.DataError, "no usable clip"):
      self._build()
    self.assertEqual(_tree(self.data_dir), before)
    self.assertLen(_read_all(data_building.open_split("video_frames", "train", self.data_dir,
                                                      config="folder")[0]), 1)

  def _interrupt_build(self):
    """Builds, running `atomic.discard_all` (as the tools' Ctrl-C handler does) in the middle of
    it; returns the data dir's tree right after the discard."""
    seen, read = {}, data_layout.iter_clip

    def read_then_interrupt(clip, resize=None):
      if seen:
        atomic.discard_all()
        seen["after"] = _tree(self.data_dir)
        raise KeyboardInterrupt
      seen["during"] = _tree(self.data_dir)
      return read(clip, resize)

    with mock.patch.object(data_layout, "iter_clip", read_then_interrupt):
      with self.assertRaises(KeyboardInterrupt):
        self._build()
    self.assertTrue(any("incomplete" in p for p in seen["during"]), seen["during"])
    return seen["after"]

  def test_an_interrupted_build_leaves_what_was_there(self):
    self._clip("a")
    self._clip("b")
    self.assertEqual(self._interrupt_build(), {})
    self.assertEqual(_tree(self.data_dir), {})
    self._build()
    before = _tree(self.data_dir)
    self._clip("c")
    self.assertEqual(self._interrupt_build(), before)  # the rebuild's dataset back in place
    self.assertEqual(self._names(), ("a", "b"))

  def test_a_dataset_in_a_read_only_data_dir_is_not_rebuilt(self):
    """Clips changed, data dir read-only (a shared copy): one line saying so (it was OSError
    [Errno 30] after a 'rebuilding' warning); the dataset stays as it was."""
    self._clip("a")
    folder = os.path.dirname(self._build().data_path)
    before = _tree(folder)
    self._clip("b")
    read_only = OSError(30, "Read-only file system")
    with mock.patch.object(data_building.os, "rename", side_effect=read_only):
      with self.assertRaisesRegex(data_sources.DataError, re.escape(
          f"video_frames/folder in {self.data_dir} cannot be rebuilt (the clips in ") + ".*"
          + re.escape("): Read-only file system; give this run a data dir it can write")):
        self._build()
    self.assertEqual(_tree(folder), before)

  def test_a_build_killed_at_once_is_cleaned_up_by_the_next(self):
    """kill -9 or out of memory during a rebuild (nothing undone): the dataset it had set aside
    stayed hidden, and TFDS's incomplete folder stayed, build after build. The next build puts the
    dataset back (or removes the copy where a new one is in place) and removes the rest."""
    self._clip("a")
    self._clip("b")
    folder = os.path.dirname(self._build().data_path)
    before = _tree(folder)
    self._clip("c")
    with mock.patch.object(data_building._PartialBuild, "discard", lambda _: None):  # killed
      self._interrupt_build()
    os.makedirs(os.path.join(folder, "incomplete.TWG4F1_1.0.0"))  # (TFDS removes its own on an
    left = sorted(os.listdir(folder))                          # exception, not on a kill)
    self.assertLen(left, 2)
    self.assertTrue(left[0].startswith(".1.0.0.replaced-") and left[1].startswith("incomplete."))
    with self.assertLogs(level="WARNING") as logs:  # no clip folder given: the dataset there
      data_building.build("video_frames", self.data_dir, config="folder")
    self.assertIn("put back the dataset that a rebuild killed before its end had set aside",
                  "\n".join(logs.output))
    self.assertEqual(_tree(folder), before)
    self.assertEqual(self._names(), ("a", "b"))
    self._build()  # a clean rebuild with "c"
    self.assertEqual(sorted(os.listdir(folder)), ["1.0.0"])
    self.assertEqual(self._names(), ("a", "b", "c"))
    os.makedirs(os.path.join(folder, ".1.0.0.replaced-0123abcd"))  # killed after its new dataset
    with self.assertLogs(level="WARNING"):
      self._build()
    self.assertEqual(sorted(os.listdir(folder)), ["1.0.0"])
    self.assertEqual(self._names(), ("a", "b", "c"))

  def test_ctrl_c_during_a_build(self):
    """A real SIGINT through the tools' handler (cli.run) while a clip is read."""
    self._clip("a")
    self._clip("b")
    script = textwrap.dedent("""
        import sys, time
        from tcvc_jax import cli
        from tcvc_jax.data import building
        from tcvc_jax.data import layout
        def slow(clip, resize=None):
          print("reading", flush=True)
          time.sleep(60)
          yield from ()
        layout.iter_clip = slow
        work = lambda: building.build("video_frames", sys.argv[1], config="folder",
                                      manual_dir=sys.argv[2])
        cli.exit(cli.ends_on_interrupt(lambda: cli.run(work))())
        """)
    data_dir = os.path.join(self.data_dir, "tfds")
    proc = subprocess.Popen([sys.executable, "-c", script, data_dir, self.root],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    self.addCleanup(proc.kill)
    for line in proc.stdout:  # after "Building dataset ..."
      if line.strip() == "reading":
        break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    self.assertEqual(proc.returncode, 130, err[-2000:])
    self.assertEqual(os.listdir(self.data_dir), [])

  # A second process (another train.py / eval.py) building or reading this dataset; it says
  # "ready" once it holds the dataset and keeps it until its stdin closes.
  _OTHER_RUN = textwrap.dedent("""
      import sys
      from tcvc_jax.data import building
      building.logging.warning = lambda msg, *args: print("warning:", msg % args, flush=True)
      builder = building.build("video_frames", sys.argv[1], config="folder", manual_dir=sys.argv[2])
      print("ready", builder.info.splits["train"].num_examples, flush=True)
      sys.stdin.read()
      """)

  def _other_run(self, root):
    proc = subprocess.Popen([sys.executable, "-c", self._OTHER_RUN, self.data_dir, root],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.addCleanup(proc.kill)
    return proc

  @staticmethod
  def _said(proc, start):
    """The next line of `proc` that starts with `start` (TFDS's own lines are passed over)."""
    for line in proc.stdout:
      if line.startswith(start):
        return line.strip()
      if line.startswith("ready"):  # (it then waits for its stdin to close: no more lines)
        raise AssertionError(f"the other run got the dataset before a line {start!r}")
    raise AssertionError(f"the other run ended without a line {start!r}")

  def test_a_dataset_another_run_reads_is_not_rebuilt_under_it(self):
    """Two projects that share a data dir, trained at once: the second's rebuild would swap the
    first's clips under it (found as 'stale metadata' in the middle of its training)."""
    self._clip("a")
    self._clip("b")
    first_root = self.root
    other = self._other_run(first_root)
    self.assertEqual(self._said(other, "ready"), "ready 2")
    self.root = dt.tempdir(self)  # another project's clips
    self._clip("x")
    with self.assertRaisesRegex(data_sources.DataError, re.escape(
        f"video_frames/folder in {self.data_dir} is in use by another run; this run would "
        f"rebuild it (it was built from "
        f"{os.path.abspath(first_root)}, not {os.path.abspath(self.root)}): wait for that run to "
        "end, or give this run a data dir of its own")):
      self._build()
    self.assertEqual(self._names(), ("a", "b"))
    other.communicate("", timeout=60)  # that run ends: the dataset is free
    self.assertEqual(other.returncode, 0)
    self.assertEqual(self._build().info.splits["train"].num_examples, 1)
    self.assertEqual(self._names(), ("x",))

  def test_runs_building_one_dataset_take_turns(self):
    """Two runs started at once on the same new dataset: the second waits for the first's build and
    reuses it (both failed with TFDS's errors when their builds overlapped)."""
    self._clip("a")
    data_path = datasets.VideoFrames(config="folder", data_dir=self.data_dir).data_path
    with data_building._build_turn(data_path, "video_frames/folder"):  # this run's build, begun
      other = self._other_run(self.root)
      self.assertEqual(self._said(other, "warning"), "warning: video_frames/folder: another run "
                       f"is building or checking it in {data_path}; waiting for it")
      builder = self._build()
    records = os.path.join(builder.data_path, "video_frames-train.array_record-00000-of-00001")
    built = os.stat(records).st_mtime_ns
    self.assertEqual(self._said(other, "ready"), "ready 1")
    other.communicate("", timeout=60)
    self.assertEqual(os.stat(records).st_mtime_ns, built)  # reused, not built again
    self.assertEqual(self._names(), ("a",))


if __name__ == "__main__":
  absltest.main()
