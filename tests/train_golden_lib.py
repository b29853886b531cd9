"""Training goldens: our real train step on the original's batch, compared with golden/train.npz.

The golden step (shared/golden/README.md, "Training and hint goldens") is the original's
`optimize_parameters` with formula weights (phase 0) for EVERY key, FlowNet2 flow, pixel weight 1
and Adam(lr 5e-5, betas (0.9, 0.99), eps 1e-8), run three times on one batch. Here the same is done
with what train.py runs: `train_config.build_model`, the optimizer and schedule
`train_config.optimizer` builds and `train_config.jit_train_step`, all from the `released` config
with the paper's pixel weight 1; the state is `train_lib.create_train_state`'s with the formula
weights in place of the draw.

The step-1 gradients are read from Adam's first moment after step 1: it is (1 - b1) * g exactly up
to one rounding, so the step itself needs no extra output.

Run as a script (`python tests/train_golden_lib.py --dtype float64 --out errors.json`) it writes
the errors of one run as JSON; the float64 tests use that in a process started with JAX_ENABLE_X64.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)
for _path in (REPO, TESTS_DIR):
  if _path not in sys.path:
    sys.path.insert(0, _path)

import golden_lib  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position

TRAIN_NPZ = os.path.join(golden_lib.GOLDEN_DIR, "train.npz")
TRAIN_JSON = os.path.join(golden_lib.GOLDEN_DIR, "train.json")
FROZEN = ("fea_key", "flow")
LOSS_NAMES = ("l_pix", "warp", "warp2", "total")
# Our metric for each column of the golden loss table.
LOSS_METRICS = ("loss_rec", "loss_warp1", "loss_warp2", "loss")


def load_golden():
  with np.load(TRAIN_NPZ) as g:
    return {k: g[k] for k in g.files}


def load_golden_json():
  with open(TRAIN_JSON) as f:
    return json.load(f)


def get_config(preset=None):
  """configs/default.py with `preset` (None: the paper's setup, 'released': the released YAML)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  return default.get_config(preset)


def golden_config(dtype="float32"):
  """The released config with the paper's pixel weight 1, as the goldens were made; `dtype`."""
  config = get_config("released")
  config.loss.reconstruction_weight = 1.0
  config.model.dtype = dtype
  config.model.param_dtype = dtype
  # How the step runs, not what it computes: the whole N = 5 window unrolled and no remat, as the
  # CPU presets do (configs/default.py; train_lib_test checks that remat gives the same gradients).
  config.model.unroll = 3
  config.remat_propagation = False
  return config


def nhwc(a):
  return np.moveaxis(a, -3, -1)  # [..., C, H, W] -> [..., H, W, C]


def nchw(a):
  return np.moveaxis(a, -1, -3)


def formula_pretrained(dtype):
  """The formula weights of every key as `pretrained.load` returns them: {(col, name): tree}."""
  from tcvc_jax import porting  # pylint: disable=g-import-not-at-top
  sd = golden_lib.formula_state_dict()  # float64, 1.6 GB: cast in place, one entry at a time
  for key in sd:
    sd[key] = sd[key].astype(dtype, copy=False)
  variables, _ = porting.torch_to_flax(sd)
  del sd
  return {(c, name): tree for c in ("params", "batch_stats")
          for name, tree in variables[c].items()}


def _torch_layout(trees):
  """{top-level name: flax tree} -> {torch key: float64 array}, kernels' output channels [::8]."""
  from tcvc_jax import porting  # pylint: disable=g-import-not-at-top
  sd = porting.flax_to_torch({"params": {k: jax_to_np(v) for k, v in trees.items()}})
  return {k: (v[::8] if v.ndim == 4 else v).astype(np.float64) for k, v in sd.items()}


def jax_to_np(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), tree)


def adam_state(opt_state):
  """The ScaleByAdamState inside the optimizer state."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  def is_adam(x):
    return isinstance(x, optax.ScaleByAdamState)

  found = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_adam) if is_adam(x)]
  assert len(found) == 1, found
  return found[0]


def _digest(tree):
  """sha256 of a tree's leaves (bytes, dtype and shape), in tree order."""
  import jax  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(tree):
    leaf = np.asarray(leaf)
    h.update(f"{leaf.dtype}{leaf.shape}".encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def run_steps(dtype="float32", steps=3):
  """Runs `steps` train steps on the golden batch; returns host results (see the keys below)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
  from tcvc_jax.training import train_config  # pylint: disable=g-import-not-at-top
  from tcvc_jax.training import train_lib  # pylint: disable=g-import-not-at-top

  if dtype == "float64" and not jax.config.read("jax_enable_x64"):
    raise RuntimeError("float64 needs JAX_ENABLE_X64=1 from the start of the process")
  clock = [time.perf_counter(), time.process_time()]
  seconds = {}

  def lap(name):  # wall and CPU seconds of each phase
    now = [time.perf_counter(), time.process_time()]
    seconds[name] = [round(b - a, 2) for a, b in zip(clock, now, strict=True)]
    clock[:] = now

  g = load_golden()
  config = golden_config(dtype)
  batch = {"gray": nhwc(g["gray"]).astype(dtype), "ab": nhwc(g["gt_lab"][:, :, 1:]).astype(dtype)}
  model = train_config.build_model(config)
  tx, schedule = train_config.optimizer(config)
  trainable = tuple(config.optim.trainable)
  pretrained = formula_pretrained(dtype)
  params = {name: tree for (c, name), tree in pretrained.items() if c == "params"}
  batch_stats = {name: tree for (c, name), tree in pretrained.items() if c == "batch_stats"}
  del pretrained
  frozen_digest = {name: _digest(params[name]) for name in FROZEN}
  lap("formula_weights")
  mesh = sharding.create_mesh((("data", -1),), "explicit", devices=jax.devices()[:1])
  results = {"metrics": []}
  with jax.set_mesh(mesh):
    # As train_lib.create_train_state, with the formula weights instead of a random draw (the
    # trainer's init_from path, pretrained.apply, puts them in the same places).
    replicated = sharding.replicated(mesh)

    def to_device(tree):
      return jax.tree_util.tree_map(lambda x: sharding.global_from_host(x, replicated), tree)

    params, batch_stats = to_device(params), to_device(batch_stats)
    state = train_lib.TrainState.create(
        apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats,
        nonfinite_total=jnp.zeros((), jnp.int32), nonfinite_consecutive=jnp.zeros((), jnp.int32))
    del params, batch_stats
    shardings = sharding.state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    step_fn = train_config.jit_train_step(config, shardings, mesh, schedule)
    first = {"params": state.params, "batch_stats": state.batch_stats}
    # `out` does not depend on srl (which only adds flow pairs and warps for the loss).
    out = jax.jit(lambda v, x: model.apply(v, x)["ab"])(first, batch["gray"])
    results["out_step1"] = nchw(np.asarray(out, np.float64))
    del first, out
    lap("forward")
    before = jax_to_np({k: state.params[k] for k in trainable})
    global_batch = sharding.global_batch(batch, sharding.data_sharding(mesh))
    moment_scale = 1 / (1 - config.optim.b1)
    for i in range(steps):
      state, metrics = step_fn(state, global_batch)
      metrics = jax.device_get(metrics)
      lap(f"step{i + 1}")
      results["metrics"].append({k: float(v) for k, v in metrics.items()})
      if i == 0:
        # Adam's first moment after one update from zero is (1 - b1) * g.
        mu = adam_state(state.opt_state).mu
        results["grads"] = _torch_layout(
            {k: jax.tree_util.tree_map(lambda m: np.asarray(m) * moment_scale, mu[k])
             for k in trainable})
    after = jax_to_np({k: state.params[k] for k in trainable})
    results["deltas"] = _torch_layout(
        jax.tree_util.tree_map(lambda a, b: a.astype(np.float64) - b.astype(np.float64),
                               after, before))
    results["param_dtypes"] = sorted({str(x.dtype) for x in jax.tree_util.tree_leaves(after)})
    results["frozen_identical"] = {name: _digest(state.params[name]) == frozen_digest[name]
                                   for name in FROZEN}
    adam = adam_state(state.opt_state)
    results["moment_leaves"] = {
        name: {m: len(jax.tree_util.tree_leaves(getattr(adam, m)[name])) for m in ("mu", "nu")}
        for name in state.params}
    results["param_leaves"] = {name: len(jax.tree_util.tree_leaves(state.params[name]))
                               for name in state.params}
    results["opt_state_size"] = sum(int(np.size(x))
                                    for x in jax.tree_util.tree_leaves(state.opt_state))
    results["trainable_size"] = sum(int(np.size(x)) for k in trainable
                                    for x in jax.tree_util.tree_leaves(state.params[k]))
    results["step"] = int(state.step)
  lap("checks")
  results["seconds"] = seconds
  return results


def _rel(ours, golden):
  """max |ours - golden| / max |golden|."""
  ours, golden = np.asarray(ours, np.float64), np.asarray(golden, np.float64)
  if ours.shape != golden.shape:
    raise AssertionError(f"shape {ours.shape} != golden {golden.shape}")
  return float(np.max(np.abs(ours - golden)) / np.max(np.abs(golden)))


def compute_errors(results, tag):
  """Errors against the goldens of `tag` ('f32' or 'f64'; gradients, deltas and out: f64).

  Returns {name: float or bool}:
    loss/<term>/step<k>: relative error of a loss term before update k;
    grad/<key>, delta/<key>: max abs error over the tensor's max |golden|;
    out: max abs error of step 1's `out`; plus the structural checks of `run_steps`.
  """
  g = load_golden()
  errors = {}
  want = g[f"losses_{tag}"]
  for k, metrics in enumerate(results["metrics"]):
    for j, (name, metric) in enumerate(zip(LOSS_NAMES, LOSS_METRICS, strict=True)):
      errors[f"loss/{name}/step{k + 1}"] = abs(metrics[metric] - want[k, j]) / abs(want[k, j])
  for kind in ("grad", "delta"):
    ours = results[f"{kind}s"]
    keys = sorted(k[len(kind) + 5:] for k in g if k.startswith(f"{kind}_f64/"))
    assert sorted(ours) == keys, (sorted(ours), keys)
    for key in keys:
      errors[f"{kind}/{key}"] = _rel(ours[key], g[f"{kind}_f64/{key}"])
  # tests/golden/train.npz keeps the float64 `out` only (shared/golden/train.npz without
  # out_step1_f32, LZMA-compressed, to keep tests/golden small); both runs compare with it.
  errors["out"] = float(np.max(np.abs(results["out_step1"] - g["out_step1_f64"])))
  errors["lr"] = [m["lr"] for m in results["metrics"]]
  errors["nonfinite"] = sum(m["nonfinite"] for m in results["metrics"])
  for key in ("frozen_identical", "moment_leaves", "param_leaves", "opt_state_size",
              "trainable_size", "step", "param_dtypes", "seconds"):
    errors[key] = results[key]
  return errors


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
  parser.add_argument("--out", required=True, help="JSON file for the errors")
  args = parser.parse_args()
  results = run_steps(args.dtype)
  with open(args.out, "w") as f:
    json.dump(compute_errors(results, "f64" if args.dtype == "float64" else "f32"), f, indent=1)


if __name__ == "__main__":
  main()
