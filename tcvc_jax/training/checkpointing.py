"""Orbax checkpoints of training runs, and a workdir's model for inference (`load_workdir`).

A run's workdir holds `checkpoints/<step>/` with two items: `state` (the train state) and
`data_iter` (the grain iterator state of every process), and `model.json` (the model's keyword
arguments), so a workdir is enough to rebuild the model for inference (`load_workdir`).
"""

import contextlib
import json
import os
import shutil
import time
from typing import Any

from absl import logging
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from tcvc_jax import atomic
from tcvc_jax import converted
from tcvc_jax import porting
from tcvc_jax.models import spec as spec_lib
from tcvc_jax.training import sharding

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints_corrupt"
MODEL_FILE = "model.json"
# Keyword arguments of the compute precision: chosen at load time, not stored with the weights.


def create_manager(workdir: str, *, save_every: int, max_to_keep: int,
                   async_save: bool = True) -> ocp.CheckpointManager:
  """The run's CheckpointManager: keeps `max_to_keep` checkpoints, saves every `save_every`."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=max(1, save_every),
      enable_async_checkpointing=async_save, create=True,
      # A save cut short (a second Ctrl-C, a kill) leaves a *.orbax-checkpoint-tmp folder: removed
      # when the run starts again.
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
                               options=options)


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (a full disk, a folder that became read-only)."""


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_iter: Any,
         force: bool = False) -> bool:
  """Saves state and iterator at `step` if due (always with `force`); returns whether it saved.

  Raises:
    CheckpointWriteError: this save, or an earlier one still being written, failed.
  """
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            data_iter=grain.checkpoint.CheckpointSave(data_iter))
  with _write_errors(mngr):
    return mngr.save(step, args=args, force=force,
                     custom_metadata={"devices": _device_count(state)})


def _device_count(state):
  """How many devices the arrays of `state` (or their ShapeDtypeStructs) are placed on."""
  return next((len(leaf.sharding.device_set) for leaf in jax.tree.leaves(state)
               if getattr(leaf, "sharding", None) is not None), None)


def saved_device_count(mngr: ocp.CheckpointManager, step: int) -> int | None:
  """How many devices the run that saved checkpoint `step` trained on; None where it is not
  recorded (checkpoints written before it was) or cannot be read."""
  try:
    count = (mngr.metadata(step).custom_metadata or {}).get("devices")
  except Exception:  # pylint: disable=broad-exception-caught
    return None  # any damage was told by the restore; this is only a note
  return count if isinstance(count, int) and not isinstance(count, bool) else None


def finish(mngr: ocp.CheckpointManager) -> None:
  """Waits for the saves being written. Raises CheckpointWriteError where one failed."""
  with _write_errors(mngr):
    mngr.wait_until_finished()


@contextlib.contextmanager
def _write_errors(mngr):
  """An Orbax save's failure (TensorStore's message of ~1 kB, e.g. on a full disk) as one line."""
  try:
    yield
  except (KeyboardInterrupt, CheckpointWriteError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    if "os_error_code" not in str(e) and not isinstance(e, OSError):
      raise  # not a write failure
    try:
      kept = mngr.latest_step()
    except Exception:  # pylint: disable=broad-except
      kept = None
    resume = (f"the same command resumes from the last saved one (step {kept})" if kept is not None
              else "no checkpoint was saved")
    raise CheckpointWriteError(f"cannot save a checkpoint in {mngr.directory}: "
                               f"{converted.write_failure(e)}; {resume}") from e


def _quarantine(mngr: ocp.CheckpointManager, step: int) -> None:
  """Moves an unreadable step out of the manager's directory (kept for inspection)."""

  def move():
    if jax.process_index() != 0:
      return
    src = os.path.join(str(mngr.directory), str(step))
    dst_root = os.path.join(os.path.dirname(str(mngr.directory)), CORRUPT_DIR)
    os.makedirs(dst_root, exist_ok=True)
    dst = os.path.join(dst_root, f"{step}-{int(time.time())}")
    if os.path.exists(src):
      shutil.move(src, dst)
      logging.warning("moved unreadable checkpoint %s to %s", src, dst)

  sharding.agree(f"moving the unreadable checkpoint at step {step} aside", move)
  mngr.reload()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any,
                   data_iter: Any) -> tuple[Any, int] | None:
  """Restores the newest readable checkpoint into `abstract_state`'s shardings, and `data_iter`.

  Checkpoints newer than the one restored that fail to restore (truncated or missing files) are
  moved aside with a warning. If none restores, nothing is moved and the first error is raised:
  then the checkpoints do not fit this config (or all are damaged), and starting from scratch
  silently would be wrong.

  Args:
    mngr: the run's manager.
    abstract_state: ShapeDtypeStructs with target shardings (`sharding.with_shardings`).
    data_iter: the training iterator; its state is restored in place.

  Returns:
    (state, step), or None if the workdir has no checkpoint.

  Raises:
    RuntimeError: no checkpoint could be restored.
  """
  failed = []
  state_only = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
  for step in sorted(mngr.all_steps(), reverse=True):
    saved_by = _iterator_processes(mngr, step)
    # Every process resumes from the same step: one that cannot read its own iterator position
    # (on its own disk) makes the step unusable for all, before any of them starts restoring.
    if saved_by == jax.process_count() and not sharding.all_processes(
        _iterator_readable(mngr, step)):
      logging.warning("checkpoint at step %d in %s lacks a readable data iterator file of some "
                      "process; trying the previous one", step, mngr.directory)
      failed.append((step, RuntimeError("a process's data iterator file is missing or damaged")))
      continue
    try:
      if saved_by not in (None, jax.process_count()):
        # Each process saved its own iterator position: a job of another size cannot take them.
        restored = mngr.restore(step, args=state_only)
        logging.warning("the checkpoint at step %d was saved by a job of %d process%s, this one "
                        "has %d: the model and optimizer resume, the training data starts again "
                        "from its beginning", step, saved_by, "" if saved_by == 1 else "es",
                        jax.process_count())
      else:
        restored = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
    except Exception as e:  # pylint: disable=broad-exception-caught
      # Orbax and TensorStore raise many types for damaged files; any of them means "unusable".
      # An iterator file that reads but does not fit (data.num_workers changed) is no damage:
      # the model and optimizer resume, the data starts again.
      readable = _iterator_readable(mngr, step)
      restored = _restored_or_none(mngr, step, state_only) if readable else None
      if restored is None:
        logging.warning("checkpoint at step %d in %s is unreadable (%s); trying the previous one",
                        step, mngr.directory, short_reason(e))
        failed.append((step, e))
        continue
      logging.warning("the checkpoint at step %d restores its model and optimizer but not the "
                      "training data's position (%s; data.num_workers changed?): the data starts "
                      "again from its beginning", step, short_reason(e))
    for bad, _ in failed:
      _quarantine(mngr, bad)
    _tell_device_count(saved_device_count(mngr, step), restored["state"], step)
    return restored["state"], step
  if failed:
    step, error = failed[0]
    raise RuntimeError(
        f"no checkpoint in {mngr.directory} could be restored (steps {[s for s, _ in failed]}); "
        "they were written with another model, optimizer or data pipeline config "
        "(data.num_workers), or are damaged. Use a new workdir, or the same config. First "
        f"error, at step {step}: {short_reason(error)}"
    ) from error
  return None


def _tell_device_count(saved, state, step):
  """Logs what a resume on another number of devices than the saving run's changes."""
  now = _device_count(state)
  if None not in (saved, now) and saved != now:
    logging.warning("the checkpoint at step %d was saved by a run on %d device%s, this one has %d: "
                    "the global batch (data.batch_size) is the same, split otherwise, so training "
                    "goes on as it would have, to rounding (sums over the devices are taken in "
                    "another order), not bit for bit", step, saved, "s" * (saved != 1), now)


def _iterator_folder(mngr, step):
  """Checkpoint `step`'s data iterator folder (one process_I-of-N.json per process)."""
  return os.path.join(os.fspath(mngr.directory), str(step), "data_iter")


def _iterator_processes(mngr, step):
  """How many processes saved the data iterator of checkpoint `step` (its process_I-of-N.json
  files), or None where that is not known."""
  try:
    counts = {n.rsplit("-of-", 1)[1].split(".")[0]
              for n in os.listdir(_iterator_folder(mngr, step)) if "-of-" in n}
  except OSError:
    return None
  return int(counts.pop()) if len(counts) == 1 and next(iter(counts)).isdigit() else None


def _restored_or_none(mngr, step, args):
  """Checkpoint `step` restored with `args` (e.g. without its data iterator), or None."""
  try:
    return mngr.restore(step, args=args)
  except Exception:  # pylint: disable=broad-exception-caught
    return None


def _iterator_readable(mngr, step):
  """Whether this process's data iterator file of checkpoint `step` reads as JSON."""
  name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
  try:
    with open(os.path.join(_iterator_folder(mngr, step), name)) as f:
      json.load(f)
    return True
  except (OSError, ValueError):
    return False


# ----------------------------------------------------------------------------- model of a workdir


def write_model_spec(workdir: str, spec: spec_lib.ModelSpec) -> None:
  """Writes the model description to `workdir/model.json` (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  atomic.write_json(os.path.join(workdir, MODEL_FILE), {"model": spec.to_json()}, overwrite=True)


def is_workdir(path: str) -> bool:
  """Whether `path` is a train.py workdir (has `model.json` and a checkpoint folder)."""
  return (os.path.isfile(os.path.join(path, MODEL_FILE))
          and os.path.isdir(os.path.join(path, CHECKPOINT_DIR)))


def read_model_spec(workdir: str) -> spec_lib.ModelSpec:
  """The model description in `workdir/model.json`."""
  path = os.path.join(workdir, MODEL_FILE)
  try:
    with open(path) as f:
      data = json.load(f)
    return spec_lib.ModelSpec.from_json(data.get("model", data.get("model_kwargs")))
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise spec_lib.SpecError(f"{path}: not a model description ({e})") from e


class DamagedCheckpointError(OSError):
  """A checkpoint's files cannot be read."""


def short_reason(err: BaseException, limit: int = 400) -> str:
  """The gist of an Orbax / TensorStore error on one line: TensorStore appends its whole spec (kB
  of JSON) to every message."""
  text = " ".join(str(err).split()).split(" [tensorstore_spec", 1)[0]
  text = f"{type(err).__name__}: {text}" if text else type(err).__name__
  return text if len(text) <= limit else text[:limit - 3] + "..."


def load_workdir(workdir: str, step: int | None = None
                 ) -> tuple[dict[str, Any], spec_lib.ModelSpec, int]:
  """Weights and model of a train.py run, for inference (`tcvc_jax.load`).

  Args:
    workdir: the run's workdir.
    step: checkpoint step; None for the latest.

  Returns:
    (variables {'params', 'batch_stats'} of NumPy arrays, the ModelSpec, the step).

  Raises:
    FileNotFoundError: not a workdir, or it has no checkpoint.
    DamagedCheckpointError: the checkpoint's files cannot be read.
    porting.ConversionError: the workdir's model.json does not match the checkpoint's weights.
  """
  workdir = os.path.abspath(workdir)
  if not is_workdir(workdir):
    raise FileNotFoundError(f"{workdir}: not a train.py workdir (no {MODEL_FILE} and "
                            f"{CHECKPOINT_DIR}/)")
  mngr = ocp.CheckpointManager(os.path.join(workdir, CHECKPOINT_DIR),
                               options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                              "data_iter": grain.checkpoint.CheckpointHandler()})
  steps = sorted(mngr.all_steps())
  if step is None and not steps:
    raise FileNotFoundError(f"{workdir}: no checkpoint yet")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"{workdir}: no checkpoint at step {step} (there are: "
                            f"{', '.join(map(str, steps)) or 'none'})")
  step = steps[-1] if step is None else step
  try:
    metadata = mngr.item_metadata(step)["state"]
    device = jax.local_devices()[0]
    target = {c: jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                       sharding=jax.sharding.SingleDeviceSharding(device)),
        dict(metadata[c])) for c in ("params", "batch_stats")}
    # Only params and batch_stats: the optimizer state is not needed for inference.
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))["state"]
  except Exception as e:  # pylint: disable=broad-exception-caught
    # Orbax and TensorStore raise many types for damaged files.
    earlier = [s for s in steps if s < step]
    other = (f"; the earlier checkpoint(s) {', '.join(map(str, earlier))} can be used: give "
             f"{os.path.join(workdir, CHECKPOINT_DIR, str(earlier[-1]))} as the checkpoint, or "
             f"convert it with python -m tcvc_jax.convert {workdir} OUT --step {earlier[-1]}"
             if earlier else "")
    raise DamagedCheckpointError(
        f"{workdir}: the checkpoint at step {step} cannot be read, a damaged file? "
        f"({short_reason(e)}){other}") from e
  finally:
    mngr.close()
  variables = {c: jax.tree_util.tree_map(np.asarray, dict(restored[c]))
               for c in ("params", "batch_stats")}
  spec = read_model_spec(workdir)
  porting.check_variables(variables, "tcvc", spec, workdir, MODEL_FILE)
  return variables, spec, int(step)
