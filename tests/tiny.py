"""Tiny TCVC variants for fast tests (the real architecture with narrow layers)."""

import dataclasses
import json
import os

import jax
import numpy as np

from tcvc_jax.models.spec import RUNTIME_KEYS
from tcvc_jax.models.spec import ModelSpec
from tcvc_jax.training import train_lib

TINY_SPEC = ModelSpec(
    colorizer_widths=(8, 8, 8, 8, 8, 8, 8, 8, 8, 16), l_features=4, reduced_features=4,
    weighting_hidden=(8, 4), refine_hidden=(8, 8), flow_type="classical",
    classical_flow=(("num_scales", 2), ("num_warps", 2), ("num_iters", 5)))


def tiny_model(**overrides):
  """The tiny TCVC; `overrides` may change its sizes and its run-time options."""
  runtime = {k: overrides.pop(k) for k in list(overrides) if k in RUNTIME_KEYS}
  return dataclasses.replace(TINY_SPEC, **overrides).build(**runtime)


def tiny_variables(model, n=3, size=32, seed=0):
  """Random variables for `model`: `train_lib.init_variables` (PyTorch's default distributions,
  without compiling the initialiser), with BatchNorm statistics and scales randomised too, so that
  a mistake in any of them changes the outputs.
  """
  variables = train_lib.init_variables(model, jax.random.key(seed), (1, n, size, size, 1))
  rs = np.random.RandomState(seed)

  def fill(path, x):
    name = path[-1].key
    if name == "mean":
      return (0.05 * rs.randn(*x.shape)).astype(np.float32)
    if name in ("scale", "var"):
      return (1.0 + 0.2 * rs.rand(*x.shape)).astype(np.float32)
    return np.asarray(x)

  return jax.tree_util.tree_map_with_path(fill, variables)


def save_checkpoint(path):
  """The tiny model with `tiny_variables`, as a converted checkpoint folder at `path`."""
  from tcvc_jax import converted  # pylint: disable=g-import-not-at-top
  model = tiny_model()
  variables = jax.tree_util.tree_map(np.asarray, tiny_variables(model))
  return converted.save_converted(str(path), variables, "tcvc", TINY_SPEC)


def edit_meta(folder, kind=None, **model):
  """Changes a converted folder's tcvc_meta.json as a hand edit would: its kind and / or entries
  of its model description; the weights stay."""
  from tcvc_jax import converted  # pylint: disable=g-import-not-at-top
  path = os.path.join(folder, converted.META_FILE)
  with open(path) as f:
    meta = json.load(f)
  meta["kind"] = kind or meta["kind"]
  meta["model"].update(model)
  with open(path, "w") as f:
    json.dump(meta, f)
