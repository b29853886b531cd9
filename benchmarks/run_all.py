"""Every speed figure of the README in one run: machine rate, inference (fp32, bf16), training step.

  python benchmarks/run_all.py [--frames 19] [--size 256] [--repeats 2] [--train-steps 1]
      [--skip-train]

Prints, in order: the machine's measured dense rates (fp32 / bf16 matmul, fp32 3x3 conv); for the
full-size TCVC (SIGGRAPH17 + FlowNet2, random weights) on one window, per dtype: seconds per window,
frames/s against the original, FlowNet2 evaluations per window, achieved GFLOP/s and its fraction of
the machine's rate; then the full-size training step (256x256, N=12, batch 1, SRL): seconds per step
and XLA's peak memory per device. Takes ~15 minutes on a 2-vCPU machine.
"""

import argparse
import os
import platform
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine_rate  # pylint: disable=g-import-not-at-top,wrong-import-position
import model_bench  # pylint: disable=g-import-not-at-top,wrong-import-position
import train_bench  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=19)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--train-steps", type=int, default=1)
  parser.add_argument("--skip-train", action="store_true")
  args = parser.parse_args()
  t_start = time.perf_counter()
  print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; device: {jax.devices()[0].device_kind} "
        f"({platform.processor() or platform.machine()}), {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}")
  rates = machine_rate.measure()
  machine_rate.report(rates)
  variables = jax.device_put(model_bench.random_variables(model_bench.TCVC()))
  for dtype in args.dtypes.split(","):
    model_bench.run(dtype, args.frames, args.size, args.repeats, rates, variables)
  del variables
  if not args.skip_train:
    train_args = argparse.Namespace(steps=args.train_steps, unroll=0, remat=False, dtype="float32")
    train_bench.bench("full", train_args)
  print(f"total: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
  main()
