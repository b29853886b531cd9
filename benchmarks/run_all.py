"""Every speed figure of the README in one run, optionally side by side with the original code.

  python benchmarks/run_all.py [--frames 19] [--size 256] [--repeats 2] [--train-steps 1]
      [--dtypes float32,bfloat16] [--skip-train] [--orig [DIR]]

Prints, in order: the machine (CPU model, vector ISA) and its measured dense rates (fp32 / bf16
matmul, fp32 3x3 conv); for the full-size TCVC (SIGGRAPH17 + FlowNet2, random weights) on one
window, per dtype: compile time, first call, seconds per window, FlowNet2 evaluations, achieved
GFLOP/s and its fraction of the machine's rate; the demo's training step (compile and step time);
the full-size training step (256x256, N=12, batch 1, SRL): compile, seconds per step, XLA's peak
memory per device. The training steps run in processes of their own, each with the allocator
setting that train.py would pick for it (`tcvc_jax.allocator`). With `--orig` (default DIR:
../shared/orig beside the repository, built with its build.sh), the ORIGINAL PyTorch code's
inference and training benchmarks then run in subprocesses on the same machine (one after the
other, never at the same time as ours), and a summary gives the ratios. With --orig it took 15-19
minutes on a 2-vCPU AMD EPYC (897-1123 s, 2026-12-04/05), a few less without (the original needs
~18 GiB: our process gives its freed memory back first).
"""

import argparse
import gc
import os
import re
import subprocess
import sys
import time

import jax

from tcvc_jax import allocator
from tcvc_jax.models import conv_forms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine_rate  # pylint: disable=g-import-not-at-top,wrong-import-position
import model_bench  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ORIG = os.path.join(os.path.dirname(REPO), "shared", "orig")


def cpu_description():
  """'model name; ISA: avx2 avx512f ...' (the vector extensions that matter for the speeds)."""
  model, flags = conv_forms.cpu_info()
  isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                     "amx_tile") if f in flags]
  return f"{model}; ISA: {' '.join(isa) or 'unknown'}"


def bf16_units():
  """Which bf16 matrix units this CPU has, in words."""
  _, flags = conv_forms.cpu_info()
  if "amx_bf16" in flags:
    return "it has AMX"
  if "avx512_bf16" in flags:
    return "AVX512-BF16 dot instructions, no AMX"
  return "no bf16 dot instructions"


def _streamed(cmd, prefix=""):
  """Runs cmd, echoing its output (stderr merged) line by line; returns (exit code, lines)."""
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:
    print(f"{prefix}{line.rstrip()}", flush=True)
    lines.append(line)
  return proc.wait(), lines


def run_orig(script, args, orig_dir):
  """Runs one of the harness's benchmarks; returns (last 'infer:'/'train:' line, its numbers)."""
  python = os.path.join(os.environ.get("ORIG_VENV", "/tmp/orig-venv"), "bin", "python")
  cmd = [python, os.path.join(orig_dir, script)] + args
  print(f"original: {' '.join(cmd)}", flush=True)
  code, lines = _streamed(cmd, "  | ")
  results = [line.strip() for line in lines if line.startswith(("infer:", "train:"))]
  if code or not results:
    raise SystemExit(f"the original's {script} failed (exit {code}); is {orig_dir} "
                     f"built (bash {orig_dir}/build.sh)?")
  last = results[-1]
  total = float(re.search(r"([\d.]+) s/(?:window|step) total", last).group(1))
  model_only = float(re.search(r"([\d.]+) s model only", last).group(1))
  return last, total, model_only


def release_memory(what):
  """Gives this process's compiled programs and kept free memory back to the system."""
  jax.clear_caches()
  gc.collect()
  allocator.release_freed_memory()
  print(f"memory released for {what}: resident {allocator.resident_bytes() / 2**30:.1f} GiB",
        flush=True)


def step_in_subprocess(name, steps):
  """train_bench's `name` step in a fresh process (its own allocator decision and peak memory);
  its figures as train_bench.bench returns them."""
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_bench.py")
  cmd = [sys.executable, script, "--models", name, "--steps", str(steps)]
  code, lines = _streamed(cmd)
  text = "".join(lines)
  found = [re.search(pattern, text) for pattern in (
      rf"\[{name}\] step ([\d.]+) s", rf"\[{name}\] init [\d.]+ s, compile ([\d.]+) s",
      rf"\[{name}\] XLA memory.*peak ([\d.]+) MiB")]
  if code or not all(found):
    raise SystemExit(f"the {name} training step's benchmark failed (exit {code})")
  step, compile_s, peak_mib = (float(m.group(1)) for m in found)
  return {"step": step, "compile": compile_s, "peak_bytes": peak_mib * 2**20}


def main():
  sys.stdout.reconfigure(line_buffering=True)  # a log file keeps every line, even if killed
  kept = allocator.keep_freed_memory()  # as the tools do: freed XLA buffers reused, not faulted in
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=19)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--train-steps", type=int, default=1)
  parser.add_argument("--skip-train", action="store_true")
  parser.add_argument("--orig", nargs="?", const=DEFAULT_ORIG, default=None, metavar="DIR",
                      help="also run the original code's benchmarks from this harness folder "
                           f"(default {DEFAULT_ORIG})")
  args = parser.parse_args()
  if args.orig and not os.path.isfile(os.path.join(args.orig, "bench_infer.py")):
    parser.error(f"--orig: no bench_infer.py in {args.orig}")
  t_start = time.perf_counter()
  print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; device: {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}")
  print(f"cpu: {cpu_description()}")
  print(f"conv forms: TCVC_CONV_FORMS={os.environ.get('TCVC_CONV_FORMS', 'auto')}; allocator: "
        + ("freed memory kept for reuse" if kept else "the C library's default (TCVC_MALLOC)"))
  rates = machine_rate.measure()
  machine_rate.report(rates)
  variables = jax.device_put(model_bench.random_variables(model_bench.TCVC()))
  ours = {}
  for dtype in args.dtypes.split(","):
    ours[dtype] = model_bench.run(dtype, args.frames, args.size, args.repeats, rates, variables)
  del variables
  train = {}
  if not args.skip_train:
    # Each in a process of its own. The demo: as train.py runs it, with glibc's default allocator
    # (its calls are small; this process keeps freed memory for the windows). The full step: run
    # here after the windows, it was killed for memory on a 24 GB machine (24.3 GB resident, even
    # with the windows' memory given back first; on its own its peak resident size is 16.9 GB).
    release_memory("the training steps")
    # 20 steps: under glibc's default allocator the first few run slower (its arenas grow), so a
    # median of 3 read 0.090 s where 30 steps read 0.074 s (2026-12-05, AMD EPYC).
    train["demo"] = step_in_subprocess("demo", 20)
    train["full"] = step_in_subprocess("full", args.train_steps)

  orig = {}
  if args.orig:
    # Our programs' kept buffers (the windows') go back to the system first: the original's
    # training needs ~14 GB of its own.
    release_memory("the original's runs")
    window = ["--frames", str(args.frames), "--size", str(args.size)]
    orig["infer"] = run_orig("bench_infer.py", ["--runs", str(args.repeats)] + window, args.orig)
    if not args.skip_train:
      orig["train"] = run_orig("bench_train.py", ["--steps", str(args.train_steps)], args.orig)

  print("summary:")
  print(f"  cpu: {cpu_description()}")
  for dtype, r in ours.items():
    line = (f"  window {args.frames}x{args.size}^2 {dtype}: {r['time']:.1f} s, "
            f"{r['achieved']:.0f} GFLOP/s"
            + (f" = {r['achieved'] / r['peak']:.0%} of {r['peak']:.0f}" if r["peak"] else "")
            + f"; compile {r['compile']:.1f} s, first call {r['first_call']:.1f} s "
              f"({r['first_call'] / r['time'] - 1:+.0%} over the steady window)")
    if dtype != "float32" and "float32" in ours:
      gain = ours["float32"]["time"] / r["time"]
      line += f"; {gain:.2f}x our float32 speed" + (
          f" (no gain from {dtype} on this CPU: {bf16_units()})" if gain < 1.05 else "")
    if "infer" in orig:
      _, total, model_only = orig["infer"]
      line += (f"; original {total:.1f} s total, {model_only:.1f} s model only -> "
               f"{model_only / r['time']:.2f}x its model time, {total / r['time']:.2f}x its total")
    print(line)
  for name, r in train.items():
    line = (f"  train step [{name}]: {r['step']:.3f} s, compile {r['compile']:.1f} s, "
            f"XLA peak {r['peak_bytes'] / 2**30:.2f} GiB per device")
    if name == "full" and "train" in orig:
      _, total, model_only = orig["train"]
      line += (f"; original {total:.1f} s total, {model_only:.1f} s model only -> "
               f"{model_only / r['step']:.2f}x its model time, {total / r['step']:.2f}x its total")
    print(line)
  print(f"total: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
  main()
