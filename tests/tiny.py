"""Tiny TCVC variants for fast tests (the real architecture with narrow layers)."""

import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax.models.tcvc import TCVC

TINY_KWARGS = dict(
    colorizer_widths=(8, 8, 8, 8, 8, 8, 8, 8, 8, 16), l_features=4, reduced_features=4,
    weighting_hidden=(8, 4), refine_hidden=(8, 8), flow_type="classical",
    classical_flow=(("num_scales", 2), ("num_warps", 2), ("num_iters", 5)))


def tiny_model(**overrides):
  return TCVC(**{**TINY_KWARGS, **overrides})


def tiny_variables(model, n=3, size=32, seed=0):
  """Random variables for `model` without compiling its initialiser (XLA takes ~10 s for that on CPU).

  Kernels have std 1/sqrt(fan_in) like PyTorch's default; biases and BatchNorm statistics are randomised
  too, so that a mistake in any of them changes the outputs.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, n, size, size, 1)))
  rs = np.random.RandomState(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(s.shape[:-1]))
      return (rs.randn(*s.shape) / np.sqrt(fan_in)).astype(np.float32)
    if name in ("bias", "mean"):
      return (0.05 * rs.randn(*s.shape)).astype(np.float32)
    return (1.0 + 0.2 * rs.rand(*s.shape)).astype(np.float32)  # BatchNorm scale and var

  return jax.tree_util.tree_map_with_path(fill, {"params": shapes["params"],
                                                 "batch_stats": shapes["batch_stats"]})
