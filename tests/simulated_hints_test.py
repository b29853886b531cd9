"""Simulated colour hints (tcvc_jax/data/hints.py): the sampler, the pipeline, the train step."""

import jax
import numpy as np
import pytest

from tcvc_jax.configs import default as default_config
from tcvc_jax.configs import demo as demo_config
from tcvc_jax.data import hints
from tcvc_jax.data import input_pipeline as ip
from tcvc_jax.data import sources as data_sources
from tcvc_jax.ops import color
from tcvc_jax.training import losses
from tcvc_jax.training import sharding
from tcvc_jax.training import train_config

import data_testlib as dt
import train_testlib

SPEC = hints.HintSpec()


def _window_ab(rng, n=3, size=32):
  return rng.uniform(-0.5, 0.5, (n, size, size, 2)).astype(np.float32)


def _patch_means(ab, size):
  """[H-s+1, W-s+1, 2] means of ab over every s x s square (float64)."""
  c = np.pad(np.cumsum(np.cumsum(ab.astype(np.float64), 0), 1), ((1, 0), (1, 0), (0, 0)))
  return (c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]) / size**2


def _explained(ab, hint, mask, max_patch=9, atol=1e-6):
  """[H, W] True where the hint is the mean of ab over a square of side <= max_patch that holds
  the pixel and lies inside the mask (or where there is no hint)."""
  h, w = mask.shape[:2]
  on = mask[..., 0] > 0
  ok = ~on
  for s in range(1, max_patch + 1):
    if s > min(h, w):
      break
    means = _patch_means(ab, s)
    inside = _patch_means(mask, s)[..., 0] > 1 - 1e-9  # the square is all hinted
    for dy in range(s):
      for dx in range(s):
        # Pixel (y, x) in the square whose top-left is (y - dy, x - dx).
        ys, xs = slice(dy, dy + means.shape[0]), slice(dx, dx + means.shape[1])
        match = np.all(np.abs(hint[ys, xs] - means) <= atol, axis=-1) & inside
        ok[ys, xs] |= match
  return ok


def _kind(ab, hint, mask):
  """'none', 'dense' (the ground truth on the mask, > 100 hinted pixels) or 'points'."""
  on = mask[..., 0] > 0
  if not on.any():
    return "none"
  if on.sum() > 100 and np.array_equal(hint[on], ab[on]):
    return "dense"
  return "points"


def test_config_switch():
  config = default_config.get_config()
  assert not config.data.simulated_hints.enabled
  assert hints.HintSpec.from_config(config.data.simulated_hints) is None
  assert hints.HintSpec.from_config(None) is None
  assert train_config.batch_keys(config) == ("gray", "ab")
  for preset in ("released", "tiny"):
    assert not default_config.get_config(preset).data.simulated_hints.enabled
  demo = demo_config.get_config()
  assert hints.HintSpec.from_config(demo.data.simulated_hints) == SPEC
  assert train_config.batch_keys(demo) == ("gray", "ab", "hint_ab", "hint_mask")
  with pytest.raises(ValueError, match="unknown field"):
    hints.HintSpec.from_config({"enabled": True, "points": 3})
  with pytest.raises(ValueError, match="location"):
    hints.HintSpec(location="center")


def test_patches_follow_siggraph17():
  rng = np.random.default_rng(0)
  counts, sizes = [], []
  for _ in range(4000):
    patches = hints.draw_patches(rng, 32, 40, SPEC)
    counts.append(len(patches))
    sizes.extend(patches[:, 2])
    top, left, size = patches.T
    assert np.all((top >= 0) & (left >= 0) & (top + size <= 32) & (left + size <= 40))
  counts, sizes = np.array(counts), np.array(sizes)
  assert abs(np.mean(counts == 0) - 0.125) < 0.015  # Geometric(1/8): P(K = 0) = 1/8
  assert abs(counts.mean() - 7.0) < 0.4  # E[K] = (1 - p) / p
  hist = np.bincount(sizes, minlength=10)
  assert hist[0] == 0 and sizes.max() == 9
  np.testing.assert_allclose(hist[1:] / len(sizes), 1 / 9, atol=0.01)  # uniform in 1..9
  # Sizes are clipped to small frames.
  assert hints.draw_patches(np.random.default_rng(1), 4, 6,
                            hints.HintSpec(points_p=0.01))[:, 2].max() <= 4


def test_painted_patches_hold_the_patch_mean():
  rng = np.random.default_rng(2)
  ab = _window_ab(rng)[0]
  patches = np.array([[3, 4, 5], [0, 0, 1], [5, 6, 3], [20, 25, 9]])
  hint, mask = hints.paint_patches(ab, patches)
  covered = np.zeros((32, 32), bool)
  for top, left, size in patches[::-1]:  # later patches win where they overlap
    region = np.zeros((32, 32), bool)
    region[top:top + size, left:left + size] = True
    mine = region & ~covered
    np.testing.assert_allclose(hint[mine], np.broadcast_to(
        ab[region].mean(0), hint[mine].shape), atol=1e-6)
    covered |= region
  np.testing.assert_array_equal(mask[..., 0], covered)
  np.testing.assert_array_equal(hint[~covered], 0)


def test_window_statistics_and_anchors_only():
  rng = np.random.default_rng(3)
  ab = _window_ab(rng, n=4)
  kinds, windows_without = [], 0
  for i in range(3000):
    out = hints.sample_window_hints(ab, rng, SPEC)
    assert out["hint_ab"].shape == (4, 32, 32, 2) and out["hint_mask"].shape == (4, 32, 32, 1)
    assert out["hint_ab"].dtype == np.float32 and out["hint_mask"].dtype == np.float32
    assert not out["hint_ab"][1:3].any() and not out["hint_mask"][1:3].any()
    assert set(np.unique(out["hint_mask"])) <= {0.0, 1.0}
    assert not out["hint_ab"][out["hint_mask"][..., 0] == 0].any()
    frame_kinds = [_kind(ab[t], out["hint_ab"][t], out["hint_mask"][t]) for t in (0, 3)]
    windows_without += frame_kinds == ["none", "none"]
    kinds += frame_kinds
    if i < 150:  # every point hint is the mean ground truth over a square of side 1..9
      for t, kind in zip((0, 3), frame_kinds, strict=True):
        if kind == "points":
          assert _explained(ab[t], out["hint_ab"][t], out["hint_mask"][t]).all()
  kinds = np.array(kinds)
  # P(window without hints) = 1/4 + 3/4 (7/8 * 1/8)^2; per anchor: dense 3/4 * 1/8, points
  # 3/4 * 7/8 * 7/8.
  assert abs(windows_without / 3000 - (0.25 + 0.75 * (7 / 64) ** 2)) < 0.03
  assert abs(np.mean(kinds == "dense") - 0.75 / 8) < 0.015
  assert abs(np.mean(kinds == "points") - 0.75 * 49 / 64) < 0.025


def test_dense_hints_are_the_ground_truth_with_holes():
  rng = np.random.default_rng(4)
  ab = _window_ab(rng, n=3)
  spec = hints.HintSpec(none_fraction=0.0, dense_fraction=1.0)
  coverage = []
  for _ in range(200):
    out = hints.sample_window_hints(ab, rng, spec)
    for t in (0, 2):
      on = out["hint_mask"][t, ..., 0] > 0
      np.testing.assert_array_equal(out["hint_ab"][t][on], ab[t][on])
      coverage.append(on.mean())
  coverage = np.array(coverage)
  assert np.mean(coverage == 1.0) > 0.12  # no hole one time in 5
  assert 0.3 < coverage.min() and coverage.mean() > 0.75


def _pipeline(spec=None, seed=5, window=None, **kwargs):
  source, index, _ = dt.marked_source((6, 9, 7), height=20, width=20)
  window = window or ip.WindowSpec(num_frames=3, crop_size=(16, 16), random_reverse=True)
  return ip.make_train_dataset(source, index, window, seed=seed, hints=spec, **kwargs)


def test_pipeline_is_deterministic_and_resumes():
  ds = _pipeline(SPEC)
  first = [ds[i] for i in range(12)]
  again = [_pipeline(SPEC)[i] for i in range(12)]
  other = [_pipeline(SPEC, seed=6)[i] for i in range(12)]
  for a, b in zip(first, again, strict=True):
    for k in ("hint_ab", "hint_mask", "gray"):
      np.testing.assert_array_equal(a[k], b[k])
  assert any(not np.array_equal(a["hint_mask"], b["hint_mask"])
             for a, b in zip(first, other, strict=True))
  # The windows are those of the pipeline without hints: hints draw from their own seed.
  plain = _pipeline(None)
  for i, e in enumerate(first):
    p = plain[i]
    assert not set(p) & set(hints.HINT_KEYS)
    for k in ("gray", "ab", "frame_ids", "key"):
      np.testing.assert_array_equal(e[k], p[k])
  # Batches resume from an iterator state.
  it = iter(ip.to_batches(ds, 2, read_threads=1))
  expected = [next(it) for _ in range(4)]
  it = iter(ip.to_batches(ds, 2, read_threads=1))
  next(it)
  state = it.get_state()
  resumed = iter(ip.to_batches(ds, 2, read_threads=1))
  resumed.set_state(state)
  for want in expected[1:]:
    got = next(resumed)
    assert got["hint_ab"].shape == (2, 3, 16, 16, 2)
    for k in hints.HINT_KEYS:
      np.testing.assert_array_equal(got[k], want[k])


def test_hints_lie_on_the_augmented_frames():
  """With crops, flips and rotations, every hint is the ground truth (dense) or a square patch's
  mean ground truth (points) of the frames as the element holds them."""
  rng = np.random.default_rng(7)
  clips = [dt.random_clip(rng, n, 24, 24) for n in (5, 7)]  # random pixels: any shift shows
  source = data_sources.ArraySource(clips)
  window = ip.WindowSpec(num_frames=4, crop_size=(16, 16), hflip=True, rot90=True)
  ds = ip.make_train_dataset(source, source.index(), window, seed=8,
                             hints=hints.HintSpec(none_fraction=0.0, dense_fraction=0.3))
  kinds = set()
  for i in range(40):
    e = ds[i]
    for t in (0, 3):
      ab, hint, mask = e["ab"][t], e["hint_ab"][t], e["hint_mask"][t]
      kind = _kind(ab, hint, mask)
      kinds.add(kind)
      if kind == "points":
        assert _explained(ab, hint, mask).all(), (i, t)
  assert kinds >= {"dense", "points"}
  # The flipped window's hints: the frames as the element holds them are a flip or rotation of
  # the unaugmented window, and its hints follow those frames, not the unflipped ones.
  flat = ip.make_train_dataset(source, source.index(), ip.WindowSpec(
      num_frames=4, crop_size=(16, 16), hflip=False, rot90=False), seed=8,
      hints=hints.HintSpec(none_fraction=0.0, dense_fraction=1.0, dense_max_holes=0))
  flipped = ip.make_train_dataset(source, source.index(), ip.WindowSpec(
      num_frames=4, crop_size=(16, 16), hflip=True, rot90=False), seed=8,
      hints=hints.HintSpec(none_fraction=0.0, dense_fraction=1.0, dense_max_holes=0))
  seen_flip = False
  for i in range(12):
    a, b = flat[i], flipped[i]
    if np.array_equal(a["gray"], b["gray"]):
      continue
    np.testing.assert_array_equal(a["gray"][:, :, ::-1], b["gray"])
    np.testing.assert_array_equal(a["hint_ab"][:, :, ::-1], b["hint_ab"])
    seen_flip = True
  assert seen_flip
  # output="rgb" (Lab on device): the hints come from the anchors' ab.
  rgb = ip.make_train_dataset(source, source.index(), window, seed=8, output="rgb",
                              hints=hints.HintSpec(none_fraction=0.0, dense_fraction=1.0,
                                                   dense_max_holes=0))
  e = rgb[0]
  _, ab = color.rgb_to_gray_ab(e["rgb"], np)
  np.testing.assert_array_equal(e["hint_ab"][[0, 3]], ab[[0, 3]])
  assert "ab" not in e and not e["hint_mask"][1:3].any()


def test_get_datasets_adds_hint_keys_only_when_on(tmp_path_factory):
  data_dir = train_testlib.prepared_tfds(tmp_path_factory)
  config = {"name": "synthetic_clips", "config": "tiny", "data_dir": data_dir, "crop_size": 16,
            "eval_split": None}
  off = dict(config, simulated_hints=default_config.get_config().data.simulated_hints.to_dict())
  for block in (config, off):
    train, _ = ip.get_datasets(block, num_frames=3, global_batch_size=2, seed=0,
                               process_index=0, process_count=1)
    assert not set(next(iter(train))) & set(hints.HINT_KEYS)
  on = dict(config, simulated_hints={"enabled": True, "none_fraction": 0.0})
  train, _ = ip.get_datasets(on, num_frames=3, global_batch_size=2, seed=0, process_index=0,
                             process_count=1)
  batch = next(iter(train))
  assert batch["hint_ab"].shape == (2, 3, 16, 16, 2) and batch["hint_ab"].dtype == np.float32
  assert batch["hint_mask"].shape == (2, 3, 16, 16, 1) and batch["hint_mask"].dtype == np.float32


def test_train_step_with_hints():
  config = train_testlib.tiny_config()
  config.optim.trainable = losses.TRAINABLE  # the colorizer frozen (its gradients compile slowly)
  config.data.simulated_hints.enabled = True
  model = train_config.build_model(config)
  tx, _ = train_config.optimizer(config)
  mesh = sharding.create_mesh((("data", -1),), "explicit", devices=jax.devices()[:1])
  batch = train_testlib.random_batch(2, 3, 32)
  rng = np.random.default_rng(9)
  spec = hints.HintSpec(none_fraction=0.0, dense_fraction=0.5)
  sampled = [hints.sample_window_hints(batch["ab"][b], rng, spec) for b in range(2)]
  hinted = dict(batch, **{k: np.stack([s[k] for s in sampled]) for k in hints.HINT_KEYS})
  zero = dict(batch, **{k: np.zeros_like(hinted[k]) for k in hints.HINT_KEYS})
  with jax.set_mesh(mesh):
    init_fn, _, shardings = train_config.fresh_state(config, model, tx, mesh)
    step = train_config.jit_train_step(config, shardings, mesh)
    run = lambda b: jax.device_get(step(init_fn(), sharding.global_batch(
        {k: b[k] for k in train_config.batch_keys(config) if k in b},
        sharding.data_sharding(mesh)))[1])
    plain, with_hints, with_zero = run(batch), run(hinted), run(zero)
  assert with_hints["nonfinite"] == 0 and np.isfinite(with_hints["loss"])
  assert with_hints["loss"] != plain["loss"]
  # Zero hints are no hints (the model's rule), up to float rounding.
  np.testing.assert_allclose(with_zero["loss"], plain["loss"], rtol=1e-6)
