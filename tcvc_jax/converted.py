"""The converted checkpoint folder: writing and reading it, and converting a PyTorch file into one.

The folder holds an orbax PyTree checkpoint in `variables/` and `tcvc_meta.json` (kind, the model
description (`ModelSpec` for TCVC, the widths for SIGGRAPH17), the original key order).
"""

import contextlib
import json
import logging
import os
import re
import threading
import time

import numpy as np

from tcvc_jax import atomic
from tcvc_jax import porting
from tcvc_jax.models import spec as spec_lib
from tcvc_jax.porting import ConversionError

META_FILE = "tcvc_meta.json"
VARIABLES_DIR = "variables"
FORMAT_VERSION = 2


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
  return {".".join(p): v for p, v in porting.flatten(tree)}


def _model_json(kind, model):
  return model.to_json() if kind == "tcvc" else dict(model)


def _model_from_json(kind, data, path):
  if kind != "tcvc":
    return dict(data or {})
  try:
    return spec_lib.ModelSpec.from_json(data or {})
  except (spec_lib.SpecError, TypeError) as e:
    raise ConversionError(f"{path}: bad model description in {META_FILE} ({e})") from e


def check_utf8(path, what="checkpoint"):
  """Raises ConversionError if `path` is not UTF-8: TensorStore, which writes the checkpoint's
  arrays, fails on such a name with a C++ binding error (after 100 lines of warnings)."""
  try:
    os.fsencode(os.path.abspath(path)).decode("utf-8")
  except UnicodeDecodeError:
    raise ConversionError(f"cannot write {os.fsdecode(path)!r}: a {what} folder's path must be "
                          "UTF-8 text (the checkpoint format's arrays are written by TensorStore, "
                          "which takes no other); choose another name") from None


def check_parents(path):
  """Raises ConversionError if a file stands where a folder above `path` should be."""
  p = os.path.dirname(os.fspath(path))
  while p and not os.path.lexists(p) and os.path.dirname(p) != p:
    p = os.path.dirname(p)
  if p and os.path.lexists(p) and not os.path.isdir(p):
    what = "a file, not a folder" if os.path.isfile(p) else "not a folder"
    raise ConversionError(f"cannot write {path}: {p} is {what}")


def _replace_file(out):
  """Commits the folder `out` where a file or a link is (what --overwrite asks for)."""
  aside = out.tmp + ".old"
  with atomic.commits_held():  # an interrupt finds the file or the folder in place, never neither
    os.rename(out.path, aside)
    try:
      out.commit()
    except BaseException:
      if not os.path.lexists(out.path):
        os.rename(aside, out.path)
      raise
  os.remove(aside)


def save_converted(out_dir, variables, kind, model, extras=None, key_order=None, overwrite=False):
  """Writes a converted checkpoint directory atomically (a temp dir renamed into place).

  Missing parent folders are made, and removed again if the write fails or is interrupted.
  `overwrite` replaces an earlier converted checkpoint, an empty folder or a file, never another
  folder (its files would go with it).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  check_utf8(out_dir)
  check_parents(out_dir)
  if (overwrite and os.path.isdir(out_dir) and not os.path.islink(out_dir) and os.listdir(out_dir)
      and not is_converted_dir(out_dir)):  # a folder of the user's that shares the name
    raise ConversionError(f"{out_dir} is a folder but not a converted checkpoint; --overwrite "
                          "replaces only an earlier checkpoint: choose another output")
  others = sorted(set(os.listdir(out_dir)) - {META_FILE, VARIABLES_DIR,
                                              *atomic.FILE_MANAGER_FILES}) if (
      overwrite and is_converted_dir(out_dir) and not os.path.islink(out_dir)) else []
  if others:  # files of the user's (notes, an eval's results) would go with it
    raise ConversionError(f"{out_dir} holds more than a converted checkpoint "
                          f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); "
                          "--overwrite replaces only a checkpoint folder: choose another output")
  parents = out = None
  try:
    parent = os.path.dirname(os.path.abspath(os.fspath(out_dir)))
    if not os.path.isdir(parent):
      parents = atomic.NewFolder(parent)
    out = atomic.AtomicOutput(out_dir, directory=True, overwrite=overwrite)
    with out:
      tree = {c: dict(variables[c]) for c in ("params", "batch_stats") if variables.get(c)}
      if extras:
        tree["extras"] = _nest(extras)
      # A signal waits for the write: orbax's threads would go on writing into the temporary
      # folder after its removal (and leave it behind).
      threads = set(threading.enumerate())
      with quiet_orbax_errors():
        try:
          with atomic.commits_held():
            ocp.PyTreeCheckpointer().save(os.path.join(out.tmp, VARIABLES_DIR), tree)
        except BaseException:  # a failed save (a full disk): its threads end before the removal
          for t in set(threading.enumerate()) - threads:
            t.join(timeout=10)
          raise
      meta = {"format_version": FORMAT_VERSION, "kind": kind, "model": _model_json(kind, model),
              "key_order": list(key_order or [])}
      atomic.write_json(os.path.join(out.tmp, META_FILE), meta)
      if os.path.islink(out.path) or (os.path.lexists(out.path) and not os.path.isdir(out.path)):
        _replace_file(out)
  except BaseException as e:
    if out is not None and not isinstance(e, KeyboardInterrupt):
      _sweep(out.tmp)
    if parents is not None:
      parents.discard()
    if isinstance(e, atomic.OutputExistsError):
      raise ConversionError(str(e)) from e
    if isinstance(e, OSError):
      raise ConversionError(f"cannot write {out_dir}: {e.strerror or e}") from e
    if isinstance(e, Exception) and not isinstance(e, ConversionError):  # orbax / tensorstore's
      raise ConversionError(f"cannot write {out_dir}: {write_failure(e)}") from e
    raise
  if parents is not None:
    parents.keep()
  return out.path


def _sweep(path, seconds=1.0):
  """Removes `path` again while tensorstore's own threads (not Python's) may still make folders in
  it after a failed write: 4 of 8 failed writes on a full disk left empty folders behind."""
  end = time.monotonic() + seconds
  while time.monotonic() < end:
    if os.path.lexists(path):
      try:
        atomic.remove(path)
      except OSError:
        pass
    time.sleep(0.05)


class _OrbaxErrors(logging.Filter):
  """Drops orbax's own error records (its writing threads log the exception the save raises)."""

  def filter(self, record):
    return not (record.levelno >= logging.ERROR
                and f"{os.sep}orbax{os.sep}" in (record.pathname or ""))


@contextlib.contextmanager
def quiet_orbax_errors():
  """Orbax's error records dropped while it writes: a failed save raises what its writing
  threads log (three times over, each with TensorStore's whole message): said once, by the raise."""
  quiet = _OrbaxErrors()
  logging.getLogger("absl").addFilter(quiet)
  try:
    yield
  finally:
    logging.getLogger("absl").removeFilter(quiet)


def write_failure(err: BaseException) -> str:
  """The reason of an Orbax / TensorStore write error, short: the system's words for its error
  code (`No space left on device`), else its message's first 300 characters."""
  code = re.search(r"os_error_code='(\d+)'", str(err))
  if code:
    return os.strerror(int(code.group(1)))
  if isinstance(err, OSError) and err.strerror:
    return err.strerror
  return " ".join(str(err).split())[:300]


def is_converted_dir(path):
  return (os.path.isfile(os.path.join(path, META_FILE))
          and os.path.isdir(os.path.join(path, VARIABLES_DIR)))


def not_a_checkpoint_folder(path):
  """The message for a folder that is neither a converted checkpoint nor a train.py workdir."""
  from tcvc_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  text = (f"{path}: not a checkpoint folder (a train.py workdir, with model.json and "
          f"checkpoints/, or a converted checkpoint, with {META_FILE} and {VARIABLES_DIR}/)")
  if checkpointing.is_workdir(path):  # load_converted given a workdir: tcvc_jax.load reads those
    return (f"{path} is a train.py workdir, not a converted checkpoint folder: tcvc_jax.load "
            "reads it, or `python -m tcvc_jax.convert` converts it")
  parts = os.path.abspath(path).split(os.sep)
  for depth in (1, 2, 3):  # checkpoints/, checkpoints/STEP/state, ...
    folder = os.sep.join(parts[:-depth]) or os.sep
    if checkpointing.is_workdir(folder):
      inside = parts[len(parts) - depth:] + [""]
      step = (os.path.join(folder, inside[0], inside[1])
              if inside[0] == checkpointing.CHECKPOINT_DIR and inside[1].isdigit() else None)
      pick = f", or {step} for the checkpoint of step {inside[1]}" if step else ""
      return f"{text}; it is inside the train.py workdir {folder}: give that{pick}"
  return text


def load_converted(path):
  """Reads a converted directory.

  Returns (variables {'params', 'batch_stats'}, meta dict, extras {key: array}).
  `meta["model"]` is the model description (a ModelSpec for TCVC).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not is_converted_dir(path):
    raise ConversionError(not_a_checkpoint_folder(path))
  try:
    with open(os.path.join(path, META_FILE)) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise ConversionError(f"{path}: unreadable {META_FILE} ({e})") from e
  if not isinstance(meta, dict) or meta.get("kind") not in porting.KINDS:
    kind = meta.get("kind") if isinstance(meta, dict) else meta
    raise ConversionError(f"{path}: unknown checkpoint kind {kind!r}")
  meta["model"] = _model_from_json(meta["kind"], meta.get("model", meta.get("model_kwargs")), path)
  try:
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(os.path.abspath(path), VARIABLES_DIR))
  except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore's many types
    reason = " ".join(str(e).split()).split(" [tensorstore_spec")[0]
    raise ConversionError(f"{path}: cannot read the weights in {VARIABLES_DIR}/ (a damaged or "
                          f"incomplete checkpoint?): {reason[:300]}") from e
  variables = {c: tree.get(c, {}) for c in ("params", "batch_stats")}
  porting.check_variables(variables, meta["kind"], meta["model"], path, META_FILE)
  return variables, meta, _unnest(tree.get("extras", {}))


def _is_default_counter(key, value, sd):
  """A zero BatchNorm counter, which `flax_to_torch` writes anyway."""
  return (key.endswith("num_batches_tracked") and value.dtype == np.int64 and value.shape == ()
          and value == 0 and key[:-len("num_batches_tracked")] + "running_mean" in sd)


def _default_order(variables, extras):
  """The key order `flax_to_torch` gives without `key_order` (no array is copied)."""
  empty = lambda tree: {k: empty(v) if isinstance(v, dict) else np.empty((0,) * np.ndim(v))
                        for k, v in tree.items()}
  return list(porting.flax_to_torch({c: empty(dict(variables.get(c, {}))) for c in variables},
                                    extras))


def convert_torch_file(src, out_dir, overwrite=False):
  """PyTorch .pth -> converted directory. Returns (out_dir, kind)."""
  try:
    atomic.check_apart(out_dir, src)
  except atomic.OutputIsInputError as e:
    raise ConversionError(str(e)) from e
  check_parents(out_dir)  # before reading (and warning about) a file of maybe gigabytes
  sd, kind, model = porting.read_torch_checkpoint(src)
  variables, extras = porting.torch_to_flax(sd)
  # What converting back writes anyway is left out: folder -> .pth -> folder gives the folder.
  extras = {k: v for k, v in extras.items() if not _is_default_counter(k, v, sd)}
  key_order = list(sd)
  if _default_order(variables, extras) == key_order:
    key_order = []
  save_converted(out_dir, variables, kind, model, extras, key_order=key_order, overwrite=overwrite)
  return out_dir, kind
