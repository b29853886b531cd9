"""First and second start of the tools: the persistent XLA compilation cache at work.

Runs each command twice against an empty cache folder (first: compiles and fills the cache; second:
reads it) and once with the cache off, and prints the wall times:

  python benchmarks/startup_bench.py          # colorize (tiny model) and the demo's first steps
  python benchmarks/startup_bench.py --full   # also colorize with the full-size model

The colorize input is a generated 40-frame clip (its last window is shorter: one compilation for
all windows). Times include Python start-up and imports.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _timed(cmd, env, cwd):
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
  return time.perf_counter() - t0


def _three(name, cmd, tmp, env):
  cache = os.path.join(tmp, f"cache_{name}")
  runs = {}
  for label, flag in (("first", cache), ("second", cache), ("cache off", "off")):
    out = os.path.join(tmp, f"out_{name}_{label.replace(' ', '_')}")
    runs[label] = _timed([c.format(out=out, cache=flag) for c in cmd], env, tmp)
  print(f"{name:34s} first {runs['first']:6.1f} s   second {runs['second']:6.1f} s   "
        f"cache off {runs['cache off']:6.1f} s", flush=True)


def main():
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
  parser.add_argument("--full", action="store_true", help="also the full-size model (minutes)")
  args = parser.parse_args()
  from benchmarks import colorize_bench  # pylint: disable=g-import-not-at-top
  from tcvc_jax.media import writing  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  with tempfile.TemporaryDirectory() as tmp:
    env["TFDS_DATA_DIR"] = os.path.join(tmp, "tfds")
    frames = os.path.join(tmp, "clip")
    os.makedirs(frames)
    rs = np.random.RandomState(0)
    for i in range(40):
      with open(os.path.join(frames, f"{i:05d}.png"), "wb") as f:
        f.write(writing.encode_png(rs.randint(0, 255, (64, 64, 3), np.uint8)))
    models = [("tiny", True)] + ([("full", False)] if args.full else [])
    for name, tiny in models:
      ckpt = os.path.join(tmp, f"ckpt_{name}")
      colorize_bench.make_checkpoint(ckpt, tiny=tiny)
      size = "64" if tiny else "256"
      _three(f"colorize 40 frames ({name}, {size}px)",
             [sys.executable, "-m", "tcvc_jax.colorize", frames, "{out}", "--checkpoint", ckpt,
              "--size", size, "--quiet", "--compilation-cache", "{cache}"], tmp, env)
    _three("demo, 3 train steps",
           [sys.executable, os.path.join(REPO, "train.py"), "--workdir={out}",
            "--config.num_train_steps=3", "--config.eval_every_steps=0",
            "--compilation_cache={cache}"], tmp, env)


if __name__ == "__main__":
  main()
