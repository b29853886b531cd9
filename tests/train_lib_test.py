"""Train step pieces: schedule, optimizer masking, PyTorch-default init, non-finite steps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcvc_jax.training import losses
from tcvc_jax.training import sharding
from tcvc_jax.training import train_config
from tcvc_jax.training import train_lib

import tiny
import train_testlib


def test_schedule_is_the_originals_multistep():
  """Iteration k (1-based) uses 5e-5 * 0.5^#{milestones <= k - 1} (docs/original.md#training)."""
  schedule = train_lib.lr_schedule(5e-5, (10_000, 20_000, 30_000), 0.5)
  for k, want in ((1, 5e-5), (10_000, 5e-5), (10_001, 2.5e-5), (20_001, 1.25e-5),
                  (30_000, 1.25e-5), (30_001, 6.25e-6), (100_000, 6.25e-6)):
    assert float(schedule(k - 1)) == pytest.approx(want, rel=1e-6), k


def test_schedule_counts_milestones_as_the_original():
  # MultiStepLR_Restart keeps a Counter: a milestone given twice halves twice, one below 0 never
  # comes (it halved from the first update).
  schedule = train_lib.lr_schedule(1.0, (10, 10, -1, 0), 0.5)
  for k, want in ((1, 0.5), (10, 0.5), (11, 0.125), (100, 0.125)):
    assert float(schedule(k - 1)) == pytest.approx(want, rel=1e-6), k


def test_adam_matches_torch_hyperparameters():
  """One update equals PyTorch Adam's: lr * m_hat / (sqrt(v_hat) + eps), betas (0.9, 0.99)."""
  tx = train_lib.make_optimizer(learning_rate=5e-5, b1=0.9, b2=0.99, eps=1e-8,
                                milestones=(10,), gamma=0.5, trainable=("w",))
  params = {"w": jnp.ones((3,)), "frozen": jnp.ones((2,))}
  grads = {"w": jnp.array([1e-3, -2.0, 0.0]), "frozen": jnp.array([5.0, 5.0])}
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  updates, _ = tx.update(grads, state, params)  # second step: bias correction matters
  g = np.asarray(grads["w"], np.float64)
  m = 0.9 * (0.1 * g) + 0.1 * g
  v = 0.99 * (0.01 * g * g) + 0.01 * g * g
  want = -5e-5 * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.99**2)) + 1e-8)
  np.testing.assert_allclose(updates["w"], want, rtol=1e-5, atol=1e-12)
  np.testing.assert_array_equal(updates["frozen"], 0.0)


def test_frozen_subtrees_have_no_optimizer_state():
  model = tiny.tiny_model()
  variables = train_lib.init_variables(model, jax.random.key(0))
  tx = train_lib.make_optimizer(learning_rate=1e-3, b1=0.9, b2=0.99, eps=1e-8, milestones=(),
                                gamma=0.5, trainable=losses.TRAINABLE)
  opt_state = tx.init(variables["params"])
  sizes = sum(x.size for x in jax.tree_util.tree_leaves(opt_state))
  trainable = sum(x.size for k in losses.TRAINABLE
                  for x in jax.tree_util.tree_leaves(variables["params"][k]))
  assert sizes == 2 * trainable + 2  # mu and nu of the trainable nets, two step counters


def test_init_variables_follow_pytorch_defaults():
  model = tiny.tiny_model()
  variables = train_lib.init_variables(model, jax.random.key(1))
  conv = variables["params"]["weigting"]["conv1"]
  bound = 1 / np.sqrt(np.prod(conv["kernel"].shape[:-1]))
  for leaf in (conv["kernel"], conv["bias"]):
    assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound
  bn = variables["params"]["fea_key"]["model1"]["4"]
  np.testing.assert_array_equal(bn["scale"], 1.0)
  np.testing.assert_array_equal(bn["bias"], 0.0)
  stats = variables["batch_stats"]["fea_key"]["model1"]["4"]
  np.testing.assert_array_equal(stats["var"], 1.0)
  np.testing.assert_array_equal(stats["mean"], 0.0)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(train_lib.INIT_SHAPE))
  assert (jax.tree_util.tree_structure(shapes["params"])
          == jax.tree_util.tree_structure(variables["params"]))


def test_compute_losses_weights():
  gray = jnp.zeros((1, 3, 8, 8, 1))
  ab = jnp.full((1, 3, 8, 8, 2), 0.5)
  outputs = {"ab": jnp.zeros_like(ab), "ab_warp1": jnp.ones((1, 2, 8, 8, 2)),
             "mask1": jnp.ones((1, 2, 8, 8, 1)), "ab_warp2": None, "mask2": None,
             "last_anchor": None}
  del gray
  cfg = train_lib.LossConfig(reconstruction_weight=0.0, criterion="l1")
  terms = train_lib.compute_losses(outputs, ab, cfg)
  assert float(terms["loss_rec"]) == pytest.approx(0.5)
  assert float(terms["loss"]) == pytest.approx(1.0)  # warp1 only; warp2 is 0 without a pair


@pytest.fixture(scope="module")
def step_setup():
  config = train_testlib.tiny_config()
  config.optim.trainable = losses.TRAINABLE  # the colorizer frozen, as in the paper
  model = train_config.build_model(config)
  tx, _ = train_config.optimizer(config)
  mesh = sharding.create_mesh((("data", -1),), "explicit", devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    init_fn, _, shardings = train_config.fresh_state(config, model, tx, mesh)
    step = train_config.jit_train_step(config, shardings, mesh)
  return config, mesh, init_fn, step


def _run(setup, batch):
  _, mesh, init_fn, step = setup
  with jax.set_mesh(mesh):
    state = init_fn()
    before = jax.tree_util.tree_map(np.asarray, state.params)
    state, metrics = step(state, sharding.global_batch(batch, sharding.data_sharding(mesh)))
  return before, state, jax.device_get(metrics)


def test_step_updates_trainable_nets_only(step_setup):
  before, state, metrics = _run(step_setup, train_testlib.random_batch(2, 3, 32))
  assert metrics["nonfinite"] == 0 and np.isfinite(metrics["loss"])
  assert int(state.step) == 1
  for name, tree in state.params.items():
    moved = any(not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(before[name]), strict=True))
    assert moved == (name in losses.TRAINABLE), name


def test_non_finite_step_is_skipped_and_counted(step_setup):
  batch = train_testlib.random_batch(2, 3, 32)
  batch["ab"][0, 1, 3, 4, 0] = np.nan  # a NaN target makes the loss NaN
  before, state, metrics = _run(step_setup, batch)
  assert metrics["nonfinite"] == 1 and not np.isfinite(metrics["loss"])
  assert int(state.nonfinite_total) == 1 and int(state.nonfinite_consecutive) == 1
  for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(before),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  counts = [x for x in jax.tree_util.tree_leaves(state.opt_state) if x.ndim == 0]
  assert all(int(c) == 0 for c in counts)  # Adam and its schedule did not advance


def test_step_is_finite_checks_the_loss_and_every_gradient():
  grads = {"a": jnp.ones((3, 3)), "b": [jnp.full((2,), -2.0), jnp.zeros((4, 1))]}
  ok, norm = train_lib.step_is_finite(jnp.float32(0.5), grads)
  assert bool(ok) and np.isclose(float(norm), np.sqrt(9 + 8))
  assert not bool(train_lib.step_is_finite(jnp.float32(np.nan), grads)[0])
  for bad in (np.inf, -np.inf, np.nan, 3e19):  # 3e19: its square overflows fp32, as Adam's would
    hurt = jax.tree_util.tree_map(lambda x: x, grads)
    hurt["b"][1] = hurt["b"][1].at[2, 0].set(bad)
    assert not bool(train_lib.step_is_finite(jnp.float32(0.5), hurt)[0]), bad


def test_remat_propagation_gives_the_same_gradients():
  spec = dataclasses.replace(tiny.TINY_SPEC, classical_flow=(("num_scales", 1), ("num_warps", 1),
                                                  ("num_iters", 1)))
  plain, remat = train_lib.build_model(spec), train_lib.build_model(spec, remat=True)
  variables = train_lib.init_variables(plain, jax.random.key(0))
  batch = train_testlib.random_batch(1, 4, 16)

  def grads(model):
    def loss(params):
      out = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                        batch["gray"], srl=True)
      return train_lib.compute_losses(out, batch["ab"], train_lib.LossConfig())["loss"]
    fn = jax.jit(jax.grad(loss))
    return fn(variables["params"]), fn.lower(variables["params"]).as_text()

  (g_plain, _), (g_remat, text) = grads(plain), grads(remat)
  assert "optimization_barrier" in text  # the propagation step is rematerialised
  for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_remat),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


def test_the_closing_report_lists_what_the_run_wrote(tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top

  from tcvc_jax import train  # pylint: disable=g-import-not-at-top
  summary = train._summary  # pylint: disable=protected-access
  result = {"step": 3, "preempted": False, "train": {"loss": 0.5}, "train_steps": (1, 3)}
  own_clips = ml_collections.ConfigDict({"data": {"name": "video_frames", "config": "folder"}})
  report = summary(result, str(tmp_path), own_clips)
  assert "TensorBoard events\n" in report and "images/" not in report  # no validation split
  assert f"colorize with --checkpoint {tmp_path})" in report  # the tool's default size
  (tmp_path / "images").mkdir()
  assert "TensorBoard events, images/\n" in summary(result, str(tmp_path), own_clips)
  # The demo's model is told at the size of its clips (at 256 it scores ~2 dB lower).
  demo = ml_collections.ConfigDict({"data": {"name": "synthetic_clips", "config": "painted"}})
  assert f"colorize with --checkpoint {tmp_path} --size 64)" in summary(result, str(tmp_path), demo)


def test_a_run_stopped_at_once_removes_the_checkpoint_it_was_writing(tmp_path):
  """A second Ctrl-C during a save: the partial `N.orbax-checkpoint-tmp` folder goes at once (a
  rerun removed it; until then it sat beside the checkpoints), the saved ones stay."""
  from tcvc_jax import train  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "checkpoints"
  (folder / "5" / "state").mkdir(parents=True)
  (folder / "7.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp").mkdir(parents=True)
  from tcvc_jax.training import stopping  # pylint: disable=g-import-not-at-top
  control, told = stopping.RunControl(), []
  control.on_end_at_once(lambda: told.append(True))  # (a multi-host run tells its job)
  message = train._clean_up_after_interrupt(str(tmp_path), control)  # pylint: disable=protected-access
  assert told == [True]
  assert message == (f"interrupted at once; {tmp_path} keeps its checkpoint of step 5, from which "
                     "the same command resumes")
  assert [p.name for p in folder.iterdir()] == ["5"] and (folder / "5" / "state").is_dir()
