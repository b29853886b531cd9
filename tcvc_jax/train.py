"""python -m tcvc_jax.train (or train.py): train TCVC; without flags, the CPU demo into runs/demo.

  python -m tcvc_jax.train --config configs/default.py --workdir runs/tcvc \\
      --config.data.manual_dir=/data/clips --config.init_from=weights/siggraph17,weights/flownet2

Multi-host jobs start the same command on every host: on Cloud TPU pods, SLURM and Open MPI as it
is; elsewhere with JAX_COORDINATOR_ADDRESS=host:port of process 0, JAX_NUM_PROCESSES and
JAX_PROCESS_ID set on each. SIGINT / SIGTERM during training: the checkpoint is saved, then exit 0
(a second signal stops at once); before the first step (while XLA compiles) nothing is lost, so it
stops at once with exit 130 (in a multi-host job, where no process may end alone, after the first
step, saving it). Exit codes: see tcvc_jax.cli.
"""

import os
import shutil
import sys

from tcvc_jax import cli
from tcvc_jax import flag_parsing

_USAGE = __doc__.split("\n\n")[0]
_EXAMPLES = """\
presets (--config FILE[:PRESET], FILE a path or one of the names below):
  demo            the CPU demo: tiny model, classical flow, synthetic clips (default)
  demo:short      the demo, 300 steps on the unpainted clips (the end-to-end test)
  default         the paper: SRL + pixel loss, FlowNet2, DAVIS + Videvo
  default:released  the released YAML: SRL only (no colour ground truth needed)
  default:tiny    a few steps of a tiny model (tests)
  tpu_pod         the paper's setup on a TPU pod slice

main config keys (--config.KEY=VALUE; every key with its value: --show_config):
  num_train_steps, checkpoint_every_steps, eval_every_steps, log_every_steps, seed, init_from,
  model.dtype, model.colorizer_widths, flow.type, loss.reconstruction_weight, loss.criterion,
  optim.learning_rate, optim.milestones, optim.trainable, data.name, data.manual_dir,
  data.batch_size, data.num_frames, data.crop_size, data.simulated_hints.enabled,
  eval.network_size

outputs in WORKDIR: checkpoints/, model.json, config.json, metrics.jsonl, \
TensorBoard events, images/ (a resume with changed settings keeps the config.json it replaces as \
config.until_step_<N>.json)

Ctrl-C / SIGTERM once steps run: a checkpoint is saved and train.py exits 0 (its summary says \
"stopped by a signal"; the same command resumes); before the first step: exit 130, nothing left.
"""


def _colorize_size(config):
  """' --size N' for a model trained on the synthetic clips, the size of those clips (at the
  colorize tool's default, 256, the demo's model scores ~2 dB lower); else ''."""
  from tcvc_jax.data import building  # pylint: disable=g-import-not-at-top
  if config.data.name != "synthetic_clips":
    return ""
  configs = {c.name: c for c in building.builder_class(config.data.name).BUILDER_CONFIGS}
  clips = configs.get(config.data.config or "default")
  if clips is None or (clips.height, clips.width) == (256, 256):
    return ""
  return f" --size {clips.height}" + ("" if clips.height == clips.width else f"x{clips.width}")


def _summary(result, workdir, config):
  lines = [f"finished at step {result['step']}" + (" (stopped by a signal; the checkpoint is saved"
                                                   ", run again to resume)"
                                                   if result["preempted"] else "")]
  train = result.get("train") or {}
  if "loss" in train:
    a, b = result.get("train_steps", (None, None))
    over = "" if a is None else f"step {b}: " if a >= b else f"steps {a}-{b}: "
    lines.append(f"  train loss {train['loss']:.5g} "
                 f"({over}reconstruction {train.get('loss_rec', 0):.4g}"
                 f", SRL warp terms {train.get('loss_warp1', 0):.4g} + "
                 f"{train.get('loss_warp2', 0):.4g})")
  ev = result.get("eval") or {}
  if "psnr" in ev:
    base = ev.get("psnr_gray")
    lines.append(f"  validation: PSNR {ev['psnr']:.2f} dB against the ground truth "
                 "(higher is better"
                 + (f"; the gray ab=0 baseline scores {base:.2f} dB" if base is not None else "")
                 + f"), CDC {ev.get('cdc', float('nan')):.5f} (colour flicker between frames, "
                 "lower is better)")
  images = os.path.isdir(os.path.join(workdir, "images"))  # written by validation runs only
  lines.append(f"  outputs in {workdir}: checkpoints/ (resume, or colorize with --checkpoint "
               f"{workdir}{_colorize_size(config)}), metrics.jsonl, TensorBoard events"
               + (", images/" if images else ""))
  lines.append(f"  export for PyTorch: python -m tcvc_jax.convert {workdir} model.pth")
  return "\n".join(lines)


def _config_problem(config):
  """The config's first problem in one line, or None (before any folder is made)."""
  from tcvc_jax.training import train_config  # pylint: disable=g-import-not-at-top
  try:
    train_config.validate_config(config)
  except ValueError as e:
    return cli.one_line(e)
  return None


@cli.ends_on_interrupt
def main(argv=None):
  argv = sys.argv if argv is None else argv
  parsed = flag_parsing.parse_train_flags(argv, _USAGE, _EXAMPLES, _config_problem)
  if isinstance(parsed, int):
    return parsed
  config, workdir, verbose = parsed
  from tcvc_jax.training import trainer  # pylint: disable=g-import-not-at-top
  problem = _config_problem(config)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return cli.EXIT_USAGE
  control = trainer.RunControl()

  def work():
    flag_parsing.quiet_third_party_logs(verbose)
    flag_parsing.enable_compilation_cache(config.get("compilation_cache", "auto"))
    from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
    sharding.initialize_distributed()
    result = trainer.train_and_evaluate(config, workdir, control=control)
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_index() == 0:  # (once per job, not once per host)
      print(_summary(result, os.path.abspath(workdir), config), flush=True)
    return cli.EXIT_OK

  return cli.run(work, verbose=verbose, on_signal=lambda _: control.request_stop(),
                 pixels_per_call=step_pixels(config),
                 interrupted_message=lambda: _clean_up_after_interrupt(workdir, control))


def _clean_up_after_interrupt(workdir, control):
  """Tells the job's other processes, if any, that this one ends; removes the checkpoint a run
  stopped at once was writing (`N.orbax-checkpoint-tmp`; a rerun would remove it) and says what it
  leaves: its saved checkpoints, if any, which a rerun resumes."""
  control.ending_at_once()
  from tcvc_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  names = os.listdir(folder) if os.path.isdir(folder) else []
  for name in names:
    if ".orbax-checkpoint-tmp" in name:  # (the writer may still be at it: as far as it goes)
      shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
  steps = sorted(int(n) for n in names if n.isdigit())
  if not steps:
    return "interrupted; no checkpoint saved"
  return (f"interrupted at once; {workdir} keeps its checkpoint of step {steps[-1]}, from which "
          "the same command resumes")


def step_pixels(config):
  """Input pixels of the largest compiled call: a training step (the whole batch) or a
  validation window at a fixed network size; None if not numbers."""
  from tcvc_jax.evaluation import windows  # pylint: disable=g-import-not-at-top
  d, e = config.data, config.eval
  try:
    h, w = windows.size2(d.crop_size)  # None (whole frames): unknown
    pixels = int(d.batch_size) * int(d.num_frames) * h * w
    if e.get("network_size"):
      h, w = windows.size2(e.network_size)
      pixels = max(pixels, (int(e.interval_length) + 2) * h * w)
    return pixels
  except (TypeError, ValueError, AttributeError):
    return None


if __name__ == "__main__":
  cli.exit(main())
