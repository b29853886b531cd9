"""Converts the original PyTorch checkpoints to Flax variables and back.

Sources (PyTorch files are read by `tcvc_jax.pth`, a restricted reader that needs no PyTorch and
refuses every pickled global outside a short allow-list: no code in a file ever runs):
  * a full TCVC_IDC state_dict (e.g. `80000_G.pth`), with or without a leading `module.`;
  * a standalone SIGGRAPH17 state_dict (e.g. `siggraph17-df00044c.pth`);
  * a FlowNet2 checkpoint: a dict whose `state_dict` holds the FlowNet2 weights.

A PyTorch key `a.b.c.weight` maps to the Flax path a/b/c/kernel (Conv2d and ConvTranspose2d weights
are transposed by (2, 3, 1, 0)), BatchNorm `weight`/`bias` to params scale/bias and
`running_mean`/`running_var` to batch_stats mean/var. Entries the Flax model does not use
(`num_batches_tracked`, SIGGRAPH17's unused `model_class`) are kept verbatim under `extras`, so
converting back reproduces the state_dict exactly. What converting back writes anyway (zero
counters, `flax_to_torch`'s own key order) is not stored, so folder -> .pth -> folder gives the same
folder. Weights must be real floating point (float16, bfloat16, float32, float64).

A converted checkpoint is a folder, written and read by `tcvc_jax.converted` (which also converts a
.pth into one). The command-line tool is `python -m tcvc_jax.convert` (convert.py); writing PyTorch
files is export.py.
"""

import collections
import json
import logging
import os

import numpy as np

from tcvc_jax import _pth_unwrap
from tcvc_jax import pth
from tcvc_jax.models import spec as spec_lib

KINDS = ("tcvc", "siggraph17", "flownet2")
# Top-level torch module of each kind inside the full model.
_PREFIX = {"siggraph17": "fea_key.", "flownet2": "flow."}
_TCVC_TOP = ("L_fea_extractor.", "channel_reduction.", "weigting.", "feature_refine.", "fea_key.",
             "flow.")


class ConversionError(ValueError):
  """A checkpoint that cannot be converted; the message says why."""


# --------------------------------------------------------------------------- reading PyTorch files


def load_torch_file(path):
  """Reads a .pth / .pth.tar state_dict; returns ({key: numpy array}, kind). No PyTorch needed.

  A checkpoint dict holding one state_dict ({'state_dict': ...}: FlowNet2's files; {'model': ...,
  'optimizer': ...}) is unwrapped, and DataParallel's `module.` / torch.compile's `_orig_mod.`
  prefixes are stripped.
  """
  try:
    sd = pth.load_state_dict(path)
  except pth.PthError as e:  # (format_of names no PyTorch file: None for one without a state_dict)
    what = _pth_unwrap.format_of(path)
    raise ConversionError(f"{os.fsdecode(os.fspath(path))}: {what}, not a PyTorch checkpoint"
                          if what else str(e)) from e
  sd = {_pth_unwrap.unprefixed(k): v for k, v in sd.items()}
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


_LEAF_TO_TORCH = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                  ("params", "bias"): "bias",
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


_KERNEL_TO_TORCH = (3, 2, 0, 1)  # HWIO -> OIHW


def _torch_key(col, path):
  leaf = _LEAF_TO_TORCH.get((col, path[-1]))
  if leaf is None:
    raise ConversionError(f"no PyTorch counterpart for {col}/{'/'.join(path)}")
  return ".".join(path[:-1] + (leaf,))


def _shapes_as_torch(variables):
  """{torch key: a zero-stride array of the PyTorch shape and the leaf's dtype}: what `validate`
  needs of flax variables, without copying them."""
  sd = {}
  for col in ("params", "batch_stats"):
    for path, v in flatten(dict(variables.get(col, {}))):
      shape = tuple(np.shape(v))
      if path[-1] == "kernel" and len(shape) == len(_KERNEL_TO_TORCH):
        shape = tuple(shape[a] for a in _KERNEL_TO_TORCH)
      sd[_torch_key(col, path)] = np.broadcast_to(np.zeros((), np.dtype(v.dtype)), shape)
  return sd


def check_variables(variables, kind, model, path, record):
  """Checks flax variables against the model description stored with them (in `record`).

  Raises:
    ConversionError: naming the path, and the keys or sizes that differ (a hand-edited or
      mismatched description would otherwise fail deep inside the model's first call).
  """
  sd = _shapes_as_torch(variables)
  weights = validate(sd, kind, path)
  if kind == "tcvc":
    _matching(model, weights, path, record)


def flax_to_torch(variables, extras=None, key_order=None):
  """Inverse of `torch_to_flax`: {torch key: numpy array} (order = key_order where known)."""
  sd = {}
  for col in ("params", "batch_stats"):
    for path, v in flatten(dict(variables.get(col, {}))):
      v = np.asarray(v)
      if path[-1] == "kernel":
        v = np.transpose(v, _KERNEL_TO_TORCH)
      sd[_torch_key(col, path)] = np.ascontiguousarray(v)
  sd.update({k: np.asarray(v) for k, v in (extras or {}).items()})
  # BatchNorm modules of a model trained here have no counter; PyTorch expects one. A converted
  # .pth's own key order names its counters: where it has none (PyTorch < 0.4.1 wrote none), none
  # is added.
  listed = set(key_order or ())
  for k in [k for k in sd if k.endswith(".running_mean")]:
    counter = k[:-len("running_mean")] + "num_batches_tracked"
    if not listed or counter in listed:
      sd.setdefault(counter, np.zeros((), np.int64))
  if key_order:
    rank = {k: i for i, k in enumerate(key_order)}
    sd = dict(sorted(sd.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
  return sd


# --------------------------------------------------------------------------- model structure


def _vote(sd, candidates, default):
  """The most common size among `(key, axis)` entries present in `sd` (`default` if none).

  Every layer size shows in several entries (a conv's output channels, its bias, the next layer's
  input channels, a BatchNorm's statistics), so one missing or mis-shaped entry cannot change the
  inferred model: the report then names exactly that entry.
  """
  sizes = [int(sd[k].shape[ax]) for k, ax in candidates
           if k in sd and np.ndim(sd[k]) > ax]
  if not sizes:
    return default
  return collections.Counter(sizes).most_common(1)[0][0]


# Per SIGGRAPH17 block: the torch indices of its convs and of its BatchNorm (None: no BN).
_SIG_BLOCKS = {1: ((0, 2), 4), 2: ((0, 2), 4), 3: ((0, 2, 4), 6), 4: ((0, 2, 4), 6),
               5: ((0, 2, 4), 6), 6: ((0, 2, 4), 6), 7: ((0, 2, 4), 6), 8: ((1, 3), 5),
               9: ((1,), 3), 10: ((1,), None)}
_SHORTCUT = {8: "model3short8", 9: "model2short9", 10: "model1short10"}


def _sig_widths(sd, pre):
  widths = []
  for k in range(1, 11):
    convs, bn = _SIG_BLOCKS[k]
    cands = []
    for i in convs:
      cands += [(f"{pre}model{k}.{i}.weight", 0), (f"{pre}model{k}.{i}.bias", 0),
                (f"{pre}model{k}.{i}.weight", 1) if i != convs[0] or k >= 8 else (None, 0)]
    if bn is not None:
      cands += [(f"{pre}model{k}.{bn}.{leaf}", 0)
                for leaf in ("weight", "bias", "running_mean", "running_var")]
    if k >= 8:
      cands += [(f"{pre}model{k}up.0.weight", 1), (f"{pre}model{k}up.0.bias", 0),
                (f"{pre}{_SHORTCUT[k]}.0.weight", 0), (f"{pre}{_SHORTCUT[k]}.0.bias", 0)]
    if k < 7:
      cands.append((f"{pre}model{k + 1}.0.weight", 1))
    if k >= 7:  # input of the next upsampling (ConvTranspose weights are [in, out, kh, kw])
      cands.append((f"{pre}model{k + 1}up.0.weight", 0))
    if k in (1, 2, 3):
      cands.append((f"{pre}{_SHORTCUT[11 - k]}.0.weight", 1))
    if k == 10:
      cands.append((f"{pre}model_out.0.weight", 1))
    widths.append(_vote(sd, [c for c in cands if c[0]],
                        spec_lib.RELEASED["colorizer_widths"][k - 1]))
  return widths


def infer_spec(sd, kind):
  """The model description that `sd` (torch keys, without kind prefix) fits.

  Returns:
    a ModelSpec for "tcvc", {"widths": [...]} for "siggraph17", {} for "flownet2".
  """
  if kind == "flownet2":
    return {}
  widths = _sig_widths(sd, "fea_key." if kind == "tcvc" else "")
  if kind == "siggraph17":
    return {"widths": widths}
  conv = lambda name, axis: ([(f"{name}.weight", axis)]
                             + ([(f"{name}.bias", 0)] if axis == 0 else []))
  lf = _vote(sd, conv("L_fea_extractor.0", 0) + conv("L_fea_extractor.2", 0)
             + conv("L_fea_extractor.2", 1), 32)
  rf = _vote(sd, conv("channel_reduction.conv1", 0) + conv("channel_reduction.conv2", 0)
             + conv("channel_reduction.conv2", 1) + conv("channel_reduction.conv3", 0)
             + conv("channel_reduction.conv3", 1), 64)
  wh = [_vote(sd, conv("weigting.conv1", 0) + conv("weigting.conv2", 1), 196),
        _vote(sd, conv("weigting.conv2", 0) + conv("weigting.conv3", 1), 64)]
  rh = [_vote(sd, conv("feature_refine.conv1", 0) + conv("feature_refine.conv2", 1), 196),
        _vote(sd, conv("feature_refine.conv2", 0) + conv("feature_refine.conv3", 1), 128)]
  flow = "flownet2" if any(k.startswith("flow.") for k in sd) else "classical"
  return spec_lib.ModelSpec(colorizer_widths=widths, l_features=lf, reduced_features=rf,
                            weighting_hidden=wh, refine_hidden=rh, flow_type=flow)


def build_module(kind, model, dtype=None):
  """The Flax module of a checkpoint kind; `model` as `infer_spec` returns it."""
  from tcvc_jax.models import flownet2  # pylint: disable=g-import-not-at-top
  from tcvc_jax.models import siggraph17  # pylint: disable=g-import-not-at-top
  kw = {} if dtype is None else {"dtype": dtype}
  if kind == "tcvc":
    return model.build(**kw)
  if kind == "siggraph17":
    return siggraph17.SIGGRAPH17(
        widths=tuple(model.get("widths", siggraph17.DEFAULT_WIDTHS)), **kw)
  if kind == "flownet2":
    return flownet2.FlowNet2(**kw)
  raise ConversionError(f"unknown checkpoint kind {kind!r}")


def expected_shapes(kind, model):
  """{torch key: shape} of every entry the Flax model needs (extras excluded)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  module = build_module(kind, model)
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


def _listing(items, limit=12):
  shown = ", ".join(items[:limit])
  return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_dtypes(sd, path="state_dict"):
  """Raises ConversionError naming the first entry that is not real floating point (counters aside),
  or the entries that hold NaN or infinite values.

  An integer or complex weight would be cast silently: to zeros, or without its imaginary part.
  """
  bad = []
  for k, v in sd.items():
    if k.endswith("num_batches_tracked"):
      continue
    if np.dtype(v.dtype).name not in _FLOAT_DTYPES:
      raise ConversionError(f"{path}: {k} has dtype {np.dtype(v.dtype).name}; weights must be "
                            f"{', '.join(_FLOAT_DTYPES[:-1])} or {_FLOAT_DTYPES[-1]}")
    count = int(np.size(v) - np.count_nonzero(np.isfinite(np.asarray(v))))
    if count:
      bad.append(f"{k} ({count} of {np.size(v)})")
  if bad:  # they would colorize every frame to NaN, silently
    raise ConversionError(f"{path}: weights that are NaN or infinite in {_listing(bad, 5)}: a run "
                          "that diverged? Take an earlier checkpoint")


def validate(sd, kind, path="state_dict"):
  """Checks `sd` against the model it implies; raises one ConversionError naming every bad key.

  Returns:
    the model description (`infer_spec`).
  """
  check_dtypes(sd, path)
  model = infer_spec(sd, kind)
  want = expected_shapes(kind, model)
  have = {k: tuple(v.shape) for k, v in sd.items() if not _is_extra(k)}
  missing = [k for k in want if k not in have]
  unexpected = [k for k in have if k not in want]
  shaped = [f"{k} {have[k]} (expected {want[k]})" for k in want if k in have and have[k] != want[k]]
  problems = []
  for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
    if items:
      problems.append(f"{label} keys: {_listing(items)}")
  if problems:
    raise ConversionError(f"{path}: does not match the {kind} model; " + "; ".join(problems))
  return model


# A record in .pth files written by export.py: the ModelSpec (torch ignores it). It carries what the
# weights cannot say, e.g. the classical flow's options.
SPEC_RECORD = "tcvc_model.json"


def read_torch_checkpoint(path):
  """A .pth file checked against the model it implies: (state_dict, kind, model description)."""
  sd, kind = load_torch_file(path)
  model = validate(sd, kind, path)
  stored = pth.read_extra(path, SPEC_RECORD) if kind == "tcvc" else None
  if stored is not None:
    try:
      spec = spec_lib.ModelSpec.from_json(json.loads(stored))
    except (ValueError, TypeError) as e:
      raise ConversionError(f"{path}: bad {SPEC_RECORD} record ({e})") from e
    model = _matching(spec, model, path, f"{SPEC_RECORD} record")
  elif kind == "tcvc" and model.flow_type == "classical":
    logging.warning("%s: a TCVC state_dict without FlowNet2 weights (tcvc_jax's classical flow) "
                    "and without its %s record, which torch.load + torch.save drops: the classical "
                    "flow's options are not known and its defaults are used (if the run used "
                    "others, colours differ); convert the run's workdir to .pth again",
                    path, SPEC_RECORD)
  return sd, kind, model


def _matching(spec, model, path, record):
  """`spec` (stored in `record`) if its sizes and flow type are `model`'s (the weights')."""
  ours, weights = spec.to_json(), model.to_json()
  diffs = [f"{k}: {ours[k]} there, {weights[k]} in the weights" for k in weights
           if k != "classical_flow" and ours[k] != weights[k]]
  if diffs:
    raise ConversionError(f"{path}: its {record} does not match its weights ({'; '.join(diffs)})")
  return spec
