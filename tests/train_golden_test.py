"""Training faithfulness: our train step, schedule and init against the original's (golden/train.*).

The goldens (shared/golden/README.md, "Training and hint goldens") are three steps of the
original's `optimize_parameters` on one batch (B = 2, N = 5, 64x64, FlowNet2 flow) with formula
weights for every key, pixel weight 1, MSE, Adam(5e-5, (0.9, 0.99), 1e-8, no weight decay).
`train_golden_lib.run_steps` runs the same with what train.py runs (`train_config.build_model`,
`train_config.optimizer` and `train_config.jit_train_step` on the `released` config with the
paper's pixel weight 1); float64 runs in a subprocess started with JAX_ENABLE_X64 (conftest.py),
with the float32 run or earlier, while the test process waits for the float64 golden run.

Tolerances (the original's own f32-f64 gaps are in train.json):
  * float32 loss terms, relative to the float32 goldens: 1.7e-5 = 4x the 4.2e-6 gap.
  * float32 step-1 gradients, max |error| / max |golden| per tensor against the float64 goldens:
    5x the tensor's own gap, floored at 5 x 2e-5 (a single gap is one noisy sample; the README
    puts most tensors below 2e-5).
  * float32 `out` of step 1, max abs error against the float64 golden: 2e-5 = 4x the 4.95e-6 gap
    (tests/golden/train.npz keeps only the float64 `out`; the gap was measured on
    shared/golden/train.npz).
  * float64: 1e-9 for everything (relative for losses, per tensor max for gradients and parameter
    changes, absolute for `out`); only rounding order separates a correct port (~1e-12 here).
  * float32 parameter changes are not compared: Adam's first step is ~lr * sign(g), so gradients
    near zero flip between float32 runs (the original's own gap is 3.5 % of max |delta|).
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcvc_jax import porting
from tcvc_jax.training import train_config
from tcvc_jax.training import train_lib

import golden_lib
import train_golden_lib as lib

TRAIN = lib.load_golden_json()
F32_LOSS_TOL = 1.7e-5  # 4x the original's 4.2e-6 relative loss gap
F32_OUT_TOL = 2e-5  # 4x the original's 4.95e-6 gap of `out`
F32_GRAD_FLOOR = 2e-5
F64_TOL = 1e-9
LOSSES = [f"loss/{name}/step{k}" for k in (1, 2, 3) for name in lib.LOSS_NAMES]
GRAD_KEYS = sorted(TRAIN["grad_rel_gap_f32_f64"])
TRAINABLE = ("L_fea_extractor", "channel_reduction", "weigting", "feature_refine")


def _f32_grad_tol(key):
  return 5 * max(TRAIN["grad_rel_gap_f32_f64"][key], F32_GRAD_FLOOR)


@pytest.fixture(scope="module")
def f32_errors(start_train_f64):
  """The float32 run's errors, with the convolution forms of the fixed rule (conv_forms: XLA's or
  split64), not the ones timed on this machine: a timed choice made the errors differ from run to
  run (weigting.conv2.bias: 2.0e-6 with the fixed forms, 1.2e-7 with XLA's, 1.007e-4 in one CI run,
  2026-12-08, over its 1e-4). The forms themselves are checked in conv_forms_test.py."""
  del start_train_f64  # started first, so that the two runs overlap
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("TCVC_CONV_FORMS", "fixed")
    return lib.compute_errors(lib.run_steps("float32"), "f32")


def test_golden_setup_is_the_released_config_with_pixel_weight_1():
  """The paper's loss is the default config's; the released YAML's only drops the pixel term."""
  released, golden = lib.get_config("released"), lib.golden_config()
  paper = lib.get_config()
  assert golden.optim.to_dict() == released.optim.to_dict() == paper.optim.to_dict()
  adam = TRAIN["adam"]
  o = golden.optim
  assert (o.learning_rate, [o.b1, o.b2], o.eps) == (adam["lr"], adam["betas"], adam["eps"])
  assert adam["weight_decay"] == 0  # make_optimizer has no weight decay
  assert tuple(o.trainable) == TRAINABLE
  assert train_lib.LossConfig(**golden.loss.to_dict()) == train_lib.LossConfig(
      reconstruction_weight=TRAIN["pixel_weight"], criterion="l2")
  assert golden.loss.to_dict() == paper.loss.to_dict()
  assert released.loss.to_dict() == dict(golden.loss.to_dict(), reconstruction_weight=0.0)


# ----------------------------------------------------------------------------- float32 step


@pytest.mark.parametrize("name", LOSSES)
def test_float32_loss_terms(f32_errors, name):
  assert f32_errors[name] <= F32_LOSS_TOL, f"{name}: relative error {f32_errors[name]:.3g}"


@pytest.mark.parametrize("key", GRAD_KEYS)
def test_float32_step1_gradients(f32_errors, key):
  err, tol = f32_errors[f"grad/{key}"], _f32_grad_tol(key)
  assert err <= tol, f"{key}: max error / max |grad| {err:.3g} > {tol:.3g}"


def test_float32_step1_out(f32_errors):
  assert f32_errors["out"] <= F32_OUT_TOL, f32_errors["out"]


def _check_structure(errors, dtype):
  assert errors["step"] == 3 and errors["nonfinite"] == 0
  assert errors["param_dtypes"] == [dtype]
  # The trainer's lr metric: iteration k = the k-th update (1-based), 5e-5 for k = 1..3.
  want = [float(np.float32(TRAIN["lr_at_iteration"][str(k)])) for k in (1, 2, 3)]
  assert errors["lr"] == want
  # SIGGRAPH17 and FlowNet2: bit-identical after three steps and no Adam moments at all.
  assert errors["frozen_identical"] == {"fea_key": True, "flow": True}
  for name, moments in errors["moment_leaves"].items():
    want = errors["param_leaves"][name] if name in TRAINABLE else 0
    assert moments == {"mu": want, "nu": want}, name
  assert errors["opt_state_size"] == 2 * errors["trainable_size"] + 2  # + two step counters


def test_float32_frozen_nets_unchanged_and_without_optimizer_state(f32_errors):
  _check_structure(f32_errors, "float32")


# ----------------------------------------------------------------------------- float64 step


@pytest.mark.parametrize("name", LOSSES + [f"grad/{k}" for k in GRAD_KEYS]
                         + [f"delta/{k}" for k in GRAD_KEYS] + ["out"])
def test_float64_matches_original(train_f64_errors, name):
  assert train_f64_errors[name] <= F64_TOL, f"{name}: {train_f64_errors[name]:.3g} > {F64_TOL}"


def test_float64_frozen_nets_unchanged_and_without_optimizer_state(train_f64_errors):
  _check_structure(train_f64_errors, "float64")


# ----------------------------------------------------------------------------- schedule


def test_learning_rate_schedule_matches_original():
  """At every listed iteration k, the trainer's schedule and its Adam apply the original's rate.

  The trainer numbers iterations by applied updates: update k runs with optax's count k - 1
  (its lr metric is schedule(count) before the update).
  """
  config = lib.get_config("released")
  tx, schedule = train_config.optimizer(config)
  b1, b2, eps = config.optim.b1, config.optim.b2, config.optim.eps
  params = {name: {"w": jnp.ones((1,), jnp.float32)} for name in (*TRAINABLE, "fea_key")}
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  state = tx.init(params)
  update = jax.jit(lambda s: tx.update(grads, s, params)[0])
  for k, want in sorted((int(k), v) for k, v in TRAIN["lr_at_iteration"].items()):
    assert float(schedule(k - 1)) == float(np.float32(want)), k
    # The rate Adam applies at update k: every counter at k - 1, moments zero, gradient 1.
    count = k - 1
    at_k = jax.tree_util.tree_map(
        lambda x, c=count: jnp.full_like(x, c) if x.dtype == jnp.int32 else x, state)
    direction = (1 - b1) / (1 - b1**k) / (np.sqrt((1 - b2) / (1 - b2**k)) + eps)
    updates = update(at_k)
    for name in TRAINABLE:
      applied = -float(updates[name]["w"][0]) / direction
      assert applied == pytest.approx(want, rel=2e-6), (k, name)
    assert float(updates["fea_key"]["w"][0]) == 0.0


# ----------------------------------------------------------------------------- initialisation


def _stats_ok(w, bound):
  """Checks that `w` looks like n draws of U(-bound, bound); returns (max, mean, std) / bound."""
  w = np.asarray(w, np.float64).ravel()
  n = w.size
  peak = np.abs(w).max() / bound
  assert peak <= 1 + 1e-6
  if n >= 14:  # P(max |w| < bound (1 - 14/n)) = (1 - 14/n)^n < 1e-6
    assert peak >= 1 - 14 / n
  mean, std = w.mean() / bound, w.std() / bound
  if n >= 30:  # 5 sigma: sd of the mean 1/sqrt(3n), relative sd of the std 0.447/sqrt(n)
    assert abs(mean) <= 5 / np.sqrt(3 * n)
    assert abs(std * np.sqrt(3) - 1) <= 5 * 0.447 / np.sqrt(n)
  return peak, mean, std


def test_init_of_the_trainable_nets_is_pytorch_default():
  """Per layer of the four small nets: kernel and bias ~ U(+-1/sqrt(fan_in)) like Conv2d's
  reset_parameters() on the same shapes (the released ones), checked on torch's own draw too."""
  torch = pytest.importorskip("torch")
  config = lib.get_config("released")
  config.model.colorizer_widths = (8,) * 9 + (128,)  # a narrow colorizer, the released small nets
  config.flow.type = "classical"
  model = train_config.build_model(config)
  rng = jax.random.key(config.seed)
  variables = train_lib.init_variables(model, rng)
  ours = porting.flax_to_torch({"params": {k: variables["params"][k] for k in TRAINABLE}})
  released = dict(golden_lib.read_key_file())
  assert {k: tuple(v.shape) for k, v in ours.items()} == {
      k: s for k, s in released.items() if k.startswith(TRAINABLE)}
  torch.manual_seed(0)
  layers = sorted(k[:-len(".weight")] for k in ours if k.endswith(".weight"))
  assert len(layers) == 11
  for layer in layers:
    out_ch, in_ch, kh, kw = ours[layer + ".weight"].shape
    conv = torch.nn.Conv2d(in_ch, out_ch, (kh, kw))
    conv.reset_parameters()
    # pylint: disable-next=protected-access
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
    bound = 1 / np.sqrt(fan_in)
    assert fan_in == in_ch * kh * kw
    for leaf in ("weight", "bias"):
      theirs = getattr(conv, leaf).detach().numpy()
      assert theirs.shape == ours[f"{layer}.{leaf}"].shape
      _, mean_t, std_t = _stats_ok(theirs, bound)  # the checks hold for torch's own draw
      _, mean_o, std_o = _stats_ok(ours[f"{layer}.{leaf}"], bound)
      n = theirs.size
      if n >= 30:  # the two draws agree within 5 sigma of their difference
        assert abs(mean_o - mean_t) <= 5 * np.sqrt(2 / (3 * n)), (layer, leaf)
        assert abs(std_o - std_t) * np.sqrt(3) <= 5 * np.sqrt(2) * 0.447 / np.sqrt(n), (
            layer, leaf)
  # The trainer's from-scratch state is exactly this draw.
  tx, _ = train_config.optimizer(config)
  state = train_lib.create_train_state(rng, model, tx)
  for name in TRAINABLE:
    for a, b in zip(jax.tree_util.tree_leaves(state.params[name]),
                    jax.tree_util.tree_leaves(variables["params"][name]), strict=True):
      np.testing.assert_array_equal(a, b)
