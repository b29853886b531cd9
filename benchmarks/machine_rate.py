"""Measures this machine's dense rate under XLA: fp32 / bf16 matmuls and an fp32 3x3 convolution.

  python benchmarks/machine_rate.py [--size 2048] [--repeats 5]

The model benchmarks report their achieved GFLOP/s as a fraction of these figures.
"""

import argparse
import time

import jax
import jax.numpy as jnp


def rate(fn, args, flops, repeats):
  """Best-of-`repeats` GFLOP/s of a jitted fn."""
  f = jax.jit(fn)
  jax.block_until_ready(f(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    best = min(best, time.perf_counter() - t0)
  return flops / best / 1e9


def measure(size=2048, repeats=5):
  """{'fp32_matmul', 'bf16_matmul', 'fp32_conv3x3'}: GFLOP/s."""
  k = jax.random.split(jax.random.key(0), 4)
  a = jax.random.normal(k[0], (size, size))
  b = jax.random.normal(k[1], (size, size))
  mm_flops = 2.0 * size ** 3
  out = {"fp32_matmul": rate(jnp.matmul, (a, b), mm_flops, repeats)}
  bf = lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32)
  out["bf16_matmul"] = rate(bf, (a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)), mm_flops, repeats)
  x = jax.random.normal(k[2], (4, 64, 64, 256))
  w = jax.random.normal(k[3], (3, 3, 256, 256))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
  out["fp32_conv3x3"] = rate(conv, (x, w), 2.0 * 4 * 64 * 64 * 256 * 256 * 9, repeats)
  return out


def report(rates):
  """Prints measure()'s figures, one line each."""
  for name, r in rates.items():
    print(f"machine {name}: {r:.1f} GFLOP/s")


def main():
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", type=int, default=2048)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(f"device: {jax.devices()[0].device_kind}, {jax.device_count()} device(s)")
  report(measure(args.size, args.repeats))


if __name__ == "__main__":
  main()
