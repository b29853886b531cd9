"""Writing PyTorch files: converted folders back to their state_dict, train.py runs as TCVC_IDC.

A train.py workdir exports as the original's TCVC_IDC state_dict: the keys, dtypes and shapes of the
original in its order (`models/tcvc_idc_keys.txt`), float32 weights, int64 BatchNorm counters, so
that the original code loads it with `load_state_dict(strict=True)`. SIGGRAPH17's classification
head (`fea_key.model_class.0.*`, 529 colour bins from conv8) is unused by TCVC, so a model trained
here has none: it is written as zeros, which the original loads and never reads. Reduced-size models
export in the same layout with their own shapes; only tcvc_jax can load those. The file also holds
the ModelSpec in an extra record that torch ignores (the classical flow's options live nowhere
else). No PyTorch is needed.
"""

import json
import os

import numpy as np

from tcvc_jax import atomic
from tcvc_jax import converted
from tcvc_jax import porting
from tcvc_jax import pth
from tcvc_jax.models import spec as spec_lib

_KEY_ORDER_FILE = os.path.join(os.path.dirname(__file__), "models", "tcvc_idc_keys.txt")
_CLASS_BINS = 529
_CLASS_HEAD = "fea_key.model_class.0."


def tcvc_key_order():
  """Keys of the original TCVC_IDC state_dict in its order."""
  with open(_KEY_ORDER_FILE) as f:
    return [line.strip() for line in f if line.strip()]


def original_state_dict(variables, spec):
  """Flax TCVC variables -> {torch key: array} in the original's layout and key order."""
  order = tcvc_key_order()
  sd = porting.flax_to_torch(variables, key_order=order)
  if _CLASS_HEAD + "weight" not in sd:
    sd[_CLASS_HEAD + "weight"] = np.zeros((_CLASS_BINS, spec.colorizer_widths[7], 1, 1),
                                          np.float32)
    sd[_CLASS_HEAD + "bias"] = np.zeros((_CLASS_BINS,), np.float32)
  rank = {k: i for i, k in enumerate(order)}
  sd = dict(sorted(sd.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
  return {k: v if v.dtype == np.int64 else v.astype(np.float32, copy=False)
          for k, v in sd.items()}


def workdir_state_dict(workdir, step=None):
  """A train.py workdir's checkpoint (latest or `step`): (state_dict, ModelSpec, step).

  Raises:
    porting.ConversionError: no such checkpoint, or the workdir's model.json does not match it.
  """
  from tcvc_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  try:
    variables, spec, step = checkpointing.load_workdir(workdir, step)
  except (FileNotFoundError, spec_lib.SpecError) as e:
    raise porting.ConversionError(str(e)) from e
  return original_state_dict(variables, spec), spec, step


def _write_pth(sd, out_path, overwrite, spec=None):
  extra = None if spec is None else {porting.SPEC_RECORD: json.dumps(spec.to_json()).encode()}
  try:
    pth.save(sd, out_path, overwrite=overwrite, extra=extra)
  except atomic.OutputExistsError as e:
    raise porting.ConversionError(str(e)) from e
  except OSError as e:
    raise porting.ConversionError(f"cannot write {out_path}: {e.strerror or e}") from e


def _check_target(out_path, overwrite, src):
  try:
    atomic.check_apart(out_path, src)
  except atomic.OutputIsInputError as e:
    raise porting.ConversionError(str(e)) from e
  converted.check_parents(out_path)
  if os.path.isdir(out_path):  # --overwrite replaces a file, never a folder
    raise porting.ConversionError(f"cannot write {out_path}: it is a folder, not a file")
  try:
    atomic.check_target(out_path, overwrite)
  except OSError as e:
    raise porting.ConversionError(str(e)) from e


def export_workdir(workdir, out_path, step=None, overwrite=False):
  """A train.py workdir -> TCVC_IDC .pth; returns (ModelSpec, step)."""
  _check_target(out_path, overwrite, workdir)
  sd, spec, step = workdir_state_dict(workdir, step)
  _write_pth(sd, out_path, overwrite, spec)
  return spec, step


def export_converted(src_dir, out_path, overwrite=False):
  """A converted folder -> its PyTorch state_dict, bit for bit and in its original key order.

  A TCVC folder's ModelSpec goes into the file's model record.
  """
  _check_target(out_path, overwrite, src_dir)
  variables, meta, extras = converted.load_converted(src_dir)
  sd = porting.flax_to_torch(variables, extras, meta.get("key_order"))
  # load_converted has checked the weights against the folder's model description.
  _write_pth(sd, out_path, overwrite, meta["model"] if meta["kind"] == "tcvc" else None)
  return out_path
