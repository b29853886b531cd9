"""Loss terms of TCVC training, each a pure function of arrays.

Reconstruction on ab plus self-regularization (SRL): the prediction at frame i+1 (i+2) should equal
the prediction at frame i warped to it, where the occlusion mask says warping is photometrically
consistent.
Gradients flow into both sides of each SRL term, as in the original.
"""

import jax
import jax.numpy as jnp

# The four sub-networks the original trains; SIGGRAPH17 (`fea_key`) and the flow net are frozen.
TRAINABLE = ("L_fea_extractor", "channel_reduction", "weigting", "feature_refine")


CRITERIA = ("l1", "l2", "smooth_l1", "charbonnier")  # what `reconstruction` computes


def reconstruction(pred, target, criterion="l2"):
  """Mean per-element loss between ab predictions and targets.

  Args:
    pred, target: arrays of the same shape.
    criterion: 'l1', 'l2' (MSE, what the original applies), 'smooth_l1' (beta 1, PyTorch's default)
      or 'charbonnier' (sqrt(d^2 + 1e-6)).
  """
  d = pred - target
  if criterion == "l1":
    return jnp.mean(jnp.abs(d))
  if criterion == "l2":
    return jnp.mean(d * d)
  if criterion == "smooth_l1":
    a = jnp.abs(d)
    return jnp.mean(jnp.where(a < 1.0, 0.5 * d * d, a - 0.5))
  if criterion == "charbonnier":
    return jnp.mean(jnp.sqrt(d * d + 1e-6))
  raise ValueError(f"unknown criterion {criterion!r}")


def masked_warp_mse(pred, warped, mask):
  """The original's warp loss: mse(mask * pred, mask * warped), mean over all elements of pred."""
  return jnp.mean((mask * pred - mask * warped) ** 2)


def srl_losses(outputs):
  """SRL terms of the model's srl=True outputs: {'warp1', 'warp2'} (warp2 0 for 2-frame windows)."""
  ab = outputs["ab"]
  losses = {"warp1": masked_warp_mse(ab[:, 1:], outputs["ab_warp1"], outputs["mask1"])}
  if outputs.get("ab_warp2") is not None:
    losses["warp2"] = masked_warp_mse(ab[:, 2:], outputs["ab_warp2"], outputs["mask2"])
  else:
    losses["warp2"] = jnp.zeros((), ab.dtype)
  return losses


def trainable_mask(params, trainable=TRAINABLE):
  """A pytree of bools matching `params`: True under the top-level names in `trainable`."""
  return {k: jax.tree_util.tree_map(lambda _, t=(k in trainable): t, v) for k, v in params.items()}


def freeze(params, mask):
  """stop_gradient on every leaf whose mask is False: frozen weights get exactly zero gradient."""
  return jax.tree_util.tree_map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)
