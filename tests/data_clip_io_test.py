"""Tests for tcvc_jax.media.reading: decoding, resizing, layouts and bad files."""

import os
import re
import tracemalloc

from absl.testing import absltest
import numpy as np
from PIL import Image

from tcvc_jax.data import layout as data_layout
from tcvc_jax.data import sources as data_sources
from tcvc_jax.media import reading
from tcvc_jax.media import resizing

import data_testlib as dt


class ReadImageTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = dt.tempdir(self)
    self.rng = np.random.default_rng(0)

  def test_png_is_exact_and_jpeg_close(self):
    image = self.rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    png = dt.write_image(os.path.join(self.dir, "a.png"), image)
    np.testing.assert_array_equal(reading.read_image(png), image)
    smooth = np.broadcast_to(np.linspace(0, 255, 14, dtype=np.uint8)[None, :, None],
                             (10, 14, 3)).copy()
    jpg = dt.write_image(os.path.join(self.dir, "a.jpg"), smooth)
    self.assertLessEqual(np.abs(reading.read_image(jpg).astype(int) - smooth).max(), 3)

  def test_jpeg_pixels_are_opencv_s(self):
    """JPEG frames decode to cv2.imread's pixels (tests/golden/jpeg.npz; FFmpeg's were up to 71
    levels off with subsampled chroma), read alone or as a folder's frames, gray kept gray."""
    golden = np.load(os.path.join(os.path.dirname(__file__), "golden", "jpeg.npz"))
    names = [k[len("jpg_"):] for k in golden.files if k.startswith("jpg_")]
    self.assertLen(names, 5)
    for name in names:
      path = os.path.join(self.dir, name, "0.jpg")
      os.makedirs(os.path.dirname(path))
      golden[f"jpg_{name}"].tofile(path)
      want = golden[f"rgb_{name}"]
      np.testing.assert_array_equal(reading.read_image(path), np.broadcast_to(
          want, want.shape[:2] + (3,)), err_msg=name)
      source = reading.open_source(os.path.dirname(path))
      np.testing.assert_array_equal(source.read_all(np.uint8)[0], want, err_msg=name)
    # CMYK (libjpeg's gray or RGB output only is taken): FFmpeg decodes it, as before.
    cmyk = os.path.join(self.dir, "cmyk.jpg")
    Image.fromarray(self.rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert("CMYK").save(
        cmyk)
    self.assertEqual(reading.read_image(cmyk).shape, (8, 8, 3))

  def test_gray_alpha_and_16_bit_become_8_bit_rgb(self):
    gray = self.rng.integers(0, 256, (6, 5, 1), dtype=np.uint8)
    got = reading.read_image(dt.write_image(os.path.join(self.dir, "g.png"), gray))
    np.testing.assert_array_equal(got, np.repeat(gray, 3, axis=-1))
    rgba = self.rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    got = reading.read_image(dt.write_image(os.path.join(self.dir, "r.png"), rgba))
    np.testing.assert_array_equal(got, rgba[..., :3])
    deep = self.rng.integers(0, 65536, (6, 5)).astype(np.uint16)
    got = reading.read_image(dt.write_image(os.path.join(self.dir, "d.png"), deep))
    self.assertEqual(got.shape, (6, 5, 3))
    np.testing.assert_array_equal(got, np.repeat(np.rint(deep / 257.0)[..., None], 3, -1))

  def test_bad_files_name_the_file(self):
    cases = {"missing.png": None, "empty.png": b"", "garbage.png": b"\x89PNG\r\n\x1a\nxxxx",
             "text.jpg": b"not an image at all"}
    good = dt.encode_image(self.rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    cases["truncated.png"] = good[:len(good) // 2]
    for name, content in cases.items():
      path = os.path.join(self.dir, name)
      if content is not None:
        with open(path, "wb") as f:
          f.write(content)
      with self.assertRaisesRegex(reading.MediaError, path, msg=name):
        reading.read_image(path)

  def test_a_video_is_not_an_image(self):
    # e.g. `--reference 0:clip.mp4`: refused, not read as its first frame.
    frames = self.rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    video = dt.write_video(os.path.join(self.dir, "clip.mkv"), frames)
    with self.assertRaisesRegex(reading.MediaError, re.escape(
        f"{video} holds more than one frame (a video or an animation), not one image")):
      reading.read_image(video)
    one = dt.write_video(os.path.join(self.dir, "one.mkv"), frames[:1])  # one frame: an image
    np.testing.assert_array_equal(reading.read_image(one), frames[0])
    png = dt.write_image(os.path.join(self.dir, "tail.png"), frames[1])
    with open(png, "ab") as f:
      f.write(b"bytes after the image" * 10)  # ignored, as before
    np.testing.assert_array_equal(reading.read_image(png), frames[1])


class ResizeTest(absltest.TestCase):

  def test_matches_half_pixel_bilinear_of_torch(self):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      self.skipTest("torch not installed")
    images = np.random.default_rng(1).integers(0, 256, (2, 17, 23, 3), dtype=np.uint8)
    for size in ((9, 11), (30, 40), (17, 7)):
      got = resizing.resize_bilinear(images, *size)
      ref = torch.nn.functional.interpolate(
          torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2), size=size,
          mode="bilinear", align_corners=False, antialias=False).permute(0, 2, 3, 1).numpy()
      self.assertEqual(got.shape, (2,) + size + (3,))
      self.assertLessEqual(np.abs(got - ref).max(), 0.5 + 1e-3)

  def test_same_size_and_constant(self):
    images = np.full((3, 5, 7, 3), 77, np.uint8)
    self.assertIs(resizing.resize_bilinear(images, 5, 7), images)
    np.testing.assert_array_equal(resizing.resize_bilinear(images, 9, 2), 77)


class LayoutTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = dt.tempdir(self)
    self.rng = np.random.default_rng(2)

  def _frames(self, folder, n=3, ext=".png", size=(8, 10), names=None):
    return dt.write_frames(os.path.join(self.root, folder),
                           dt.random_clip(self.rng, n, *size), ext, names)

  def test_davis_layout(self):
    self._frames("JPEGImages/480p/bear", ext=".jpg")
    self._frames("JPEGImages/480p/boat", ext=".jpg")
    self._frames("Annotations/480p/bear")  # ignored
    layout = data_layout.discover(self.root)
    self.assertEqual(layout.kind, "davis")
    self.assertEqual(sorted(layout.clips), ["bear", "boat"])

  def test_split_folders_and_duplicates(self):
    self._frames("train/a")
    self._frames("test/b")
    layout = data_layout.discover(self.root)
    self.assertEqual(layout.kind, "split_folders")
    self.assertEqual(layout.split_of, {"a": "train", "b": "test"})
    self._frames("test/a")
    with self.assertRaisesRegex(reading.MediaError, "two split folders"):
      data_layout.discover(self.root)

  def test_flat_layout_with_videos_natural_order(self):
    paths = self._frames("clip", n=3, names=["10", "2", "1"])
    dt.write_video(os.path.join(self.root, "movie.mkv"), dt.random_clip(self.rng, 4, 8, 10))
    with open(os.path.join(self.root, "notes.txt"), "w") as f:
      f.write("ignored")
    layout = data_layout.discover(self.root)
    self.assertEqual(layout.kind, "flat")
    self.assertEqual(sorted(layout.clips), ["clip", "movie"])
    self.assertEqual([os.path.basename(p) for p in layout.clips["clip"].frames],
                     ["1.png", "2.png", "10.png"])
    frames, names = data_layout.load_clip(layout.clips["clip"])
    self.assertEqual(names, ["1", "2", "10"])
    np.testing.assert_array_equal(frames[2], reading.read_image(paths[0]))
    frames, names = data_layout.load_clip(layout.clips["movie"], resize=(5, 6))
    self.assertEqual((frames.shape, names[-1]), ((4, 5, 6, 3), "00003"))

  def test_missing_and_empty_roots(self):
    with self.assertRaisesRegex(reading.MediaError, "missing data directory .*nowhere"):
      data_layout.discover(os.path.join(self.root, "nowhere"))
    a_file = os.path.join(self.root, "a_file")
    with open(a_file, "w") as f:
      f.write("not a folder")
    with self.assertRaisesRegex(reading.MediaError, "a_file is a file, not a data directory"):
      data_layout.discover(a_file)
    with self.assertRaisesRegex(reading.MediaError, "is a folder, not an image file"):
      reading.read_image(self.root)
    os.remove(a_file)
    with self.assertRaisesRegex(reading.MediaError, f"no clips .* under {self.root}"):
      data_layout.discover(self.root)

  def test_bad_clips(self):
    self._frames("mixed", n=2, size=(8, 10))
    odd = self._frames("mixed", n=1, size=(9, 10), names=["00005"])[0]
    os.makedirs(os.path.join(self.root, "empty"))
    bad = self._frames("corrupt", n=2)[1]
    with open(bad, "wb") as f:
      f.write(b"broken")
    layout = data_layout.discover(self.root)
    with self.assertRaisesRegex(reading.MediaError, f"{odd} differs"):
      data_layout.load_clip(layout.clips["mixed"])
    with self.assertRaisesRegex(reading.MediaError, "no image frames .* in the clip folder "
                                + re.escape(os.path.join(self.root, "empty")) + "$"):
      data_layout.load_clip(layout.clips["empty"])
    with self.assertRaisesRegex(reading.MediaError, bad):
      data_layout.load_clip(layout.clips["corrupt"])

  def test_broken_links_are_named(self):
    self._frames("a")
    gone_folder = os.path.join(self.root, "gone")
    os.symlink(os.path.join(self.root, "nowhere"), os.path.join(self.root, "b"))
    os.symlink(gone_folder + ".mp4", os.path.join(self.root, "c.mp4"))
    with self.assertLogs(level="WARNING") as logs:
      layout = data_layout.discover(self.root)
    self.assertEqual(sorted(layout.clips), ["a", "c"])
    self.assertIn(f"{os.path.join(self.root, 'b')} is a link to "
                  f"{os.path.join(self.root, 'nowhere')}, which does not exist",
                  "\n".join(logs.output))
    with self.assertRaisesRegex(reading.MediaError, re.escape(
        f"missing video file {os.path.join(self.root, 'c.mp4')} (a link to {gone_folder}.mp4, "
        "which does not exist)")):
      data_layout.load_clip(layout.clips["c"])

  def test_a_resized_clip_is_never_held_whole_in_float(self):
    """A long clip resized (e.g. to the 300x300 of the original's training frames) peaked at ~13x
    its resized size in memory (the whole clip in float32 and temporaries): now about 2x."""
    frames = dt.random_clip(self.rng, 40, 16, 16)
    dt.write_video(os.path.join(self.root, "long.mkv"), frames)
    dt.write_frames(os.path.join(self.root, "pngs"), frames, ".png")
    layout = data_layout.discover(self.root)
    for name in ("long", "pngs"):
      tracemalloc.start()
      try:
        got, _ = data_layout.load_clip(layout.clips[name], resize=(64, 64))
        peak = tracemalloc.get_traced_memory()[1]
      finally:
        tracemalloc.stop()
      self.assertEqual(got.shape, (40, 64, 64, 3))
      self.assertLess(peak, 3 * got.nbytes, name)
      np.testing.assert_array_equal(got, resizing.resize_bilinear(frames, 64, 64))

  def test_video_read(self):
    frames = dt.random_clip(self.rng, 5, 16, 24)
    path = dt.write_video(os.path.join(self.root, "v.mkv"), frames)
    np.testing.assert_array_equal(np.stack(list(reading.iter_video(path))), frames)
    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, None, :, None],
                             (4, 16, 32, 3)).copy()
    path = dt.write_video(os.path.join(self.root, "v.mp4"), smooth, codec="mpeg4")
    self.assertLessEqual(np.abs(np.stack(list(reading.iter_video(path))).astype(int)
                                - smooth).max(), 4)
    bad = os.path.join(self.root, "bad.mp4")
    with open(bad, "wb") as f:
      f.write(b"\x00" * 100)
    with self.assertRaisesRegex(reading.MediaError, bad):
      reading.iter_video(bad)  # at once, before a frame is asked for

  def test_list_file(self):
    path = os.path.join(self.root, "list.txt")
    with open(path, "w") as f:
      f.write("bear\n\n# comment\nboat  # trailing\r\n")
    self.assertEqual(data_layout.read_list_file(path), ["bear", "boat"])
    with self.assertRaisesRegex(reading.MediaError, "missing list file"):
      data_layout.read_list_file(path + ".nope")

  def test_list_file_saved_with_a_bom(self):
    # Windows editors start a UTF-8 file with a byte order mark; it is no part of the first name.
    path = os.path.join(self.root, "list.txt")
    with open(path, "w", encoding="utf-8-sig") as f:
      f.write("bear\r\nboat\r\n")
    self.assertEqual(data_layout.read_list_file(path), ["bear", "boat"])

  def test_clips_named_like_splits_in_a_flat_root_are_clips(self):
    for name in ("a", "b", *data_layout.SPLIT_FOLDERS):
      self._frames(name)
    layout = data_layout.discover(self.root)
    self.assertEqual(layout.kind, "flat")
    self.assertEqual(sorted(layout.clips), sorted(["a", "b", *data_layout.SPLIT_FOLDERS]))
    self.assertLen(layout.clips["train"].frames, 3)

  def test_a_lone_split_named_clip(self):
    self._frames("val")  # a root whose only clip is named like a split
    layout = data_layout.discover(self.root)
    self.assertEqual((layout.kind, list(layout.clips)), ("flat", ["val"]))

  def test_split_folders_beside_clips_are_an_error(self):
    self._frames("train/a")
    self._frames("val/b")
    self._frames("loose")
    dt.write_video(os.path.join(self.root, "movie.mkv"), dt.random_clip(self.rng, 3, 8, 10))
    with self.assertRaisesRegex(data_sources.DataError,
                                "both split folders .*train/, val/.*clips beside them .*loose.*"
                                "movie.mkv"):
      data_layout.discover(self.root)

  def test_split_folders_warn_about_what_they_ignore(self):
    self._frames("train/a")
    self._frames("test/b")
    os.makedirs(os.path.join(self.root, "docs", "figures"))
    os.makedirs(os.path.join(self.root, "val"))  # an empty split folder
    os.makedirs(os.path.join(self.root, data_layout.USER_SPLITS))
    with self.assertLogs(level="WARNING") as logs:
      layout = data_layout.discover(self.root)
    self.assertEqual(layout.split_of, {"a": "train", "b": "test"})
    message = "\n".join(logs.output)
    self.assertIn(os.path.join(self.root, "docs"), message)
    self.assertIn(os.path.join(self.root, "val"), message)
    self.assertNotIn(os.path.join(self.root, data_layout.USER_SPLITS), message)

  def test_a_folder_of_split_lists_is_not_a_clip(self):
    self._frames("a")
    os.makedirs(os.path.join(self.root, data_layout.USER_SPLITS))
    with open(os.path.join(self.root, data_layout.USER_SPLITS, "train.txt"), "w") as f:
      f.write("a\n")
    self.assertEqual(list(data_layout.discover(self.root).clips), ["a"])

  def test_fingerprint_follows_the_listing(self):
    paths = self._frames("a")
    self._frames("b")
    first = data_layout.fingerprint(self.root)
    self.assertEqual((first["clips"], first["files"]), (2, 6))
    self.assertEqual(data_layout.fingerprint(self.root), first)
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a frame re-saved
    touched = data_layout.fingerprint(self.root)
    self.assertNotEqual(touched["digest"], first["digest"])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    self.assertEqual(data_layout.fingerprint(self.root), first)
    os.rename(paths[2], paths[2].replace("00002", "00009"))  # a frame renamed
    self.assertNotEqual(data_layout.fingerprint(self.root)["digest"], first["digest"])
    os.rename(paths[2].replace("00002", "00009"), paths[2])
    self._frames("c", n=1)
    self.assertEqual(data_layout.fingerprint(self.root)["clips"], 3)
    os.makedirs(os.path.join(self.root, data_layout.USER_SPLITS))
    with_c = data_layout.fingerprint(self.root)
    with open(os.path.join(self.root, data_layout.USER_SPLITS, "train.txt"), "w") as f:
      f.write("a\n")  # a split list counts too
    self.assertNotEqual(data_layout.fingerprint(self.root)["digest"], with_c["digest"])


if __name__ == "__main__":
  absltest.main()
