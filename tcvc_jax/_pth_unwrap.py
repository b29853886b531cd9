"""What a loaded .pth holds: the state_dict inside a checkpoint dict, keys without wrappers'
prefixes, and what a file that is not a PyTorch checkpoint is (for the converter's messages)."""

import logging
import os
import zipfile

import numpy as np

from tcvc_jax import pth


def is_state_dict(obj):
  return (isinstance(obj, dict) and bool(obj)
          and all(type(k) is str and isinstance(v, np.ndarray) for k, v in obj.items()))


def state_dict_of(obj, path):
  """The state_dict in a loaded .pth: the object itself, or the one entry of a checkpoint dict
  that is a state_dict ({'state_dict': ...}, {'model': ..., 'optimizer': ..., 'epoch': ...})."""
  if is_state_dict(obj):
    return obj
  name = os.fsdecode(os.fspath(path))
  if isinstance(obj, dict) and not obj:
    raise pth.PthError(f"{name}: an empty dict, not a state_dict")
  if isinstance(obj, dict):
    found = [k for k, v in obj.items() if is_state_dict(v)]
    if "state_dict" in found or len(found) == 1:
      key = "state_dict" if "state_dict" in found else found[0]
      if key != "state_dict":
        logging.info("%s: the state_dict in its entry %r", name, key)
      return obj[key]
    keys = ", ".join(repr(k) for k in list(obj)[:8])
    if found:
      raise pth.PthError(f"{name}: holds several state_dicts ({', '.join(found)}); save the "
                         "model's alone (torch.save(sd, path))")
    raise pth.PthError(f"{name}: not a state_dict (expected a dict of tensors; a dict of {keys} "
                       "without one)")
  got = "one tensor" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
  raise pth.PthError(f"{name}: not a state_dict (expected a dict of tensors, got {got})")


def unprefixed(key):
  """A key without the prefixes that wrappers add: DataParallel's `module.`, torch.compile's
  `_orig_mod.` (any number, any order)."""
  while key.startswith(("module.", "_orig_mod.")):
    key = key.split(".", 1)[1]
  return key


def format_of(path):
  """What a file that is not a PyTorch checkpoint is, where its first bytes tell; else None."""
  try:
    with open(path, "rb") as f:
      head = f.read(512)
  except OSError:
    return None
  size = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
  for test, what in ((head[:2] == b"\x1f\x8b", "a gzip file"),
                     (head[:6] == b"\x93NUMPY", "a NumPy .npy file"),
                     (head[:4] == b"\x89HDF", "an HDF5 file"),
                     (head[257:262] == b"ustar", "a tar archive"),
                     (head[8:9] == b"{" and 0 < size < 10**8, "a safetensors file")):
    if test:
      return what
  if head[:4] == b"PK\x03\x04":
    try:
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
    except (OSError, zipfile.BadZipFile):
      return None
    if names and all(n.endswith(".npy") for n in names):
      return "a NumPy .npz archive"
  return None
