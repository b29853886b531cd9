"""The training loop: `train_and_evaluate(config, workdir)`.

Sets up the mesh, data, state (restored, pretrained or fresh), the jitted step and the writers,
then trains with periodic logging, checkpoints and validation. SIGTERM (or a JAX preemption
notice on multi-host jobs) saves a checkpoint at the next step boundary and returns normally.
"""

import contextlib
import fcntl
import functools
import os
import socket
import sys
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from tcvc_jax import atomic
from tcvc_jax import converted
from tcvc_jax import flag_parsing
from tcvc_jax.data import building as data_building
from tcvc_jax.data import input_pipeline
from tcvc_jax.models import spec as spec_lib
from tcvc_jax.training import checkpointing
from tcvc_jax.training import metric_writers
from tcvc_jax.training import pretrained
from tcvc_jax.training import sharding
from tcvc_jax.training import stopping
from tcvc_jax.training import train_config
from tcvc_jax.training import validation


def tell(message: str) -> None:
  """A line for the user on stderr (process 0), and in the log."""
  logging.info("%s", message)
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


def _datasets(config):
  """Training and validation datasets; on multi-host jobs process 0 prepares the data first."""
  data = config.data
  build = data.get("build", True)
  if build and jax.process_count() > 1:
    sharding.agree("building the dataset", lambda: jax.process_index() == 0 and (
        data_building.build(data.name, data.data_dir, config=data.config,
                            manual_dir=data.manual_dir)))
    # The others open what process 0 built: their own copies of the clips (other mtimes) must not
    # look like changed clips and start a rebuild of a shared data_dir.
    build = jax.process_index() == 0
  eval_split = data.eval_split if config.eval_every_steps else None
  data_cfg = dict(data.to_dict(), eval_split=eval_split, build=build,
                  eval_size_check=train_config.eval_size_check(config))
  return sharding.agree("opening the dataset", lambda: input_pipeline.get_datasets(
      data_cfg, num_frames=data.num_frames, global_batch_size=data.batch_size, seed=config.seed))


def _initial_state(config, model, tx, mesh, mngr, train_iter, workdir, spec):
  """(state, step, shardings): restored, pretrained or fresh, born with replicated shardings."""
  init_fn, abstract, shardings = train_config.fresh_state(config, model, tx, mesh)
  # Resume order: the latest readable checkpoint in the workdir (state and data iterator),
  # else config.init_from (converted weights or an earlier run), else scratch.
  try:
    restored = checkpointing.restore_latest(mngr, sharding.with_shardings(abstract, shardings),
                                            train_iter)
  except RuntimeError as e:
    _check_same_model(workdir, spec, cause=e)
    raise
  if restored is not None:
    tell(f"resumed from the checkpoint at step {restored[1]}")
    return restored[0], restored[1], shardings
  state = init_fn()
  loaded = set()
  if config.init_from:
    weights = sharding.agree("reading config.init_from", lambda: pretrained.load(config.init_from))
    state, loaded = pretrained.apply(state, weights, mesh)
  random_frozen = sorted(set(state.params) - set(config.optim.trainable) - loaded)
  if random_frozen:
    message = (f"frozen sub-networks {random_frozen} have random weights; give them pretrained "
               "weights through config.init_from or train them (config.optim.trainable)")
    if not config.allow_random_frozen:
      raise ValueError(message)
    logging.warning(message)
  logging.info("starting at step 0 (%s)", "init_from" if loaded else "scratch")
  return state, 0, shardings


def _check_same_model(workdir, spec, fields=spec_lib.FIELDS, cause=None):
  """Raises RuntimeError naming the `fields` in which the model recorded in `workdir` differs
  from `spec`; returns the recorded model (None if the workdir records none)."""
  try:
    theirs = checkpointing.read_model_spec(workdir)
  except spec_lib.SpecError:
    return None
  other = ", ".join(f"{f}: {getattr(theirs, f)} there, {getattr(spec, f)} in this config"
                    for f in fields if getattr(theirs, f) != getattr(spec, f))
  if other:
    raise RuntimeError(f"{workdir} holds a run of another model ({other}): use a new workdir, "
                       "or that run's model config (its config.json)") from cause
  return theirs


RunControl = stopping.RunControl  # train.py's handle on a run (stop requests)


def _average(history):
  """Mean of per-step metrics (loss terms over applied steps only); counters: last value."""
  host = jax.device_get(history)
  out = {}
  for key in host[0]:
    values = np.array([float(h[key]) for h in host])
    if key.startswith("nonfinite_") or key == "lr":
      out[key] = values[-1]
    elif key == "nonfinite":
      out[key] = values.sum()
    else:
      finite = values[np.isfinite(values)]
      out[key] = finite.mean() if len(finite) else float("nan")
  return out


def _write_run_files(config, workdir, writer, spec, start, control):
  checkpointing.write_model_spec(workdir, spec)
  write = functools.partial(train_config.write_run_config, workdir,
                            config.to_json_best_effort(indent=1), start)
  if start:  # a resume's settings become the run's once a step has run with them
    control.on_started_loop(write)
  else:
    write()
  writer.write_hparams(config.to_dict())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       control: RunControl | None = None) -> dict[str, Any]:
  """Trains (resuming if `workdir` has a checkpoint) and evaluates.

  Args:
    config: a config from `configs/` (see configs/default.py for the fields).
    workdir: where checkpoints, metrics, TensorBoard files and images go.

  Returns:
    {'step', 'preempted', 'train': last logged train metrics, 'eval': last validation scalars}.
  """
  train_config.validate_config(config)
  control = control or RunControl()
  workdir = os.path.abspath(workdir)
  if jax.device_count() != jax.local_device_count() * jax.process_count():  # seen by every process
    raise ValueError(f"the job's processes have different numbers of devices ({jax.device_count()} "
                     f"in all over {jax.process_count()} processes, {jax.local_device_count()} "
                     "here); give each the same number")
  if jax.process_count() > 1:
    control.joined_job()
  watch = stopping.FailureWatch()  # a multi-host job ends together when one process fails
  control.on_end_at_once(lambda: watch.report_leaving("was stopped at once by a second signal"))
  try:
    return _in_workdir(config, workdir, control)
  except BaseException as e:
    watch.report(e)
    raise
  finally:
    watch.close()


def _in_workdir(config, workdir, control):
  """`train_and_evaluate` once the job's processes are known to fit together."""
  sharding.check_same_config(config.to_dict())
  # Each host looks at the workdir and data on its own disk (the same ones where they are shared).
  sharding.agree("checking its workdir", lambda: _check_workdir(config, workdir))
  try:  # (validate_config checked what needs no devices)
    mesh = sharding.create_mesh(config.mesh.axes, config.mesh.axis_type)
  except ValueError as e:
    raise type(e)(f"mesh.axes: {e}") from None  # (a cli.UsageError where the devices tell)
  try:
    sharding.check_batch_size(config.data.batch_size, mesh)
  except ValueError as e:
    raise type(e)(f"data.batch_size: {e}") from None
  logging.info("mesh %s over %d devices, %d processes", dict(mesh.shape), jax.device_count(),
               jax.process_count())
  # A new workdir is removed again if the run ends (an error, a signal) before its first step:
  # then it holds nothing worth keeping. In a folder of the user's, the files the run made go.
  folder = atomic.NewFolder(workdir, own_names=(
      checkpointing.MODEL_FILE, train_config.CONFIG_FILE, checkpointing.CHECKPOINT_DIR, LOCK_FILE,
      metric_writers.METRICS_FILE, metric_writers.TENSORBOARD_DIR, metric_writers.IMAGES_DIR))
  control.on_started_loop(folder.keep)
  try:
    with _workdir_lock(workdir):
      return _train(config, workdir, control, mesh)
  finally:
    folder.discard()  # nothing happens once kept


def _check_workdir(config, workdir):
  """Raises where `workdir` (or the data's place beside it) cannot hold this run."""
  converted.check_utf8(workdir, "workdir")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir} is a file, not a folder")
  if (os.path.lexists(os.path.join(workdir, "config.json"))
      and not os.path.lexists(os.path.join(workdir, checkpointing.MODEL_FILE))):
    # A run writes model.json before its config.json: this one is another tool's (eval.py's).
    raise ValueError(f"{workdir} holds a config.json that no train.py run wrote (an eval.py "
                     "result?); the run's config.json would replace it: use another --workdir")
  left = [n for n in (checkpointing.MODEL_FILE, metric_writers.METRICS_FILE)  # (not empty ones)
          if os.path.isfile(p := os.path.join(workdir, n)) and os.path.getsize(p)
          and not checkpointing.is_workdir(workdir)]
  if left:  # a run's files without its checkpoints/: a fresh run would replace them
    raise ValueError(f"{workdir} holds {' and '.join(left)} but no checkpoints/ to resume from; "
                     "this run would replace them: use another --workdir, or move them away")
  if converted.is_converted_dir(workdir):
    raise ValueError(f"{workdir} is a converted checkpoint (python -m tcvc_jax.convert), not a "
                     "workdir: use another --workdir (--config.init_from loads such a folder)")
  train_config.check_outside_data(config.data, workdir)


LOCK_FILE = ".train.lock"


@contextlib.contextmanager
def _workdir_lock(workdir):
  """Holds `workdir`'s lock (process 0 of a job): a second train.py there stops with one line
  instead of resuming from the first one's checkpoints and interleaving its own with them. The
  system drops the lock when the process ends, however it ends; the lock file is removed when the
  run ends (a run killed at once leaves it, unlocked, for the next); a file system without locks
  (some network ones) runs unlocked."""
  path = os.path.join(workdir, LOCK_FILE)
  with contextlib.ExitStack() as stack:

    def take():
      if jax.process_index() != 0:
        return None
      while True:
        f = open(path, "a+")  # pylint: disable=consider-using-with
        try:
          fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          f.seek(0)
          owner = f.read().strip() or "another process"
          f.close()
          raise RuntimeError(f"{workdir} is in use by another train.py ({owner}); wait for it to "
                             "end, or use another --workdir") from None
        except OSError:
          return stack.enter_context(f)  # no locks on this file system
        try:  # the file locked is still the one named so (an ending run removes it, locked)
          if os.path.samestat(os.fstat(f.fileno()), os.stat(path)):
            return stack.enter_context(f)
        except FileNotFoundError:
          pass
        f.close()

    f = sharding.agree("taking the workdir's lock", take)  # every process of the job stops at once
    if jax.process_index() != 0:
      yield
      return
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    try:
      yield
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # while locked: a run that opened it since finds it gone, and retries


def _check_resumed_model(workdir, spec):
  """Raises where the run in `workdir` (if any) has weights of other shapes than `spec`'s."""
  if not checkpointing.is_workdir(workdir):
    return
  # Sizes that change the weights' shapes: no checkpoint of the run could be restored (each would
  # be tried, and reported as unreadable). The classical flow's options may change.
  theirs = _check_same_model(workdir, spec, [f for f in spec_lib.FIELDS if f != "classical_flow"])
  before = spec.classical_flow if theirs is None else theirs.classical_flow
  if before != spec.classical_flow:  # said, as it changes the model colorize will run
    logging.warning("the classical flow's options change from %s to %s: the checkpoints saved "
                    "from now on (and model.json) use the new ones", dict(before or ()),
                    dict(spec.classical_flow or ()))


def _train(config, workdir, control, mesh):
  """`train_and_evaluate` in `workdir` (a folder) over `mesh`."""
  spec = train_config.model_spec(config)
  sharding.agree("reading the workdir's model.json", lambda: _check_resumed_model(workdir, spec))
  model = train_config.build_model(config)
  tx, schedule = train_config.optimizer(config)
  train_ds, eval_ds = _datasets(config)  # (first: data that fails leaves no metrics files)
  writer = sharding.agree("opening the metric files", lambda: metric_writers.MetricWriter(
      workdir, write_files=jax.process_index() == 0, tensorboard=config.log.tensorboard))
  train_iter = iter(train_ds)
  mngr = checkpointing.create_manager(workdir, save_every=config.checkpoint_every_steps,
                                      max_to_keep=config.ckpt.max_to_keep,
                                      async_save=config.ckpt.async_save)
  validator = None
  if eval_ds is not None:
    validator = validation.Validator(
        model, eval_ds, interval_length=config.eval.interval_length,
        network_size=config.eval.network_size, num_images=config.eval.num_images,
        image_frames=config.eval.image_frames)
  preemption = stopping.Preemption(mngr, control)
  with converted.quiet_orbax_errors():  # a failed save: said once, by its raise
    try:
      with jax.set_mesh(mesh):
        state, start, shardings = _initial_state(config, model, tx, mesh, mngr, train_iter,
                                                 workdir, spec)
        # Only now that the checkpoints fit this config: a failed resume leaves the run's files.
        sharding.agree("writing the run's files",
                       lambda: _write_run_files(config, workdir, writer, spec, start, control))
        writer.resume_at(start)
        train_config.log_parameter_overview(state.params, config.optim.trainable)
        step_fn = train_config.jit_train_step(config, shardings, mesh, schedule)
        result = _loop(config, state, start, step_fn, train_iter, mngr, writer, validator,
                       preemption, sharding.data_sharding(mesh), control)
    finally:
      preemption.close()
      try:
        checkpointing.finish(mngr)
      finally:
        with contextlib.suppress(Exception):  # after a failed save, it raises that failure again
          mngr.close()
        writer.close()
  return result


def _loop(config, state, start, step_fn, train_iter, mngr, writer, validator, preemption,
          data_sharding, control):
  """Runs steps start+1 .. num_train_steps; see `train_and_evaluate` for the return value."""
  total = config.num_train_steps
  limit = config.optim.max_consecutive_nonfinite
  result = {"step": start, "preempted": False, "train": {}, "eval": {}}
  show_bar = config.log.progress_bar and jax.process_index() == 0
  bar = None
  history, previous = [], None
  last_log = (time.perf_counter(), start)
  step = start
  keys = train_config.batch_keys(config)
  for step in range(start + 1, total + 1):
    local = next(train_iter)
    batch = sharding.global_batch({k: local[k] for k in keys}, data_sharding)
    if bar is None and show_bar:
      cache_off = flag_parsing.compilation_cache_off(config.get("compilation_cache", "auto"))
      print("compiling the train step (once per shape"
            + (")" if cache_off else "; a second run reads the compilation cache)"),
            file=sys.stderr, flush=True)
    state, metrics = step_fn(state, batch)
    if bar is None:
      # The bar (and its ETA) starts after the first step, so the compilation does not count.
      jax.block_until_ready(metrics)
      compile_seconds = time.perf_counter() - last_log[0]
      logging.info("first step (with compilation) took %.1f s", compile_seconds)
      bar = tqdm.tqdm(total=total, initial=step - 1, unit="step", dynamic_ncols=True,
                      disable=not show_bar, file=sys.stderr)
      last_log = (time.perf_counter(), step)
      control.started_loop()
    # Checked one step late, so the host never waits for the step it just queued.
    if previous is not None and int(previous["nonfinite_consecutive"]) >= limit:
      raise FloatingPointError(
          f"{limit} consecutive steps (up to step {step - 1}) had a non-finite loss or "
          "gradient; none was applied, and the last checkpoint holds finite weights. Lower "
          "the learning rate or check the data.")
    previous = metrics
    history.append(metrics)
    bar.update(1)
    preempted = preemption.reached(step)  # (then the steps since the last log are logged too)
    if step % config.log_every_steps == 0 or step == total or preempted:
      scalars = _average(history)
      now = time.perf_counter()
      if step > last_log[1]:
        scalars["steps_per_sec"] = (step - last_log[1]) / max(now - last_log[0], 1e-9)
      logged = (step - len(history) + 1, step)  # the steps averaged
      last_log, history = (now, step), []
      writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
      bar.set_postfix(loss=f"{scalars['loss']:.4g}")
      if not show_bar and jax.process_index() == 0:  # (a pod's log file: a line per interval)
        print(f"step {step}/{total}: loss {scalars['loss']:.4g}" + (
            f", {scalars['steps_per_sec']:.3g} steps/s" if "steps_per_sec" in scalars else ""),
              file=sys.stderr, flush=True)
      result["train"], result["train_steps"] = scalars, logged
    checkpointing.save(mngr, step, state, train_iter, force=preempted or step == total)
    if preempted:
      bar.close()  # before the message, which would otherwise land on the bar's line
      checkpointing.finish(mngr)  # (said once it is true: a second signal stops the wait)
      logging.warning("stop requested (Ctrl-C, SIGTERM or a preemption notice): saved the "
                      "checkpoint at step %d; stopping", step)
      result.update(step=step, preempted=True)
      return result
    if validator is not None and (step % config.eval_every_steps == 0 or step == total):
      result["eval"] = _evaluate(validator, state, step, writer)
      last_log = (time.perf_counter(), step)  # steps/s leaves the validation time out
    writer.flush()
  if bar is not None:
    bar.close()
  result["step"] = step
  if start >= total:
    logging.warning("nothing to train: the checkpoint is at step %d, num_train_steps is %d",
                    start, total)
  return result


def _evaluate(validator, state, step, writer):
  t0 = time.perf_counter()
  scalars, images = validator.run({"params": state.params, "batch_stats": state.batch_stats})
  scalars["seconds"] = time.perf_counter() - t0
  writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
  writer.write_images(step, images)
  return scalars
