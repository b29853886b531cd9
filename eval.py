"""Evaluates a TCVC checkpoint with the original test protocol (see tcvc_jax/evaluator.py).

  python eval.py --config configs/eval.py[:multi|nogt] --workdir /tmp/eval \\
      --config.checkpoint=CKPT --config.data.root=TEST_SET

Bad input (checkpoint, test set, workdir) ends with a one-line message and exit status 1; pass
--verbose for the traceback.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from tcvc_jax import evaluator

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Evaluation config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for colorized frames, videos, metrics and plots.")
# Beyond --config / --workdir: the issue asks for tracebacks only on request.
flags.DEFINE_bool("verbose", False, "Show the traceback of an input error.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  # Evaluation runs in one process; its arrays fit on one device.
  logging.info("JAX process %d / %d, local devices %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  try:
    summary = evaluator.evaluate(FLAGS.config, FLAGS.workdir)
  except evaluator.INPUT_ERRORS as e:
    if FLAGS.verbose:
      raise
    print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
    sys.exit(1)
  print(json.dumps(evaluator.to_json_value({k: summary[k] for k in evaluator.SUMMARY_KEYS})))


if __name__ == "__main__":
  app.run(main)
