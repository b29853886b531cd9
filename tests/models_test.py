"""TCVC model behaviour beyond the goldens.

Gradients, flow-call counts, windows of any length, errors.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcvc_jax.models.flownet2 import FlowNet2
from tcvc_jax.models.flownet2 import mirrored_chunk_order
from tcvc_jax.training import losses

import tiny


def _clip(n, size=32, seed=0):
  """A smooth random clip moving one pixel right per frame, normalised L [1, n, size, size, 1]."""
  rs = np.random.RandomState(seed)
  base = rs.randn(size + n, size + n)
  k = np.ones(5) / 5
  base = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, base)
  base = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, base)
  base = 0.4 * base / np.abs(base).max()
  frames = [base[:size, n - t:n - t + size] for t in range(n)]
  return jnp.asarray(np.stack(frames)[None, ..., None], jnp.float32)


@pytest.fixture(scope="module")
def model_and_vars():
  model = tiny.tiny_model()
  return model, tiny.tiny_variables(model)


def test_pixel_and_srl_gradients_reach_the_four_small_nets_only(model_and_vars):
  model, variables = model_and_vars
  gray = _clip(5)
  target = 0.1 * jnp.tanh(jnp.concatenate([gray, -gray], axis=-1) * 3)
  mask = losses.trainable_mask(variables["params"])

  def loss_fn(params):
    out = model.apply({"params": losses.freeze(params, mask),
                       "batch_stats": variables["batch_stats"]},
                      gray, srl=True)
    srl = losses.srl_losses(out)
    return losses.reconstruction(out["ab"], target) + srl["warp1"] + srl["warp2"]

  grads = jax.jit(jax.grad(loss_fn))(variables["params"])
  norms = {k: float(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(v)))
           for k, v in grads.items()}
  for name in losses.TRAINABLE:
    assert norms[name] > 0, f"no gradient reaches {name}"
  assert norms["fea_key"] == 0.0, "the frozen colorizer received a gradient"
  assert set(norms) == set(losses.TRAINABLE) | {"fea_key"}  # the classical flow has no params


def test_srl_alone_trains_without_colour_targets(model_and_vars):
  """The SRL terms alone (the released config) give gradients: no colour ground truth is needed."""
  model, variables = model_and_vars
  gray = _clip(4)
  mask = losses.trainable_mask(variables["params"])

  def loss_fn(params):
    out = model.apply({"params": losses.freeze(params, mask),
                       "batch_stats": variables["batch_stats"]},
                      gray, srl=True)
    s = losses.srl_losses(out)
    return s["warp1"] + s["warp2"]

  grads = jax.jit(jax.grad(loss_fn))(variables["params"])
  assert float(jnp.sum(grads["feature_refine"]["conv3"]["kernel"] ** 2)) > 0


def _count_flow_pairs(model, variables, gray, srl):
  counts = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == "flows" and isinstance(context.module, type(model)):
      counts.append(args[0].shape[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v, g: model.apply(v, g, srl=srl), variables, gray)
  return counts


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_flow_evaluations_per_window(model_and_vars, n):
  """Inference: 2(N-2) flow pairs in ONE batched call.

  With SRL, the 3N-5 distinct pairs (original: 4N-7).
  """
  model, variables = model_and_vars
  model = model.clone(flow_batch=0)  # all pairs in one call (the default maps over chunks of them)
  gray = jnp.zeros((1, n, 32, 32, 1))
  infer = _count_flow_pairs(model, variables, gray, srl=False)
  assert sum(infer) == 2 * (n - 2) and len(infer) <= 1
  train = _count_flow_pairs(model, variables, gray, srl=True)
  assert train == [3 * n - 5]


def test_flow_chunks_change_nothing(model_and_vars):
  """Evaluating the flow pairs in chunks gives the one-call results.

  The chunks are flow_batch pairs each, the last one padded: the window's 13 pairs in chunks of 2
  (the CPU default; pairs and their reverses mirrored in a chunk) and of 3 (odd: no mirroring).
  """
  model, variables = model_and_vars
  gray = jax.random.uniform(jax.random.key(3), (1, 6, 32, 32, 1), minval=-0.5, maxval=0.5)
  outs = [jax.jit(lambda v, g, m=m: m.apply(v, g, srl=True))(variables, gray)
          for m in (model.clone(flow_batch=0), model.clone(flow_batch=2),
                    model.clone(flow_batch=3))]
  for other in outs[1:]:
    for k in ("ab", "ab_warp1", "mask1", "ab_warp2", "mask2"):
      np.testing.assert_allclose(other[k], outs[0][k], rtol=0, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("chunk", [2, 4])
@pytest.mark.parametrize("srl", [False, True])
def test_a_pair_and_its_reverse_share_a_chunk(chunk, srl):
  """Window pairs are ordered so that whole chunks hold pairs and their reverses (mirrored)."""
  n = 19
  names = {"backward": (range(1, n - 1), range(2, n))}
  if srl:
    names.update(phi=(range(1, n), range(n - 1)), psi=(range(2, n), range(n - 2)))
  else:
    names["phi"] = (range(1, n - 1), range(n - 2))
  pairs = [p for src, dst in names.values() for p in zip(src, dst, strict=True)]
  order, mirrored = mirrored_chunk_order(pairs, chunk)
  assert sorted(order) == list(range(len(pairs)))
  # backward (i, i+1) and phi (i+1, i): i = 1 .. N-3, with SRL's longer phi i = 1 .. N-2
  couples = n - 2 if srl else n - 3
  assert len(mirrored) == -(-len(pairs) // chunk) and sum(mirrored) == couples // (chunk // 2)
  for c, flag in enumerate(mirrored):
    ps = [pairs[p] for p in order[c * chunk:(c + 1) * chunk]]
    if flag:
      assert ps[chunk // 2:] == [(b, a) for a, b in ps[:chunk // 2]]
  assert mirrored_chunk_order(pairs, 3) == (list(range(len(pairs))), None)
  assert mirrored_chunk_order([(0, 1), (1, 2)], 2) == ([0, 1], None)


def test_flownet2_mirrored_chunk_gives_the_same_flows():
  """A pair and its reverse in one batch: FlowNetC's towers run once for both, same flows."""
  rs = np.random.RandomState(0)
  a, b = (jnp.asarray(rs.uniform(0, 1, (1, 64, 64, 3)), jnp.float32) for _ in range(2))
  img1, img2 = jnp.concatenate([a, b]), jnp.concatenate([b, a])
  net = FlowNet2()
  # Fan-in scaled random weights from the shapes alone: `jax.jit(net.init)` compiles the draws of
  # 162 M values, ~40 s of XLA, three times this test's own work.
  shapes = jax.eval_shape(net.init, jax.random.key(0), img1, img2)
  fan_in = lambda s: np.prod(s.shape[:-1]) if len(s.shape) == 4 else 100.0
  variables = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rs.uniform(-1, 1, s.shape) * fan_in(s) ** -0.5, jnp.float32), shapes)
  # One program for both (the flag is traced); False runs the towers as without the flag.
  run = jax.jit(lambda v, x, y, m: net.apply(v, x, y, mirrored=m))
  plain = np.asarray(run(variables, img1, img2, False))
  np.testing.assert_allclose(np.asarray(run(variables, img1, img2, True)), plain, rtol=0,
                             atol=1e-5 * np.abs(plain).max())
  # The two pairs' flows differ: towers mixed up between them would show.
  assert np.abs(plain[0] - plain[1]).max() > 0.1 * np.abs(plain).max() > 0


@pytest.mark.parametrize("n", [2, 3, 7])
def test_output_shapes_and_anchor_frames(model_and_vars, n):
  model, variables = model_and_vars
  gray = _clip(n)
  out = jax.jit(lambda v, g: model.apply(v, g, srl=True))(variables, gray)
  assert out["ab"].shape == (1, n, 32, 32, 2)
  assert out["ab_warp1"].shape == (1, n - 1, 32, 32, 2)
  assert out["mask1"].shape == (1, n - 1, 32, 32, 1)
  if n == 2:
    assert out["ab_warp2"] is None and out["mask2"] is None
  else:
    assert out["ab_warp2"].shape == (1, n - 2, 32, 32, 2)
  # Anchors are the colorizer's own predictions, independent of the other frames.
  sig = model.bind(variables).fea_key
  ab_first, _ = sig(gray[:, 0])
  np.testing.assert_allclose(out["ab"][:, 0], ab_first, atol=1e-6)
  assert np.all(np.abs(np.asarray(out["ab"])) <= 1)
  m1 = np.asarray(out["mask1"])
  assert m1.min() >= 0 and m1.max() <= 1


def test_batch_elements_are_independent(model_and_vars):
  model, variables = model_and_vars
  a, b = _clip(4, seed=1), _clip(4, seed=2)
  run = jax.jit(lambda v, g: model.apply(v, g)["ab"])
  both = run(variables, jnp.concatenate([a, b]))
  alone = run(variables, b)
  np.testing.assert_allclose(both[1:], alone, atol=1e-5)


def test_rejects_one_frame_window(model_and_vars):
  model, variables = model_and_vars
  with pytest.raises(ValueError, match="at least 2 frames"):
    model.apply(variables, jnp.zeros((1, 1, 32, 32, 1)))


def test_flownet2_size_check():
  with pytest.raises(ValueError, match="divisible by 64"):
    jax.eval_shape(FlowNet2().init, jax.random.key(0), jnp.zeros((1, 48, 64, 3)),
                   jnp.zeros((1, 48, 64, 3)))


@pytest.mark.parametrize("criterion", ["l1", "l2", "smooth_l1", "charbonnier"])
def test_reconstruction_criteria(criterion):
  pred = jnp.array([0.0, 0.5, -2.0])
  target = jnp.zeros(3)
  want = {"l1": 2.5 / 3, "l2": 4.25 / 3, "smooth_l1": (0.125 + 1.5) / 3,
          "charbonnier": float(np.mean(np.sqrt(np.array([0, 0.25, 4.0]) + 1e-6)))}[criterion]
  np.testing.assert_allclose(losses.reconstruction(pred, target, criterion), want, rtol=1e-6)


def test_carrying_the_anchor_between_windows_changes_nothing(model_and_vars):
  """Streaming reuses the previous window's last anchor as the next first anchor: same colours."""
  model, variables = model_and_vars
  clip = _clip(7)
  run = jax.jit(lambda v, g, first: model.apply(v, g, first_anchor=first))
  first = run(variables, clip[:, :4], None)
  second = run(variables, clip[:, 3:], first["last_anchor"])
  reference = run(variables, clip[:, 3:], None)
  np.testing.assert_allclose(second["ab"], reference["ab"], atol=1e-6)
  np.testing.assert_allclose(first["ab"][:, -1], second["ab"][:, 0], atol=1e-6)
