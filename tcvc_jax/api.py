"""The public inference API: `tcvc_jax.load(path).colorize_window(gray)`."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax import convert


class Colorizer:
  """A TCVC model with its weights, ready to colorize windows of frames.

  Attributes:
    model: the Flax `TCVC` module.
    variables: {'params', 'batch_stats'} pytrees.
  """

  def __init__(self, model, variables):
    self.model = model
    self.variables = jax.tree_util.tree_map(jnp.asarray, variables)
    self._apply = jax.jit(lambda v, gray, first: _window(model, v, gray, first))
    # H and W of a window must be multiples of this: FlowNet2 needs 64, the colorizer alone 8.
    self.size_multiple = 64 if model.flow_type == "flownet2" else 8

  def colorize_window(self, gray, first_anchor=None, return_last_anchor=False):
    """Colorizes one window; the first and last frames are the anchors.

    Args:
      gray: float32 [N, H, W, 1] normalised L ((L* - 50) / 100), N >= 2, H and W multiples of 64 (8 with
        the classical flow).
      first_anchor: optional state of frame 0 returned by the previous call (`return_last_anchor=True`)
        when consecutive windows share their boundary frame; saves one colorizer pass, same result.
      return_last_anchor: also return the state of frame N-1, to pass as the next window's first_anchor.

    Returns:
      numpy [N, H, W, 2] (float32; float64 for a float64 model), normalised ab (a* / 110, b* / 110): the
      first output of the original forward. With return_last_anchor, a pair (ab, state).
    """
    gray = np.asarray(gray)
    if gray.ndim != 4 or gray.shape[-1] != 1:
      raise ValueError(f"gray must have shape [N, H, W, 1], got {gray.shape}")
    n, h, w, _ = gray.shape
    if n < 2:
      raise ValueError(f"a window needs at least 2 frames (the two anchors), got {n}")
    if h % self.size_multiple or w % self.size_multiple:
      raise ValueError(f"H and W must be multiples of {self.size_multiple}, got {h}x{w}; resize first")
    gray = jnp.asarray(gray, self.model.act_dtype)[None]
    ab, last = self._apply(self.variables, gray, first_anchor)
    ab = np.asarray(ab[0])
    ab = ab if ab.dtype == np.float64 else ab.astype(np.float32)
    return (ab, last) if return_last_anchor else ab


def _window(model, variables, gray, first_anchor):
  out = model.apply(variables, gray, first_anchor=first_anchor)
  return out["ab"], out["last_anchor"]


def load(path, dtype=jnp.float32):
  """Loads TCVC weights for inference.

  Args:
    path: a train.py workdir (its latest checkpoint), a converted checkpoint directory
      (`python -m tcvc_jax.convert`), or an original full TCVC `.pth` state_dict (converted in memory, read
      with the weights-only unpickler).
    dtype: compute dtype: float32; bfloat16 (the propagation nets and the colorizer multiply in bf16 and
      accumulate in fp32, flows stay fp32); float64 (needs jax x64).

  Returns:
    A `Colorizer`.
  """
  from tcvc_jax import checkpointing  # pylint: disable=g-import-not-at-top
  if os.path.isdir(path) and checkpointing.is_workdir(path):
    try:
      variables, kwargs = checkpointing.load_workdir(path)
    except FileNotFoundError as e:
      raise convert.ConversionError(f"{path}: {e}") from e
    kind = "tcvc"
  elif os.path.isdir(path):
    variables, meta, _ = convert.load_converted(path)
    kind, kwargs = meta["kind"], meta["model_kwargs"]
  elif os.path.isfile(path):
    sd, kind = convert.load_torch_file(path)
    kwargs = convert.validate(sd, kind, path)
    variables, _ = convert.torch_to_flax(sd)
  else:
    raise convert.ConversionError(f"{path}: no such file or directory")
  if kind != "tcvc":
    raise convert.ConversionError(
        f"{path}: holds {kind} weights only; colorizing needs a full TCVC checkpoint")
  model = convert.build_module(kind, kwargs, dtype=dtype)
  variables = {c: variables.get(c, {}) for c in ("params", "batch_stats")}
  return Colorizer(model, variables)
