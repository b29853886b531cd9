"""One process of a local multi-process training job (tests only).

  python tests/train_driver.py '{"process_id": 0, "num_processes": 2, "port": 12345,
      "local_devices": 2, "workdir": "...", "overrides": {"num_train_steps": 4}}'

Fakes `local_devices` CPU devices, joins the job on 127.0.0.1:port with gloo collectives, and
runs `trainer.train_and_evaluate` on configs/default.py:tiny with the overrides; with
"fail_at_batch": k, this process fails when the loop asks for its k-th batch.
"""

import json
import os
import sys

import xla_flags


def main(args):
  os.environ["XLA_FLAGS"] = xla_flags.flags(args["local_devices"])
  from absl import logging  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top
  from tcvc_jax.training import trainer  # pylint: disable=g-import-not-at-top

  import train_testlib  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed(coordinator_address=f"127.0.0.1:{args['port']}",
                                  num_processes=args["num_processes"],
                                  process_id=args["process_id"])
  if args.get("fail_at_batch"):  # this process alone fails (as on a disk of its own) at batch k
    batches = iter(range(1, args["fail_at_batch"]))
    global_batch = sharding.global_batch

    def failing_global_batch(*a, **k):
      if next(batches, None) is None:
        raise OSError(f"injected failure at batch {args['fail_at_batch']}")
      return global_batch(*a, **k)

    trainer.sharding.global_batch = failing_global_batch
  config = train_testlib.tiny_config(**args["overrides"])
  result = trainer.train_and_evaluate(config, args["workdir"])
  print("RESULT " + json.dumps({"process": jax.process_index(), "devices": jax.device_count(),
                                "step": result["step"], "eval": result["eval"]}), flush=True)


if __name__ == "__main__":
  main(json.loads(sys.argv[1]))
