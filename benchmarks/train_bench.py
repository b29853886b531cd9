"""Training-step benchmark: steps/s and XLA's peak-memory estimate per device.

Models, random weights (speed does not depend on them; nothing is downloaded):

  tiny  configs/default.py:tiny (32x32, N=3, batch 2, classical flow)
  demo  configs/demo.py (32x32 crops, N=4, batch 4, classical flow, all nets trained)
  full  the paper's TCVC (SIGGRAPH17 + FlowNet2), 256x256, N=12, batch 1, SRL on, paper loss

  python benchmarks/train_bench.py [--models tiny,demo,full] [--steps 3] [--unroll 0]

The step is the trainer's (jit with shardings and donation) on a 1-device mesh. Memory comes
from `compiled.memory_analysis()`: arguments + outputs - aliased (donated) + temporaries.
`--unroll 0` unrolls the propagation scan fully (N - 2), which XLA on CPU runs ~5x faster.
"""

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import demo  # pylint: disable=g-import-not-at-top,wrong-import-position
from tcvc_jax import allocator  # pylint: disable=g-import-not-at-top,wrong-import-position
from tcvc_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from tcvc_jax.training import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from tcvc_jax.training import train_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from tcvc_jax.training import train_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def _config(name, args):
  if name == "demo":
    config = demo.get_config()
  else:
    config = default.get_config("tiny" if name == "tiny" else None)
  if name == "full":
    config.data.batch_size = 1
    config.data.num_frames = 12
    config.data.crop_size = 256
  config.model.dtype = args.dtype
  config.model.unroll = args.unroll or config.data.num_frames - 2
  return config, config.data.crop_size


def _mib(x):
  return f"{x / 2**20:.1f} MiB"


def bench(name, args):
  config, size = _config(name, args)
  model = train_lib.build_model(train_config.model_spec(config), remat=args.remat,
                                **train_config.runtime_options(config))
  tx, _ = train_config.optimizer(config)
  mesh = sharding.create_mesh((("data", -1),), "explicit", devices=jax.devices()[:1])
  b, n = config.data.batch_size, config.data.num_frames
  rs = np.random.RandomState(0)
  batch = {"gray": rs.uniform(-0.5, 0.5, (b, n, size, size, 1)).astype(np.float32),
           "ab": rs.uniform(-0.3, 0.3, (b, n, size, size, 2)).astype(np.float32)}
  with jax.set_mesh(mesh):
    t0 = time.perf_counter()
    init_fn, _, shardings = train_config.fresh_state(config, model, tx, mesh)
    state = jax.block_until_ready(init_fn())
    t_init = time.perf_counter() - t0
    batch = sharding.global_batch(batch, sharding.data_sharding(mesh))
    step = train_config.jit_train_step(config, shardings, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    t_compile = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    times, metrics = [], None
    if args.steps:
      state, metrics = compiled(state, batch)  # warm-up
      jax.block_until_ready(metrics)
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t0)
  params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
          + mem.temp_size_in_bytes)
  print(f"[{name}] {size}x{size}, N={n}, batch {b}, flow {config.flow.type}, dtype {args.dtype}, "
        f"unroll {config.model.unroll}, remat {args.remat}, {params / 1e6:.2f} M params")
  print(f"[{name}] init {t_init:.1f} s, compile {t_compile:.1f} s")
  if times:
    t = float(np.median(times))
    print(f"[{name}] step {t:.3f} s (median of {len(times)}), {1 / t:.4g} steps/s, "
          f"{b * n / t:.3g} frames/s, loss {float(metrics['loss']):.4g}")
  print(f"[{name}] XLA memory per device: arguments {_mib(mem.argument_size_in_bytes)}, "
        f"outputs {_mib(mem.output_size_in_bytes)}, aliased {_mib(mem.alias_size_in_bytes)}, "
        f"temporaries {_mib(mem.temp_size_in_bytes)}; peak {_mib(peak)}")
  return {"step": float(np.median(times)) if times else float("nan"), "compile": t_compile,
          "peak_bytes": peak}


def main():
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default="tiny,demo,full")
  parser.add_argument("--steps", type=int, default=3, help="timed steps; 0: memory only")
  parser.add_argument("--unroll", type=int, default=0, help="0: the whole window")
  parser.add_argument("--remat", action="store_true", help="rematerialise propagation steps")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args()
  # As train.py decides (before the first computation): freed XLA buffers kept for reuse unless
  # every call is small. One decision per process: the largest model's.
  pixels = max(train.step_pixels(_config(name, args)[0]) or 2**62
               for name in args.models.split(","))
  kept = allocator.keep_freed_memory(pixels)
  print(f"allocator: {'freed memory kept for reuse' if kept else 'the C library default'} "
        f"(TCVC_MALLOC={os.environ.get('TCVC_MALLOC', 'auto')}, {pixels} input pixels per step)")
  print(f"device: {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}")
  for name in args.models.split(","):
    bench(name, args)


if __name__ == "__main__":
  main()
