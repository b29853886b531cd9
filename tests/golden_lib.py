"""Golden-test harness: the stand-in weight formula, .pth writing, comparison with the original.

The golden files in tests/golden/ were produced by the ORIGINAL PyTorch TCVC code with weights given
by a bit-exact formula (shared/golden/README.md, "Weight formula"); this module implements that
formula independently, writes the state_dicts as PyTorch files, converts them with our CLI and runs
our models.

Run as a script (`python tests/golden_lib.py --dtype float64 --out errors.json`) it computes every
max abs error in a fresh process; the float64 golden tests use that with JAX_ENABLE_X64=1. The
script takes the weights straight from the formula, in memory (`FormulaWeights`): writing and
converting ~5 GB of float64 files took 70 of its 180 s, on cores the tests share, and the converter
is proven on the float32 files (`ConvertedWeights`, which the float32 tests read).
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zlib

import numpy as np

import xla_flags

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
KEYS_FILE = os.path.join(GOLDEN_DIR, "tcvc_idc_state_dict_keys.txt")
# sha256 of the phase-0 float64 state_dict published with the goldens.
PHASE0_DIGEST = "7d1efca57abdffb271bd99ab835046683e63fc673e373d361101fb94a0773d81"

_MASK64 = (1 << 64) - 1


def read_key_file(path=KEYS_FILE):
  """[(key, shape)] from 'key<TAB>(d0, d1, ...)<TAB>dtype' lines; '#' starts a comment."""
  entries = []
  with open(path) as f:
    for line in f:
      if line.strip() and not line.startswith("#"):
        key, shape = line.rstrip("\n").split("\t")[:2]
        entries.append((key, tuple(int(d) for d in re.findall(r"\d+", shape))))
  return entries


def _splitmix_uniform(key, n):
  """u_i = (splitmix64 output i of the stream seeded by crc32(key) << 32) >> 11.

  Scaled to [0, 1).
  """
  # In place, one temporary: the same uint64 arithmetic ~7x faster than with a fresh array per
  # operation (the formula weights are ~200 M values, computed several times per test session).
  seed = np.uint64(zlib.crc32(key.encode("utf-8")) << 32 & _MASK64)
  z = np.arange(1, n + 1, dtype=np.uint64)
  t = np.empty_like(z)
  with np.errstate(over="ignore"):
    z *= np.uint64(0x9E3779B97F4A7C15)
    z += seed
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
      np.right_shift(z, np.uint64(shift), out=t)
      z ^= t
      z *= np.uint64(mult)
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
  del t
  z >>= np.uint64(11)
  u = z.astype(np.float64)
  u *= 2.0 ** -53
  return u


def formula_value(key, shape, phase=0.0):
  """The stand-in float64 value of one state_dict entry (PyTorch layout)."""
  n = int(np.prod(shape)) if shape else 1
  leaf = key.split(".")[-1]
  if leaf == "num_batches_tracked":
    return np.zeros(shape, np.float64)
  v = _splitmix_uniform(key, n)
  if phase:  # u is in [0, 1), so frac(u) = u exactly without it
    v += phase
    v -= np.floor(v)
  v *= 2.0
  v -= 1.0  # 2 * frac(u + phase) - 1, in place
  v = v.reshape(shape)
  if leaf == "weight" and len(shape) == 4:
    module = key.split(".")[-2]
    if module.startswith("predict_flow"):
      gain = 0.6
    elif key == "feature_refine.conv3.weight":
      gain = 0.5
    else:
      gain = 1.4
    v *= gain * np.sqrt(3.0 / (n // shape[0]))
    return v
  if leaf == "bias":
    return 0.05 * v
  if leaf == "weight":
    return 1.0 + 0.25 * v
  if leaf == "running_mean":
    return 0.1 * v
  if leaf == "running_var":
    return 1.0 + 0.5 * v
  raise ValueError(f"no formula for {key} {shape}")


def formula_state_dict(entries=None, phase=0.0):
  return {k: formula_value(k, s, phase) for k, s in (entries or read_key_file())}


def digest(sd):
  h = hashlib.sha256()
  for k, v in sd.items():
    h.update(k.encode("utf-8") + b"\0")
    h.update(np.ascontiguousarray(v, dtype="<f8").tobytes())
  return h.hexdigest()


def save_pth(sd, path, dtype, wrap=None):
  """Writes {key: float64 array} as a PyTorch file, cast to `dtype` ('float32'/'float64') like
  load_state_dict would (num_batches_tracked becomes int64). `wrap` nests it: {wrap: state_dict}."""
  import torch  # pylint: disable=g-import-not-at-top
  out = {}
  for k, v in sd.items():
    if k.endswith("num_batches_tracked"):
      out[k] = torch.zeros((), dtype=torch.int64)
    else:
      out[k] = torch.from_numpy(np.ascontiguousarray(v.astype(dtype)))
  torch.save({wrap: out} if wrap else out, path)


def start_float64_run(script, *args):
  """Starts tests/`script` with `--dtype float64` and jax x64 (needed from the start, so it is its
  own process), with the session's XLA flags for one device (xla_flags). Its output goes to a
  temporary file (a pipe nobody reads for minutes could fill and stall it)."""
  env = dict(xla_flags.child_env(), JAX_ENABLE_X64="1")
  log = tempfile.TemporaryFile(mode="w+")
  proc = subprocess.Popen(
      [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), script),
       "--dtype", "float64", *map(str, args)],
      env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
  proc.log = log
  return proc


def finish_float64_run(proc, out, what, timeout):
  """Waits for a `start_float64_run` process; its JSON output, or RuntimeError with its log."""
  proc.wait(timeout=timeout)
  if proc.returncode:
    proc.log.seek(0)
    raise RuntimeError(f"float64 {what} run failed:\n{proc.log.read()[-5000:]}")
  with open(out) as f:
    return json.load(f)


def stop_run(proc):
  if proc.poll() is None:
    proc.kill()
    proc.wait()
  proc.log.close()


def prepare_checkpoints(workdir, dtype):
  """Writes the three PyTorch checkpoint formats with formula weights; converts each with the CLI,
  exactly as a user would (the three conversions run side by side, each from when its file is
  written).

  Returns {'tcvc': dir, 'siggraph17': dir, 'flownet2': dir, 'tcvc_pth': path}.
  """
  sd = formula_state_dict()
  strip = lambda d, p: {k[len(p):]: v for k, v in d.items() if k.startswith(p)}
  paths = {"tcvc_pth": os.path.join(workdir, f"tcvc_{dtype}.pth")}
  files = {"tcvc": (sd, paths["tcvc_pth"], None),
           "flownet2": (strip(sd, "flow."), f"flownet2_{dtype}.pth.tar", "state_dict"),
           "siggraph17": (strip(sd, "fea_key."), f"sig_{dtype}.pth", None)}
  del sd
  procs = {}
  try:
    for kind, (entries, src, wrap) in files.items():
      src = os.path.join(workdir, src)
      save_pth(entries, src, dtype, wrap=wrap)
      paths[kind] = os.path.join(workdir, f"{kind}_{dtype}")
      procs[kind] = subprocess.Popen([sys.executable, "-m", "tcvc_jax.convert", src, paths[kind]],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    del files, entries
    for kind, proc in procs.items():
      out, _ = proc.communicate(timeout=600)
      if proc.returncode:
        raise RuntimeError(f"converting the {kind} file failed:\n{out[-3000:]}")
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return paths


class ConvertedWeights:
  """The weights of `prepare_checkpoints`' converted directories, read as a user's would be."""

  def __init__(self, paths):
    self.paths = paths

  def module(self, kind):
    """(variables, model description) of a 'siggraph17' or 'flownet2' checkpoint."""
    from tcvc_jax import converted  # pylint: disable=g-import-not-at-top
    variables, meta, _ = converted.load_converted(self.paths[kind])
    return variables, meta["model"]

  def colorizer(self, dtype):
    import tcvc_jax  # pylint: disable=g-import-not-at-top
    return tcvc_jax.load(self.paths["tcvc"], dtype=dtype)


class FormulaWeights:
  """The same weights straight from the formula, in memory: what the converter makes of the files
  (`torch_to_flax` on the state_dict in `dtype`), without writing or reading them."""

  _PREFIX = {"siggraph17": "fea_key", "flownet2": "flow"}

  def __init__(self, dtype):
    from tcvc_jax import porting  # pylint: disable=g-import-not-at-top
    sd = {k: v.astype(dtype) for k, v in formula_state_dict().items()}
    self.variables, _ = porting.torch_to_flax(sd)
    self.models = {"tcvc": porting.infer_spec(sd, "tcvc")}
    for kind, prefix in self._PREFIX.items():
      part = {k[len(prefix) + 1:]: v for k, v in sd.items() if k.startswith(prefix + ".")}
      self.models[kind] = porting.infer_spec(part, kind)

  def module(self, kind):
    prefix = self._PREFIX[kind]
    return {c: t.get(prefix, {}) for c, t in self.variables.items()}, self.models[kind]

  def colorizer(self, dtype):
    import tcvc_jax  # pylint: disable=g-import-not-at-top
    spec = self.models["tcvc"]
    return tcvc_jax.Colorizer(spec.build(dtype=dtype), self.variables, spec)


# Our TCVC output -> the original's name for it in tcvc.npz.
TCVC_OUTPUTS = (("ab", "out"), ("ab_warp1", "ab_fwarp_l_stack"),
                ("mask1", "non_mask_fwarp_l_stack"), ("ab_warp2", "ab_fwarp_l_stack_2"),
                ("mask2", "non_mask_fwarp_l_stack_2"))


def _nhwc(a):
  return np.moveaxis(a, -3, -1)  # [..., C, H, W] -> [..., H, W, C]


def _err(ours, golden):
  ours, golden = np.asarray(ours, np.float64), np.asarray(golden, np.float64)
  if ours.shape != golden.shape:
    raise AssertionError(f"shape {ours.shape} != golden {golden.shape}")
  return float(np.max(np.abs(ours - golden)))


def compute_errors(weights, dtype):
  """Max abs error of every golden output, as {name: error} (None where both are None).

  weights: ConvertedWeights or FormulaWeights.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from tcvc_jax import porting  # pylint: disable=g-import-not-at-top
  from tcvc_jax.models.flownet2 import flow_from_gray  # pylint: disable=g-import-not-at-top
  from tcvc_jax.ops import color  # pylint: disable=g-import-not-at-top
  from tcvc_jax.ops import flow_ops  # pylint: disable=g-import-not-at-top
  from tcvc_jax.ops import warp  # pylint: disable=g-import-not-at-top

  jdt = jnp.float64 if dtype == "float64" else jnp.float32
  tag = "f64" if dtype == "float64" else "f32"
  g = lambda f: np.load(os.path.join(GOLDEN_DIR, f + ".npz"))
  arr = lambda a: jnp.asarray(a, jdt)
  errors = {}

  c = g("color")
  errors["color/rgb2lab"] = _err(color.rgb_to_lab(arr(_nhwc(c["rgb_in"]))),
                                 _nhwc(c[f"rgb2lab_{tag}"]))
  errors["color/lab2rgb"] = _err(color.lab_to_rgb(arr(_nhwc(c["lab_in"]))),
                                 _nhwc(c[f"lab2rgb_{tag}"]))

  o = g("ops")
  errors["ops/resample2d"] = _err(
      warp.backward_warp(arr(_nhwc(o["resample_input"])), arr(_nhwc(o["resample_flow"]))),
      _nhwc(o[f"resample_out_{tag}"]))
  errors["ops/correlation"] = _err(
      flow_ops.correlation(arr(_nhwc(o["corr_input1"])), arr(_nhwc(o["corr_input2"]))),
      _nhwc(o[f"corr_out_{tag}"]))
  for k in ("3", "2"):
    errors[f"ops/channelnorm{k}"] = _err(flow_ops.channel_norm(arr(_nhwc(o[f"chnorm_input{k}"]))),
                                        _nhwc(o[f"chnorm_out{k}_{tag}"]))

  s = g("siggraph17")
  variables, model = weights.module("siggraph17")
  sig = porting.build_module("siggraph17", model, dtype=jdt)
  for hw in ("64x64", "48x80"):
    ab, feat = jax.jit(sig.apply)(variables, arr(_nhwc(s[f"L_{hw}"])))
    errors[f"siggraph17/ab_{hw}"] = _err(ab, _nhwc(s[f"ab_{hw}_{tag}"]))
    # Every 4th feature channel is kept (as in the shared float64 golden file) to keep the repo
    # small.
    errors[f"siggraph17/conv10_2_{hw}"] = _err(np.asarray(feat)[..., ::4],
                                               _nhwc(s[f"conv10_2_{hw}_{tag}_ch0to128step4"]))

  f = g("flownet2")
  variables, _ = weights.module("flownet2")
  fnet = porting.build_module("flownet2", {}, dtype=jdt)
  run_flow = jax.jit(lambda v, a, b: flow_from_gray(lambda x, y: fnet.apply(v, x, y), a, b))
  for hw in ("64x64", "64x128"):
    flow = run_flow(variables, arr(_nhwc(f[f"L1_{hw}"])), arr(_nhwc(f[f"L2_{hw}"])))
    errors[f"flownet2/flow_{hw}"] = _err(flow, _nhwc(f[f"flow_{hw}_{tag}"]))

  t = g("tcvc")
  colorizer = weights.colorizer(jdt)
  with_srl = jax.jit(lambda v, x: colorizer.model.apply(v, x, srl=True))
  for case in ("N5_64x64", "N3_64x64", "N2_64x64"):
    clip = _nhwc(t[f"clip_{case}"])  # [N, H, W, 1]
    if case == "N5_64x64":  # the public API on a bare window (one case: each shape costs a compile)
      errors[f"tcvc/colorize_window_{case}"] = _err(colorizer.colorize_window(clip),
                                                    _nhwc(t[f"out_{case}_{tag}"])[0])
    outs = with_srl(colorizer.variables, arr(clip[None]))
    for ours, theirs in TCVC_OUTPUTS:
      if f"{theirs}_{case}_is_none" in t:
        errors[f"tcvc/{ours}_{case}"] = None if outs[ours] is None else float("inf")
      else:
        errors[f"tcvc/{ours}_{case}"] = _err(outs[ours], _nhwc(t[f"{theirs}_{case}_{tag}"]))

  # A batch of two non-square windows (tcvc_batch.npz, made by golden/make_tcvc_batch.py with the
  # original-code harness): outputs kept at every STEP-th row and column.
  b = g("tcvc_batch")
  case, step = "N4B2_64x128", 4
  outs = with_srl(colorizer.variables, arr(_nhwc(b["clip_B2N4_64x128"])))
  for ours, theirs in TCVC_OUTPUTS:
    errors[f"tcvc/{ours}_{case}"] = _err(np.asarray(outs[ours])[..., ::step, ::step, :],
                                         _nhwc(b[f"{theirs}_B2N4_64x128_{tag}"]))
  return errors


# --- hints.npz: SIGGRAPH17 alone with user colour hints (README "hints.npz") ---

HINT_CASES = ("sparse", "dense")


def compute_hint_errors(weights, dtype):
  """Max abs errors of SIGGRAPH17 with hints vs hints.npz, {name: error}.

  ab against the same precision's golden; conv10_2 (channels ::4) against the float64 golden, the
  only one published (so a float32 run's error includes the original's f32-f64 gap).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from tcvc_jax import porting  # pylint: disable=g-import-not-at-top

  jdt = jnp.float64 if dtype == "float64" else jnp.float32
  tag = "f64" if dtype == "float64" else "f32"
  z = np.load(os.path.join(GOLDEN_DIR, "hints.npz"))
  gray = jnp.asarray(_nhwc(z["L"]), jdt)
  variables, model = weights.module("siggraph17")
  sig = porting.build_module("siggraph17", model, dtype=jdt)
  run = jax.jit(lambda v, g, ab, mask: sig.apply(v, g, hint_ab=ab, hint_mask=mask))
  errors = {}
  for case in HINT_CASES:
    ab, feat = run(variables, gray, jnp.asarray(_nhwc(z[f"hint_ab_{case}"]), jdt),
                   jnp.asarray(_nhwc(z[f"hint_mask_{case}"]), jdt))
    errors[f"hints/ab_{case}"] = _err(ab, _nhwc(z[f"ab_{case}_{tag}"]))
    errors[f"hints/conv10_2_{case}"] = _err(np.asarray(feat)[..., ::4],
                                            _nhwc(z[f"conv10_2_{case}_f64_ch0to128step4"]))
  return errors


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
  parser.add_argument("--out", required=True, help="JSON file for {name: max abs error}")
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  if args.dtype == "float64" and not jax.config.read("jax_enable_x64"):
    jax.config.update("jax_enable_x64", True)
  weights = FormulaWeights(args.dtype)
  errors = compute_errors(weights, args.dtype)
  # The hint goldens use the same SIGGRAPH17 weights: one process for both.
  errors.update(compute_hint_errors(weights, args.dtype))
  with open(args.out, "w") as f:
    json.dump(errors, f, indent=1)

if __name__ == "__main__":
  main()
