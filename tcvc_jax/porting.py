"""Converts the original PyTorch checkpoints to Flax variables and back.

Sources (PyTorch files are read with torch's weights-only unpickler: no code in the file ever runs):
  * a full TCVC_IDC state_dict (e.g. `80000_G.pth`), with or without a leading `module.`;
  * a standalone SIGGRAPH17 state_dict (e.g. `siggraph17-df00044c.pth`);
  * a FlowNet2 checkpoint: a dict whose `state_dict` holds the FlowNet2 weights.

A PyTorch key `a.b.c.weight` maps to the Flax path a/b/c/kernel (Conv2d and ConvTranspose2d weights are
transposed by (2, 3, 1, 0)), BatchNorm `weight`/`bias` to params scale/bias and `running_mean`/`running_var`
to batch_stats mean/var. Entries the Flax model does not use (`num_batches_tracked`, SIGGRAPH17's unused
`model_class`) are kept verbatim under `extras`, so converting back reproduces the state_dict exactly.

The converted checkpoint is a directory: an orbax PyTree checkpoint in `variables/` and `tcvc_meta.json`
(kind, model keyword arguments, the original key order).

CLI:
  python -m tcvc_jax.convert SRC.pth OUT_DIR            PyTorch -> Flax
  python -m tcvc_jax.convert SRC_DIR OUT.pth            Flax -> PyTorch (direction from SRC's type)
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

META_FILE = "tcvc_meta.json"
VARIABLES_DIR = "variables"
FORMAT_VERSION = 1
KINDS = ("tcvc", "siggraph17", "flownet2")
# Top-level torch module of each kind inside the full model.
_PREFIX = {"siggraph17": "fea_key.", "flownet2": "flow."}
_TCVC_TOP = ("L_fea_extractor.", "channel_reduction.", "weigting.", "feature_refine.", "fea_key.", "flow.")


class ConversionError(ValueError):
  """A checkpoint that cannot be converted; the message says why."""


# --------------------------------------------------------------------------- reading PyTorch files


def load_torch_file(path):
  """Reads a .pth with the weights-only unpickler; returns {key: numpy array} and the detected kind."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError("reading .pth files needs PyTorch: pip install 'tcvc_jax[convert]'") from e
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... depending on the damage
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConversionError(
        f"{path}: refused or unreadable as a weights-only PyTorch checkpoint ({first})") from e
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict) or not obj:
    raise ConversionError(f"{path}: not a state_dict (expected a dict of tensors)")
  sd = {}
  for k, v in obj.items():
    if not isinstance(k, str) or not isinstance(v, torch.Tensor):
      raise ConversionError(f"{path}: entry {k!r} is not a named tensor")
    sd[k[len("module."):] if k.startswith("module.") else k] = v.detach().cpu().numpy()
  return sd, detect_kind(sd, path)


def detect_kind(sd, path="state_dict"):
  """'tcvc', 'siggraph17' or 'flownet2' from the key names."""
  keys = list(sd)
  if any(k.startswith(_TCVC_TOP[:4]) for k in keys):
    return "tcvc"
  if any(k.startswith("model1.") for k in keys):
    return "siggraph17"
  if any(k.startswith(("flownetc.", "flownets_1.", "flownetfusion.")) for k in keys):
    return "flownet2"
  raise ConversionError(
      f"{path}: not a TCVC, SIGGRAPH17 or FlowNet2 state_dict (first keys: {', '.join(keys[:3])})")


# --------------------------------------------------------------------------- key mapping


def _is_extra(key):
  return key.endswith("num_batches_tracked") or ".model_class." in "." + key


def torch_to_flax(sd):
  """{torch key: array} -> ({'params': tree, 'batch_stats': tree}, {torch key: array} extras)."""
  variables = {"params": {}, "batch_stats": {}}
  extras = {}
  for key, v in sd.items():
    if _is_extra(key):
      extras[key] = np.asarray(v)
      continue
    *path, leaf = key.split(".")
    if leaf == "weight" and v.ndim == 4:
      col, name, v = "params", "kernel", np.transpose(v, (2, 3, 1, 0))
    elif leaf == "weight" and v.ndim == 1:
      col, name = "params", "scale"
    elif leaf == "bias":
      col, name = "params", "bias"
    elif leaf == "running_mean":
      col, name = "batch_stats", "mean"
    elif leaf == "running_var":
      col, name = "batch_stats", "var"
    else:
      raise ConversionError(f"no Flax counterpart for {key!r} with shape {v.shape}")
    node = variables[col]
    for p in path:
      node = node.setdefault(p, {})
    node[name] = np.ascontiguousarray(v)
  return variables, extras


_LEAF_TO_TORCH = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
                  ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def flatten(tree, prefix=()):
  """Nested dict -> [(path tuple, leaf)] in sorted order."""
  out = []
  for k in sorted(tree):
    v = tree[k]
    if isinstance(v, dict):
      out += flatten(v, prefix + (k,))
    else:
      out.append((prefix + (k,), v))
  return out


def flax_to_torch(variables, extras=None, key_order=None):
  """Inverse of `torch_to_flax`: {torch key: numpy array} (order = key_order where known)."""
  sd = {}
  for col in ("params", "batch_stats"):
    for path, v in flatten(dict(variables.get(col, {}))):
      leaf = _LEAF_TO_TORCH.get((col, path[-1]))
      if leaf is None:
        raise ConversionError(f"no PyTorch counterpart for {col}/{'/'.join(path)}")
      v = np.asarray(v)
      if path[-1] == "kernel":
        v = np.transpose(v, (3, 2, 0, 1))
      sd[".".join(path[:-1] + (leaf,))] = np.ascontiguousarray(v)
  sd.update({k: np.asarray(v) for k, v in (extras or {}).items()})
  # BatchNorm modules of a model trained here have no counter; PyTorch expects one.
  for k in [k for k in sd if k.endswith(".running_mean")]:
    sd.setdefault(k[:-len("running_mean")] + "num_batches_tracked", np.zeros((), np.int64))
  if key_order:
    rank = {k: i for i, k in enumerate(key_order)}
    sd = dict(sorted(sd.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
  return sd


# --------------------------------------------------------------------------- model structure


def _out_ch(sd, key):
  if key not in sd:
    raise KeyError(key)
  return int(sd[key].shape[0])


def infer_model_kwargs(sd, kind):
  """Keyword arguments of the Flax module that `sd` (torch keys, without kind prefix) fits."""
  if kind == "flownet2":
    return {}
  pre = "fea_key." if kind == "tcvc" else ""
  widths = [_out_ch(sd, f"{pre}model{k}.0.weight") for k in range(1, 8)]
  widths += [_out_ch(sd, f"{pre}model{k}.1.weight") for k in (8, 9, 10)]
  if kind == "siggraph17":
    return {"widths": widths}
  return {
      "colorizer_widths": widths,
      "l_features": _out_ch(sd, "L_fea_extractor.0.weight"),
      "reduced_features": _out_ch(sd, "channel_reduction.conv1.weight"),
      "weighting_hidden": [_out_ch(sd, f"weigting.conv{i}.weight") for i in (1, 2)],
      "refine_hidden": [_out_ch(sd, f"feature_refine.conv{i}.weight") for i in (1, 2)],
      "flow_type": "flownet2" if any(k.startswith("flow.") for k in sd) else "classical",
  }


def build_module(kind, model_kwargs, dtype=None):
  """The Flax module for a converted checkpoint kind."""
  from tcvc_jax.models import colorizer, flownet2, tcvc  # pylint: disable=g-import-not-at-top
  kw = {} if dtype is None else {"dtype": dtype}
  if kind == "tcvc":
    args = dict(model_kwargs)
    for k in ("colorizer_widths", "weighting_hidden", "refine_hidden"):
      if k in args:
        args[k] = tuple(args[k])
    return tcvc.TCVC(**args, **kw)
  if kind == "siggraph17":
    return colorizer.SIGGRAPH17(widths=tuple(model_kwargs.get("widths", colorizer.DEFAULT_WIDTHS)), **kw)
  if kind == "flownet2":
    return flownet2.FlowNet2(**kw)
  raise ConversionError(f"unknown checkpoint kind {kind!r}")


def expected_shapes(kind, model_kwargs):
  """{torch key: shape} of every entry the Flax model needs (extras excluded)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  module = build_module(kind, model_kwargs)
  x = jnp.zeros((1, 64, 64, 3 if kind == "flownet2" else 1))
  if kind == "tcvc":
    args = (jnp.zeros((1, 3, 64, 64, 1)),)
  elif kind == "flownet2":
    args = (x, x)
  else:
    args = (x,)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  tree = {c: dict(shapes.get(c, {})) for c in ("params", "batch_stats")}
  sd = flax_to_torch(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), tree))
  return {k: tuple(v.shape) for k, v in sd.items() if not _is_extra(k)}


def validate(sd, kind, path="state_dict"):
  """Checks `sd` against the model it implies; raises one ConversionError naming every bad key."""
  try:
    kwargs = infer_model_kwargs(sd, kind)
  except KeyError:  # a structural key is missing: compare against the released architecture
    kwargs = {"flow_type": "flownet2"} if kind == "tcvc" else {}
  want = expected_shapes(kind, kwargs)
  have = {k: tuple(v.shape) for k, v in sd.items() if not _is_extra(k)}
  missing = [k for k in want if k not in have]
  unexpected = [k for k in have if k not in want]
  shaped = [f"{k} {have[k]} (expected {want[k]})" for k in want if k in have and have[k] != want[k]]
  problems = []
  for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
    if items:
      shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
      problems.append(f"{label} keys: {shown}")
  if problems:
    raise ConversionError(f"{path}: does not match the {kind} model; " + "; ".join(problems))
  return kwargs


# --------------------------------------------------------------------------- converted checkpoints


def _nest(flat):
  tree = {}
  for k, v in flat.items():
    node = tree
    *path, leaf = k.split(".")
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def _unnest(tree):
  return {".".join(p): v for p, v in flatten(tree)}


def save_converted(out_dir, variables, kind, model_kwargs, extras=None, key_order=None, overwrite=False):
  """Writes a converted checkpoint directory atomically (a temp dir renamed into place)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite:
    raise ConversionError(f"{out_dir} exists; pass --overwrite to replace it")
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp_convert_", dir=parent)
  try:
    tree = {c: dict(variables[c]) for c in ("params", "batch_stats") if variables.get(c)}
    if extras:
      tree["extras"] = _nest(extras)
    ocp.PyTreeCheckpointer().save(os.path.join(tmp, VARIABLES_DIR), tree)
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "model_kwargs": model_kwargs,
            "key_order": list(key_order or [])}
    with open(os.path.join(tmp, META_FILE), "w") as f:
      json.dump(meta, f, indent=1)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


def is_converted_dir(path):
  return os.path.isfile(os.path.join(path, META_FILE)) and os.path.isdir(os.path.join(path, VARIABLES_DIR))


def load_converted(path):
  """Reads a converted directory: (variables {'params', 'batch_stats'}, meta dict, extras {key: array})."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not is_converted_dir(path):
    raise ConversionError(f"{path}: not a converted tcvc_jax checkpoint (no {META_FILE} and {VARIABLES_DIR}/)")
  with open(os.path.join(path, META_FILE)) as f:
    meta = json.load(f)
  if meta.get("kind") not in KINDS:
    raise ConversionError(f"{path}: unknown checkpoint kind {meta.get('kind')!r}")
  tree = ocp.PyTreeCheckpointer().restore(os.path.join(os.path.abspath(path), VARIABLES_DIR))
  variables = {c: tree.get(c, {}) for c in ("params", "batch_stats")}
  return variables, meta, _unnest(tree.get("extras", {}))


def convert_torch_file(src, out_dir, overwrite=False):
  """PyTorch .pth -> converted directory. Returns (out_dir, kind)."""
  sd, kind = load_torch_file(src)
  kwargs = validate(sd, kind, src)
  variables, extras = torch_to_flax(sd)
  save_converted(out_dir, variables, kind, kwargs, extras, key_order=list(sd), overwrite=overwrite)
  return out_dir, kind


def export_torch_file(src_dir, out_path, overwrite=False):
  """Converted directory (or anything `load_converted` reads) -> PyTorch .pth (a plain state_dict)."""
  import torch  # pylint: disable=g-import-not-at-top
  if os.path.exists(out_path) and not overwrite:
    raise ConversionError(f"{out_path} exists; pass --overwrite to replace it")
  variables, meta, extras = load_converted(src_dir)
  sd = flax_to_torch(variables, extras, meta.get("key_order"))
  tensors = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
  tmp = out_path + ".tmp"
  torch.save(tensors, tmp)
  os.replace(tmp, out_path)
  return out_path


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m tcvc_jax.convert",
      description="Convert TCVC / SIGGRAPH17 / FlowNet2 PyTorch checkpoints to tcvc_jax (Flax + orbax) and "
                  "back. The direction follows SRC: a .pth file is converted to a checkpoint directory, a "
                  "converted directory to a .pth state_dict.")
  parser.add_argument("src", help="a PyTorch .pth/.pth.tar file, or a converted checkpoint directory")
  parser.add_argument("out", help="output directory (PyTorch -> Flax) or .pth file (Flax -> PyTorch)")
  parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
  parser.add_argument("--verbose", action="store_true", help="show tracebacks")
  args = parser.parse_args(argv)
  try:
    if os.path.isdir(args.src):
      export_torch_file(args.src, args.out, args.overwrite)
      print(f"wrote PyTorch state_dict {args.out}")
    else:
      _, kind = convert_torch_file(args.src, args.out, args.overwrite)
      print(f"wrote {kind} checkpoint {args.out}")
  except ConversionError as e:
    if args.verbose:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
