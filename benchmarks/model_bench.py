"""Inference benchmark of the full-size TCVC (SIGGRAPH17 + FlowNet2) on one window.

Prints frames/s, FlowNet2 evaluations per window and GFLOP per frame from XLA's cost analysis, for
the default 19-frame 256x256 window (the paper's test protocol, interval 17). Weights are random
(speed does not depend on them); nothing is downloaded.

  python benchmarks/model_bench.py [--frames 19] [--size 256] [--repeats 2]
      [--dtype float32,bfloat16]

For the original PyTorch code's time on the same machine, run `benchmarks/run_all.py --orig`, which
runs both side by side; the ratio printed here is against a figure recorded on an AVX-512 machine.
"""

import argparse
import os
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax import allocator
from tcvc_jax.models.tcvc import TCVC

import machine_rate  # benchmarks/machine_rate.py, beside this file

# The original's model-only time per 19-frame 256x256 window recorded on a 2-vCPU AVX-512 machine
# (../shared/orig/bench_infer.py, 2026-12-02: 69.3 s; 101.5 s with its CUDA-op stand-ins).
ORIGINAL_S_PER_WINDOW = 69.0


class fixed_forms:  # pylint: disable=invalid-name
  """Traces under the fixed convolution forms: no measuring of shapes the timed program never runs,
  and XLA's FLOP count is that of direct convolutions (the useful work, whatever form runs)."""

  def __enter__(self):
    self.old = os.environ.get("TCVC_CONV_FORMS")
    os.environ["TCVC_CONV_FORMS"] = "fixed"

  def __exit__(self, *exc):
    if self.old is None:
      os.environ.pop("TCVC_CONV_FORMS")
    else:
      os.environ["TCVC_CONV_FORMS"] = self.old


def count_flow_pairs(model, variables, gray):
  pairs = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == "flows" and isinstance(context.module, TCVC):
      pairs.append(args[0].shape[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor), fixed_forms():  # one batched call: every pair seen once
    jax.eval_shape(model.clone(flow_batch=0).apply, variables, gray)
  return sum(pairs)


def random_variables(model, seed=0):
  """Random weights with PyTorch-default scales, from shapes only.

  Compiling model.init takes minutes.
  """
  with fixed_forms():  # shapes only: measuring the 64x64 trace's convolutions would be wasted
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 64, 64, 1)))
  rs = np.random.RandomState(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      bound = 1.0 / np.sqrt(np.prod(s.shape[:-1]))
      return rs.uniform(-bound, bound, s.shape).astype(np.float32)
    if name in ("bias", "mean"):
      return np.zeros(s.shape, np.float32)
    return np.ones(s.shape, np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def flops_per_window(model, variables, gray):
  """XLA's FLOP count of the whole window (scans unrolled: XLA counts a loop body once)."""
  unrolled = model.clone(unroll=gray.shape[1], flow_batch=0)  # same FLOPs, one loop-free graph
  fn = jax.jit(lambda v, g: unrolled.apply(v, g)["ab"])
  with fixed_forms():
    cost = fn.lower(variables, gray).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def run(dtype="float32", frames=19, size=256, repeats=2, rates=None, variables=None):
  """Times one window of the full-size model in `dtype` and prints the figures."""
  model = TCVC(dtype=jnp.dtype(dtype))
  if variables is None:
    variables = jax.device_put(random_variables(model))
  n, s = frames, size
  gray = jnp.asarray(np.random.RandomState(0).uniform(-0.5, 0.5, (1, n, s, s, 1)), jnp.float32)
  fn = jax.jit(lambda v, g: model.apply(v, g)["ab"])
  t0 = time.perf_counter()
  compiled = fn.lower(variables, gray).compile()
  t_compile = time.perf_counter() - t0  # tracing (incl. measuring new conv forms) + XLA compile
  print(f"[{dtype}] compile: {t_compile:.1f} s")
  # The first run right after the compile, as a user's first call: compiling anything in between
  # (the FLOP count below) leaves freed, already faulted-in memory that this run would reuse.
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(variables, gray))
  t_first = t_compile + time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(variables, gray))
    times.append(time.perf_counter() - t0)
  t = float(np.median(times))
  # Useful FLOPs: those of the float32 model (bf16 mode does the same products).
  flops = flops_per_window(model.clone(dtype=jnp.float32), variables, gray)
  pairs = count_flow_pairs(model, variables, gray)
  print(f"[{dtype}] device: {jax.devices()[0].device_kind} "
        f"({platform.processor() or platform.machine()}), {jax.device_count()} device(s)")
  print(f"[{dtype}] window: {n} frames of {s}x{s}")
  all_times = ", ".join(f"{x:.2f}" for x in times)
  print(f"[{dtype}] time per window: {t:.2f} s (median of {repeats}; all: {all_times})")
  vs = ""
  if (n, s) == (19, 256):  # the window the original was timed on
    # No ratio: a figure from another machine (or the same type on another day) is not side by
    # side. run_all.py --orig measures the original on this machine.
    vs = (f" (for scale only: the original took {ORIGINAL_S_PER_WINDOW:.0f} s/window, model only,"
          f" on another machine; side by side: benchmarks/run_all.py --orig)")
  print(f"[{dtype}] frames/s: {n / t:.3f}{vs}")
  print(f"[{dtype}] FlowNet2 evaluations per window: {pairs} (original: {4 * n - 7})")
  print(f"[{dtype}] GFLOP per window: {flops / 1e9:.0f}; GFLOP per frame: {flops / 1e9 / n:.1f}")
  achieved = flops / 1e9 / t
  print(f"[{dtype}] achieved: {achieved:.1f} GFLOP/s")
  rates = rates or {}
  # fp32: the better of XLA's fp32 matmul and 3x3 convolution; bf16: the bf16 matmul.
  peak = (rates.get("bf16_matmul", 0) if dtype == "bfloat16"
          else max(rates.get("fp32_matmul", 0), rates.get("fp32_conv3x3", 0)))
  if peak:
    print(f"[{dtype}] fraction of the machine's dense {dtype} rate ({peak:.0f} GFLOP/s): "
          f"{achieved / peak:.0%}")
  print(f"[{dtype}] first call (compile + one window): {t_first:.1f} s = {t_first / t:.2f}x the "
        f"steady window")
  return {"time": t, "compile": t_compile, "first_call": t_first, "gflop": flops / 1e9,
          "achieved": achieved, "peak": peak}


def main():
  allocator.keep_freed_memory()  # as the tools do: freed XLA buffers are reused, not faulted in
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=19)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--dtype", default="float32",
                      help="float32, bfloat16, or both: float32,bfloat16")
  parser.add_argument("--no-rate", action="store_true",
                      help="skip measuring the machine's dense rate")
  args = parser.parse_args()
  rates = {} if args.no_rate else machine_rate.measure()
  machine_rate.report(rates)
  variables = jax.device_put(random_variables(TCVC()))
  for dtype in args.dtype.split(","):
    run(dtype, args.frames, args.size, args.repeats, rates, variables)


if __name__ == "__main__":
  main()
