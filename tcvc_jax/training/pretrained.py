"""Pretrained weights for a training run (`config.init_from`): converted TCVC / SIGGRAPH17 /
FlowNet2 checkpoints (`python -m tcvc_jax.convert`) and train.py workdirs, put in a fresh state."""

import os
from typing import Any
from typing import Sequence

from absl import logging
import jax
import numpy as np

from tcvc_jax import converted
from tcvc_jax.training import checkpointing
from tcvc_jax.training import sharding


def parse_paths(init_from: str | Sequence[str] | None) -> list[str]:
  """A comma-separated string or a sequence of paths -> list of paths (empty for None)."""
  if not init_from:
    return []
  items = init_from.split(",") if isinstance(init_from, str) else list(init_from)
  return [os.path.expanduser(p.strip()) for p in items if p and p.strip()]


def _subtrees(variables: dict[str, Any], kind: str, path: str) -> dict[tuple[str, str], Any]:
  """{(collection, top-level name): tree} that a checkpoint provides to the TCVC model."""
  if kind == "siggraph17":
    return {(c, "fea_key"): variables[c] for c in ("params", "batch_stats") if variables.get(c)}
  if kind == "flownet2":
    return {("params", "flow"): variables["params"]}
  if kind == "tcvc":
    return {(c, name): tree for c in ("params", "batch_stats")
            for name, tree in dict(variables.get(c) or {}).items()}
  raise ValueError(f"{path}: unknown checkpoint kind {kind!r}")


def load(init_from: str | Sequence[str] | None) -> dict[tuple[str, str], Any]:
  """Reads `config.init_from`: converted TCVC / SIGGRAPH17 / FlowNet2 dirs or train.py workdirs.

  Later paths override earlier ones where they overlap.

  Args:
    init_from: paths, comma-separated or as a sequence.

  Returns:
    {(collection, top-level module name): NumPy tree}, e.g. ('params', 'fea_key').

  Raises:
    ValueError: a path is neither a converted checkpoint nor a workdir.
  """
  out = {}
  for path in parse_paths(init_from):
    if converted.is_converted_dir(path):
      variables, meta, _ = converted.load_converted(path)
      kind = meta["kind"]
    elif checkpointing.is_workdir(path):
      variables, _, _ = checkpointing.load_workdir(path)
      kind = "tcvc"
    else:
      raise ValueError(f"init_from: {path} is neither a converted checkpoint (python -m "
                       "tcvc_jax.convert) nor a train.py workdir")
    found = _subtrees(variables, kind, path)
    logging.info("init_from %s (%s): %s", path, kind,
                 ", ".join(f"{c}/{n}" for c, n in sorted(found)))
    out.update(found)
  return out


def apply(state: Any, pretrained: dict[tuple[str, str], Any],
          mesh: jax.sharding.Mesh) -> tuple[Any, set[str]]:
  """Puts pretrained subtrees into a fresh state (replicated); returns it and the loaded names.

  Subtrees the model does not have (FlowNet2 weights for a classical-flow model) are skipped
  with a warning; a shape mismatch raises ValueError.
  """
  collections = {"params": dict(state.params), "batch_stats": dict(state.batch_stats or {})}
  loaded = set()
  replicated = sharding.replicated(mesh)
  for (col, name), tree in sorted(pretrained.items()):
    if name not in collections[col]:
      logging.warning("init_from: the model has no %s/%s; skipped", col, name)
      continue
    current = collections[col][name]
    want = jax.tree_util.tree_structure(current)
    got = jax.tree_util.tree_structure(tree)
    if want != got:
      raise ValueError(f"init_from: {col}/{name} has a different structure than the model's")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(current),
                            jax.tree_util.tree_leaves(tree), strict=True):
      if tuple(a.shape) != tuple(np.shape(b)):
        raise ValueError(f"init_from: {col}/{name}{jax.tree_util.keystr(path)} has shape "
                         f"{np.shape(b)}, the model wants {a.shape}")
    collections[col][name] = jax.tree_util.tree_map(
        lambda a, b: sharding.global_from_host(np.asarray(b, a.dtype), replicated), current, tree)
    loaded.add(name)
  state = state.replace(params=collections["params"], batch_stats=collections["batch_stats"])
  return state, loaded
