"""The training config (configs/default.py): its check, and the pieces of a run it describes.

`validate_config` raises a one-line ValueError naming the key before any file is touched (train.py
reports it as a usage error); the other functions turn the config into what `train_lib` takes as
plain arguments: the model spec and module, the optimizer and its learning-rate schedule, the batch
keys the step reads, the fresh (sharded) train state and the jitted train step. `trainer.py` builds
its run from these; tests and benchmarks use them to run the same step without the loop.
"""

import functools
import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from tcvc_jax import atomic
from tcvc_jax.data import building as data_building
from tcvc_jax.data import hints as hints_lib
from tcvc_jax.data import input_pipeline
from tcvc_jax.data import sources as data_sources
from tcvc_jax.models import spec as spec_lib
from tcvc_jax.training import losses
from tcvc_jax.training import sharding
from tcvc_jax.training import train_lib

_BATCH_KEYS = ("gray", "ab")
# Added to the batch when config.data.simulated_hints is on (data/hints.py).
_HINT_KEYS = hints_lib.HINT_KEYS


def batch_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The pipeline keys the train step reads: gray and ab, and the hints when simulated."""
  block = config.data.get("simulated_hints")
  return _BATCH_KEYS + (_HINT_KEYS if block is not None and block.get("enabled") else ())


def model_spec(config: ml_collections.ConfigDict) -> spec_lib.ModelSpec:
  """The model a config describes (`config.model` sizes, `config.flow`)."""
  return spec_lib.ModelSpec.from_config(config)


def runtime_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """How the config runs its model: the run-time fields of `config.model` (dtype, unroll, ...)."""
  model = config.model.to_dict()
  return {k: model[k] for k in spec_lib.RUNTIME_KEYS if k in model}


def build_model(config: ml_collections.ConfigDict):
  """The TCVC module of a config, with its run-time options and remat setting."""
  return train_lib.build_model(model_spec(config), remat=config.remat_propagation,
                               **runtime_options(config))


def optimizer(config):
  """(optax transformation, learning-rate schedule) of `config.optim`, as train.py uses them."""
  optim = config.optim
  schedule = train_lib.lr_schedule(optim.learning_rate, optim.milestones, optim.gamma)
  tx = train_lib.make_optimizer(
      learning_rate=optim.learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
      milestones=optim.milestones, gamma=optim.gamma, trainable=optim.trainable)
  return tx, schedule


def jit_train_step(config, state_shardings, mesh, schedule=None):
  """`train_lib.train_step` jitted once: state donated, batch split on data, metrics replicated."""
  step = functools.partial(
      train_lib.train_step, loss_config=train_lib.LossConfig(**config.loss.to_dict()),
      trainable=tuple(config.optim.trainable), schedule=schedule)
  return jax.jit(step, in_shardings=(state_shardings, sharding.data_sharding(mesh)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


def fresh_state(config, model, tx, mesh):
  """(jitted init function whose state is born sharded on `mesh`, abstract state, shardings)."""
  init_fn = lambda: train_lib.create_train_state(jax.random.key(config.seed), model, tx)
  abstract = jax.eval_shape(init_fn)
  shardings = sharding.state_shardings(abstract, mesh)
  return jax.jit(init_fn, out_shardings=shardings), abstract, shardings


def _check_mesh(mesh):
  """mesh.axes and mesh.axis_type, as far as they can be checked without the devices."""
  try:
    sizes = {str(name): int(size) for name, size in mesh.axes}
  except (TypeError, ValueError):
    sizes = {}
  if ("data" not in sizes or list(sizes.values()).count(-1) > 1
      or any(s < 1 and s != -1 for s in sizes.values())):
    raise ValueError(f"mesh.axes must be (name, size) pairs with a 'data' axis (the batch is split "
                     f"over it) and sizes >= 1, one may be -1 (the other devices), e.g. "
                     f"(('data', -1),); got {mesh.axes!r}")
  if mesh.axis_type not in ("auto", "explicit"):
    raise ValueError(f"mesh.axis_type must be 'auto' or 'explicit', got {mesh.axis_type!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError (one line, naming the key) for a config that cannot train."""
  def positive(key, value, allow_zero=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
      want = "a non-negative" if allow_zero else "a positive"
      raise ValueError(f"{key} must be {want} integer, got {value!r}")
  positive("num_train_steps", config.num_train_steps)
  positive("log_every_steps", config.log_every_steps)
  positive("checkpoint_every_steps", config.checkpoint_every_steps)
  positive("eval_every_steps", config.eval_every_steps, allow_zero=True)
  if config.ckpt.max_to_keep is not None:  # None (a config file's): keep every checkpoint
    positive("ckpt.max_to_keep", config.ckpt.max_to_keep)  # 0 kept none: the next run restarted
  positive("data.batch_size", config.data.batch_size)
  _check_mesh(config.mesh)
  positive("data.num_frames", config.data.num_frames)
  if config.data.num_frames < 3:
    raise ValueError(f"data.num_frames must be >= 3 (two anchors and a frame between), got "
                     f"{config.data.num_frames}")
  if not config.optim.learning_rate > 0:
    raise ValueError(f"optim.learning_rate must be positive, got {config.optim.learning_rate!r}")
  milestones = config.optim.milestones
  if not (isinstance(milestones, (tuple, list)) and all(
      isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones)):
    raise ValueError("optim.milestones must be whole numbers of updates >= 0 (e.g. "
                     f"--config.optim.milestones=10000,20000), got {milestones!r}")
  if not config.optim.gamma > 0:
    raise ValueError(f"optim.gamma must be positive, got {config.optim.gamma!r}")
  try:
    spec = model_spec(config)
  except spec_lib.SpecError as e:
    raise ValueError(str(e)) from e
  data = config.data
  if data.get("build", True):  # the dataset is built from `name` and `config`
    try:
      data_building.builder_class(data.name)
    except data_sources.DataError as e:
      raise ValueError(f"data.name: {e}") from e
    try:
      data_building.check_config(data.name, data.config)
    except data_sources.DataError as e:
      raise ValueError(f"data.config: {e}") from e
  try:  # the pipeline's settings, as it reads them; their messages start with the key
    window = input_pipeline.window_spec(data, data.num_frames)
    input_pipeline.hint_spec(data)
  except ValueError as e:
    raise ValueError(f"data.{e}") from e
  if window.crop_size is not None:  # whole frames (None): their size is known once read
    spec.check_size(*window.crop_size, "data.crop_size")
  size = config.eval.network_size
  if size is not None:  # n or (height, width), as the validation reads it
    hw = (size, size) if isinstance(size, int) else size
    if not (isinstance(hw, (tuple, list)) and len(hw) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in hw)):
      raise ValueError(f"eval.network_size must be an integer, (height, width) or None, got "
                       f"{size!r}")
    spec.check_size(*hw, "eval.network_size")
  if config.loss.criterion not in losses.CRITERIA:
    raise ValueError(f"loss.criterion must be one of {', '.join(losses.CRITERIA)}, got "
                     f"{config.loss.criterion!r}")
  if config.model.dtype not in ("float32", "bfloat16", "float64"):
    raise ValueError("model.dtype must be float32, bfloat16 or float64, "
                     f"got {config.model.dtype!r}")
  unknown = sorted(set(config.optim.trainable) - set(_TOP_LEVEL))
  if unknown:
    raise ValueError(f"optim.trainable: unknown sub-network(s) {', '.join(unknown)}; the model has "
                     f"{', '.join(_TOP_LEVEL)}")


_TOP_LEVEL = ("L_fea_extractor", "channel_reduction", "weigting", "feature_refine", "fea_key",
              "flow")


def log_parameter_overview(params, trainable) -> None:
  """Logs each top-level module's parameter count, trainable or frozen."""
  for name in sorted(params):
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params[name]))
    logging.info("params %-20s %12d  %s", name, count,
                 "trainable" if name in trainable else "frozen")


def check_outside_data(data, workdir):
  """A workdir in the run's data folders would mix its files (images/ read as clips) into them."""
  for key in [k for k in ("manual_dir", "data_dir") if data.get(k)]:
    if atomic.is_within(workdir, data.get(key)):
      same = os.path.realpath(workdir) == os.path.realpath(data.get(key))
      raise ValueError(f"{workdir} is {'' if same else 'inside '}the folder of the training data "
                       f"(config.data.{key}={data.get(key)}): use another --workdir")


def eval_size_check(config):
  """None, or `check(name, height, width)` for the validation clips when they run at their own
  size (`eval.network_size` None): a size the model cannot take is found before training, not at
  the first validation (the demo's step 500)."""
  if not config.eval_every_steps or config.eval.get("network_size"):
    return None
  spec = model_spec(config)

  def check(name, height, width):
    try:
      spec.check_size(height, width, f"validation clip {name!r} is")
    except spec_lib.SpecError as e:
      raise ValueError(f"{e}; set eval.network_size (e.g. --config.eval.network_size=256) to run "
                       "the validation clips at one size") from None

  return check


CONFIG_FILE = "config.json"


def write_run_config(workdir: str, text: str, step: int) -> str | None:
  """Writes the run's config (`workdir/config.json`, process 0 only).

  A run resumed at `step` with settings that differ from its config.json's keeps that file as
  `config.until_step_<step>.json` and says which settings changed (a changed learning rate or loss
  weight is easy to forget, and the config.json it replaces was the only record of the first part
  of the run). Returns the kept file's path, or None.
  """
  if jax.process_index() != 0:
    return None
  path = os.path.join(workdir, CONFIG_FILE)
  before = None
  if step > 0:
    try:
      with open(path, encoding="utf-8") as f:
        before = f.read()
    except (OSError, UnicodeDecodeError):
      before = None  # none (an older run's folder) or unreadable: nothing to compare with
  kept = None
  if before is not None and before.strip() != text.strip():
    try:
      old = json.loads(before)
    except ValueError:
      old = None
    changes = (config_changes(old, json.loads(text)) if isinstance(old, dict)
               else ["(the previous config.json is not JSON)"])
    if changes:
      kept = _free_name(os.path.join(workdir, f"config.until_step_{step}"), ".json")
      atomic.write_text(kept, before)
      shown = "; ".join(changes[:12]) + (f"; and {len(changes) - 12} more" if len(changes) > 12
                                         else "")
      logging.warning("resumed at step %d with settings that differ from this run's: %s (the "
                      "previous config.json is kept as %s)", step, shown, os.path.basename(kept))
  atomic.write_text(path, text, overwrite=True)
  return kept


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
  """'key: old -> new' for every setting (dotted key) whose value differs between two configs."""
  flat_before, flat_after = _flatten(before), _flatten(after)
  show = lambda d, k: _short(json.dumps(d[k])) if k in d else "(none)"
  return [f"{k}: {show(flat_before, k)} -> {show(flat_after, k)}"
          for k in sorted(set(flat_before) | set(flat_after))
          if flat_before.get(k, _MISSING) != flat_after.get(k, _MISSING)]


_MISSING = object()


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict) or not tree:
    return {prefix.rstrip("."): tree} if prefix else {}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}{key}."))
  return out


def _short(text, limit=60):
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _free_name(stem, ext):
  """stem + ext, or stem.2 + ext, ... : a name no file has."""
  path, k = stem + ext, 1
  while os.path.lexists(path):
    k += 1
    path = f"{stem}.{k}{ext}"
  return path
