"""Throughput of the TV-L1 flow estimator (tcvc_jax.models.classical_flow) on this machine.

Usage: python benchmarks/classical_flow_bench.py

Prints compile time and pairs/s at 256x256 for a few batch sizes with the default parameters
(and a cheaper `num_iters=10` setting), timing whole jitted calls after a warm-up.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax.models import classical_flow

SIZE = 256
BATCH_SIZES = (1, 4)
SETTINGS = ({}, {"num_iters": 10})
REPEATS = 5


def _texture(x, y, waves):
  """Sum of sinusoids, waves = [(angle, period, phase)], in about [-0.5, 0.5]."""
  f = np.zeros_like(x)
  for angle, period, phase in waves:
    f += np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
  return 0.5 * f / len(waves)


def _frames(batch, seed=0):
  """Two [batch, SIZE, SIZE, 1] frames; the second is the first shifted by (2.5, -1.5) px."""
  rng = np.random.default_rng(seed)
  waves = [(rng.uniform(0, np.pi), rng.uniform(8, 40), rng.uniform(0, 2 * np.pi))
           for _ in range(10)]
  y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
  frames = []
  for img in (_texture(x, y, waves), _texture(x - 2.5, y + 1.5, waves)):
    frames.append(jnp.asarray(np.broadcast_to(img[None, ..., None], (batch, SIZE, SIZE, 1)),
                              jnp.float32))
  return frames


def main():
  print(f"jax {jax.__version__}, devices {jax.devices()}, {SIZE}x{SIZE}")
  for params in SETTINGS:
    for batch in BATCH_SIZES:
      img1, img2 = _frames(batch)
      start = time.perf_counter()
      flow = classical_flow.estimate_flow(img1, img2, **params).block_until_ready()
      compile_s = time.perf_counter() - start
      start = time.perf_counter()
      for _ in range(REPEATS):
        flow = classical_flow.estimate_flow(img1, img2, **params).block_until_ready()
      per_call = (time.perf_counter() - start) / REPEATS
      epe = np.linalg.norm(np.asarray(flow)[:, 16:-16, 16:-16] - np.array([2.5, -1.5]), axis=-1)
      print(f"params={params or 'defaults'} batch={batch}: first call {compile_s:.2f} s, "
            f"{per_call * 1e3:.1f} ms/call, {batch / per_call:.1f} pairs/s, "
            f"mean EPE {epe.mean():.3f} px")


if __name__ == "__main__":
  main()
