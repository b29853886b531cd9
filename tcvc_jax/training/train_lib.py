"""Pure training functions: the train state, the optimizer, the loss and the train step.

Nothing here logs, reads files or reads a config: `train_config.py` turns the config into the
plain arguments below and `trainer.py` runs the loop. The loss is the original's
(docs/original.md#training):

  loss = reconstruction_weight * criterion(ab, ab_gt) + warp1_weight * warp1 + warp2_weight * warp2

with both sides of each warp term differentiated. A step whose loss or gradient is not finite is
skipped: params and optimizer state stay as they were, and the state counts it.
"""

import collections
import dataclasses
from typing import Any
from typing import Sequence

from flax import linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tcvc_jax.models import spec as model_spec
from tcvc_jax.models import tcvc
from tcvc_jax.training import losses

# Parameter-free leaves of BatchNorm and their PyTorch defaults.
_BN_DEFAULTS = {"scale": 1.0, "mean": 0.0, "var": 1.0}
# Shape used to create the variables; the parameter shapes do not depend on it (64: FlowNet2).
INIT_SHAPE = (1, 3, 64, 64, 1)


class TrainState(train_state.TrainState):
  """Adds TCVC's frozen BatchNorm statistics and the non-finite step counters.

  Attributes:
    batch_stats: BatchNorm running statistics (SIGGRAPH17; always in eval mode, never updated).
    nonfinite_total: steps skipped for a non-finite loss or gradient.
    nonfinite_consecutive: skipped steps since the last applied one.
  """
  batch_stats: Any = None
  nonfinite_total: jax.Array | int = 0
  nonfinite_consecutive: jax.Array | int = 0


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights and criterion of the training loss (see the module docstring)."""
  reconstruction_weight: float = 1.0
  criterion: str = "l2"
  warp1_weight: float = 1.0
  warp2_weight: float = 1.0


def build_model(spec: model_spec.ModelSpec, remat: bool = False, **runtime) -> tcvc.TCVC:
  """The TCVC module of `spec`; `runtime`: dtype, unroll, flow_batch, ... (see ModelSpec.build)."""
  return spec.build(remat=remat, **runtime)


def init_variables(model: nn.Module, rng: jax.Array, sample_shape=INIT_SHAPE) -> dict[str, Any]:
  """Random variables with PyTorch's default distributions, without running the model.

  Conv kernels and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = prod(kernel.shape[:-1])
  (in_ch * kh * kw; out_ch * kh * kw for transposed convs, as torch computes it); BatchNorm scale 1,
  bias 0, running mean 0, variance 1 (docs/original.md#training). Shapes come from `jax.eval_shape`,
  so nothing is compiled but the random draws (`jit(model.init)` costs seconds of XLA compile).

  Args:
    model: a TCVC module.
    rng: a PRNG key.
    sample_shape: [B, N, H, W, 1] to trace the model with.

  Returns:
    {'params', 'batch_stats'}.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(sample_shape, jnp.float32))
  flat, treedef = jax.tree_util.tree_flatten_with_path(
      {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})})
  kernels = {tuple(path[:-1]): s.shape for path, s in flat if path[-1].key == "kernel"}
  bounds = []
  for path, _ in flat:
    kernel = kernels.get(tuple(path[:-1])) if path[-1].key in ("kernel", "bias") else None
    bounds.append(None if kernel is None else float(np.prod(kernel[:-1])) ** -0.5)
  # One draw for all random leaves: per-leaf draws cost seconds of compile per hundred leaves.
  total = sum(int(np.prod(s.shape))
              for (_, s), b in zip(flat, bounds, strict=True) if b is not None)
  noise = jax.random.uniform(rng, (total,), jnp.float32, -1.0, 1.0)
  leaves, offset = [], 0
  for (path, s), bound in zip(flat, bounds, strict=True):
    if bound is None:
      leaves.append(jnp.full(s.shape, _BN_DEFAULTS.get(path[-1].key, 0.0), s.dtype))
      continue
    size = int(np.prod(s.shape))
    leaves.append((noise[offset:offset + size].reshape(s.shape) * bound).astype(s.dtype))
    offset += size
  return jax.tree_util.tree_unflatten(treedef, leaves)


def lr_schedule(learning_rate: float, milestones: Sequence[int], gamma: float):
  """MultiStep decay stepped after each update: update k (1-based) uses lr * gamma^#{m <= k-1}.

  As the original's MultiStepLR_Restart (a Counter of the milestones): a milestone given twice
  multiplies by gamma twice; one below 0 is never reached.
  """
  counts = collections.Counter(int(m) for m in milestones if int(m) >= 0)
  return optax.piecewise_constant_schedule(learning_rate,
                                           {m: gamma ** c for m, c in counts.items()})


def make_optimizer(*, learning_rate: float, b1: float, b2: float, eps: float,
                   milestones: Sequence[int], gamma: float,
                   trainable: Sequence[str]) -> optax.GradientTransformation:
  """Adam on the trainable top-level sub-networks; the others get no state and no update."""
  adam = optax.adam(lr_schedule(learning_rate, milestones, gamma), b1=b1, b2=b2, eps=eps)

  def labels(params):
    return jax.tree_util.tree_map(lambda t: "train" if t else "frozen",
                                  losses.trainable_mask(params, tuple(trainable)))

  return optax.multi_transform({"train": adam, "frozen": optax.set_to_zero()}, labels)


def create_train_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       sample_shape=INIT_SHAPE) -> TrainState:
  """A fresh train state (jit it with `out_shardings` so that it is born sharded)."""
  variables = init_variables(model, rng, sample_shape)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables["batch_stats"],
                           nonfinite_total=jnp.zeros((), jnp.int32),
                           nonfinite_consecutive=jnp.zeros((), jnp.int32))


def compute_losses(outputs: dict[str, Any], target_ab: jax.Array,
                   loss_config: LossConfig) -> dict[str, jax.Array]:
  """Loss terms and their weighted sum under 'loss'.

  The terms are float32 for float32 and bfloat16 models and float64 for float64 models (the
  targets are cast to that dtype), so that a float64 step is float64 throughout.
  """
  dtype = jnp.promote_types(outputs["ab"].dtype, jnp.float32)
  cast = lambda x: None if x is None else x.astype(dtype)
  outputs = {k: (cast(v) if k != "last_anchor" else v) for k, v in outputs.items()}
  rec = losses.reconstruction(outputs["ab"], target_ab.astype(dtype), loss_config.criterion)
  srl = losses.srl_losses(outputs)
  total = (loss_config.reconstruction_weight * rec + loss_config.warp1_weight * srl["warp1"]
           + loss_config.warp2_weight * srl["warp2"])
  return {"loss": total, "loss_rec": rec, "loss_warp1": srl["warp1"], "loss_warp2": srl["warp2"]}


def _auto_sharded(fn):
  """`fn` with Explicit mesh axes switched to Auto inside, outputs replicated.

  The model code is written for global arrays without sharding types (e.g. it concatenates a
  batch-sharded input with fresh zeros), so under an Explicit mesh the compiler propagates the
  batch sharding through it, as with an Auto mesh.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or jax.sharding.AxisType.Explicit not in mesh.axis_types:
    return fn
  return jax.sharding.auto_axes(fn, out_sharding=jax.sharding.PartitionSpec())


def step_is_finite(loss: jax.Array, grads) -> tuple[jax.Array, jax.Array]:
  """(whether the step may update, the gradients' global norm), one flag for the whole step.

  The loss and the gradients' global norm must be finite: a gradient with an inf or NaN makes
  the norm inf / NaN, and so does one whose squares overflow fp32 (|g| above ~1e19), which
  would overflow Adam's second moment as well. One reduction, not a test per leaf.
  """
  grad_norm = optax.tree.norm(grads)
  return jnp.isfinite(loss) & jnp.isfinite(grad_norm), grad_norm


def train_step(state: TrainState, batch: dict[str, jax.Array], *, loss_config: LossConfig,
               trainable: Sequence[str], schedule=None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a global batch; skips the update if anything is non-finite.

  TCVC has no stochastic layer, so the step takes no PRNG key.

  Args:
    state: the train state.
    batch: 'gray' [B, N, H, W, 1] and 'ab' [B, N, H, W, 2] normalised Lab; optionally
      'hint_ab' [B, N, H, W, 2] and 'hint_mask' [B, N, H, W, 1] colour hints for the anchors
      (simulated hints, data/hints.py). Without them the model runs without hints.
    loss_config: loss weights and criterion.
    trainable: top-level sub-networks that learn; gradients stop at the others.
    schedule: optional learning-rate schedule, only to report the rate used.

  Returns:
    (new state, metrics): loss terms of this batch, 'grad_norm', 'lr', 'nonfinite' (1 if the
    step was skipped) and the state's counters.
  """
  mask = losses.trainable_mask(state.params, tuple(trainable))

  def loss_fn(params, batch_stats, batch):
    # Everything the loss reads is an argument, so that `_auto_sharded` sees all of it.
    variables = {"params": losses.freeze(params, mask), "batch_stats": batch_stats}
    outputs = state.apply_fn(variables, batch["gray"], srl=True, hint_ab=batch.get("hint_ab"),
                             hint_mask=batch.get("hint_mask"))
    terms = compute_losses(outputs, batch["ab"], loss_config)
    return terms["loss"], terms

  (_, terms), grads = jax.value_and_grad(_auto_sharded(loss_fn), has_aux=True)(
      state.params, state.batch_stats, batch)
  leaves, treedef = jax.tree_util.tree_flatten(state.params)
  is_trainable = jax.tree_util.tree_leaves(mask)
  trainable = lambda tree: [x for x, m in zip(jax.tree_util.tree_leaves(tree), is_trainable,
                                              strict=True) if m]
  ok, grad_norm = step_is_finite(terms["loss"], trainable(grads))

  def update(opt_state):
    updates, new_opt_state = state.tx.update(grads, opt_state, state.params)
    return trainable(optax.apply_updates(state.params, updates)), new_opt_state

  # One conditional rather than a select per leaf: on CPU each select (params, both Adam moments)
  # and each per-leaf finiteness test was a kernel of its own (~400 of them in the demo's step;
  # its compile 35-40 s -> 15-17 s). Only trainable leaves pass through it; frozen ones stay
  # untouched.
  trained, new_opt_state = jax.lax.cond(ok, update, lambda o: (trainable(state.params), o),
                                        state.opt_state)
  trained = iter(trained)
  params = jax.tree_util.tree_unflatten(
      treedef, [next(trained) if m else x for x, m in zip(leaves, is_trainable, strict=True)])
  skipped = 1 - ok.astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=new_opt_state,
      nonfinite_total=state.nonfinite_total + skipped,
      nonfinite_consecutive=(state.nonfinite_consecutive + 1) * skipped)
  metrics = dict(terms)
  metrics["grad_norm"] = grad_norm
  if schedule is not None:
    # optax counts applied updates only, so a skipped step does not advance the schedule.
    metrics["lr"] = jnp.asarray(schedule(_adam_count(state.opt_state)), jnp.float32)
  metrics.update(nonfinite=skipped, nonfinite_total=new_state.nonfinite_total,
                 nonfinite_consecutive=new_state.nonfinite_consecutive)
  return new_state, metrics


def _adam_count(opt_state) -> jax.Array:
  """The update counter of the Adam schedule inside the multi_transform state."""
  for leaf_state in jax.tree_util.tree_leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState)):
    if isinstance(leaf_state, optax.ScaleByScheduleState):
      return leaf_state.count
  return jnp.zeros((), jnp.int32)


def colorize(model: nn.Module, variables: dict[str, Any], gray: jax.Array) -> jax.Array:
  """Inference on windows: gray [B, N, H, W, 1] -> ab [B, N, H, W, 2] float32."""
  return model.apply(variables, gray)["ab"].astype(jnp.float32)
