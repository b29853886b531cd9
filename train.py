"""Trains TCVC: `python train.py` runs the CPU demo into runs/demo.

  python train.py --config configs/default.py --workdir runs/tcvc \
      --config.data.manual_dir=/data/clips --config.init_from=weights/siggraph17,weights/flownet2

Multi-host jobs (Cloud TPU pods, SLURM, or JAX_COORDINATOR_ADDRESS set) start the same command
on every host. Exits 0 after a preemption (SIGTERM) once the checkpoint is saved.
"""

import os

from absl import app
from absl import flags
from absl import logging
from absl.logging import converter
import jax
from ml_collections import config_flags

from tcvc_jax import sharding
from tcvc_jax import trainer

_HERE = os.path.dirname(os.path.abspath(__file__))
config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, "configs", "demo.py"), "Training configuration file.",
    lock_config=True)
flags.DEFINE_string("workdir", "runs/demo", "Where checkpoints, metrics and images go.")


def _quiet_orbax():
  """Orbax logs several INFO lines per checkpoint; keep its warnings and errors only."""
  marker = os.sep + "orbax" + os.sep
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= converter.STANDARD_WARNING or marker not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _quiet_orbax()
  sharding.initialize_distributed()
  logging.info("process %d of %d; local devices %s; %d devices in all", jax.process_index(),
               jax.process_count(), jax.local_devices(), jax.device_count())
  result = trainer.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  logging.info("finished at step %d%s; eval: %s", result["step"],
               " (preempted)" if result["preempted"] else "", result["eval"])


if __name__ == "__main__":
  app.run(main)
