"""The convolution forms of models/layers.py against PyTorch's Conv2d / ConvTranspose2d, in float64.

Every rewrite (1x1 as a matrix product, width splitting, transposed convolutions as phase
convolutions or as one 3x3 convolution) must be the same function as the original layer; float64
makes any wrong tap or index show up as an error far above rounding.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcvc_jax.models import layers

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _run(module, x_nhwc, kernel, bias):
  params = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
  return np.asarray(module.apply({"params": params}, jnp.asarray(x_nhwc)))


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil", [
    (5, 7, 3, 1, 1, 1),     # plain
    (6, 70, 3, 1, 1, 1),    # 70 = 64 + 6: split on CPU
    (9, 196, 3, 1, 1, 1),   # 196 = 192 + 4, the weighting/refine first layers
    (12, 5, 1, 1, 0, 1),    # 1x1 as a matrix product
    (4, 130, 1, 1, 0, 1),   # 1x1, wide
    (3, 8, 7, 2, 3, 1),     # strided (FlowNet encoders)
    (4, 6, 3, 1, 2, 2),     # dilated (SIGGRAPH17 blocks 5, 6)
])
def test_conv2d_matches_torch(cin, cout, k, stride, pad, dil):
  rng = np.random.default_rng(cin * 100 + cout)
  x = rng.normal(size=(2, cin, 13, 11))
  w = rng.normal(size=(cout, cin, k, k))
  b = rng.normal(size=(cout,))
  want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                    stride=stride, padding=pad, dilation=dil).numpy()
  mod = layers.Conv2d(cout, k, stride, pad, dil, dtype=jnp.float64, param_dtype=jnp.float64)
  got = _run(mod, x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), b)
  np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cin,cout,h,w", [
    (5, 3, 6, 9), (3, 2, 9, 10), (7, 16, 2, 3),  # narrow: product form on CPU
    (6, 70, 4, 5),                               # wide but tiny input: product form on CPU
    (40, 66, 1, 2),                              # input smaller than kernel: kernel-first product
    (4, 70, 9, 10), (3, 65, 11, 7),              # wide: phase convolutions
])
def test_conv_transpose_matches_torch(cin, cout, h, w):
  """Both evaluations: the 16-tap product form and the four phase convolutions."""
  rng = np.random.default_rng(cin + 10 * cout + h)
  x = rng.normal(size=(2, cin, h, w))
  wt = rng.normal(size=(cin, cout, 4, 4))  # torch ConvTranspose2d layout (in, out, kh, kw)
  b = rng.normal(size=(cout,))
  want = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(wt),
                                              torch.from_numpy(b), stride=2, padding=1).numpy()
  mod = layers.ConvTranspose4x4(cout, dtype=jnp.float64, param_dtype=jnp.float64)
  got = _run(mod, x.transpose(0, 2, 3, 1), wt.transpose(2, 3, 1, 0), b)
  np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=0, atol=1e-12)


def test_bfloat16_conv_accumulates_in_float32():
  """bf16 compute: operands rounded to bf16, sums in fp32, fp32 output.

  The result is not rounded to bf16.
  """
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 8, 8, 64)).astype(np.float32)
  w = rng.normal(size=(3, 3, 64, 96)).astype(np.float32)
  b = rng.normal(size=(96,)).astype(np.float32)
  mod = layers.Conv2d(96, 3, 1, 1, dtype=jnp.bfloat16)
  got = _run(mod, x, w, b)
  assert got.dtype == np.float32
  xr = np.array(jnp.asarray(x, jnp.bfloat16).astype(jnp.float64))
  wr = np.array(jnp.asarray(w, jnp.bfloat16).astype(jnp.float64))
  want = torch.nn.functional.conv2d(torch.from_numpy(xr.transpose(0, 3, 1, 2)),
                                    torch.from_numpy(wr.transpose(3, 2, 0, 1)),
                                    torch.from_numpy(b.astype(np.float64)), padding=1).numpy()
  # fp32 accumulation of exact bf16 x bf16 products: ~1e-6 relative; a bf16 result would be ~4e-3
  # off.
  np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), rtol=0,
                             atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize("cout", [5, 70])
def test_conv3x3_gradients_match_torch(cout):
  """The 3x3 layers' kernel gradient and input gradient equal torch's.

  On CPU the kernel gradient is nine matrix products.
  """
  rng = np.random.default_rng(cout)
  x = rng.normal(size=(2, 6, 9, 7))
  w = rng.normal(size=(cout, 6, 3, 3))
  b = rng.normal(size=(cout,))
  g = rng.normal(size=(2, cout, 9, 7))
  xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
  torch.nn.functional.conv2d(xt, wt, bt, padding=1).backward(torch.from_numpy(g))
  mod = layers.Conv2d(cout, 3, 1, 1, dtype=jnp.float64, param_dtype=jnp.float64)

  def loss(params, xx):
    return jnp.sum(mod.apply({"params": params}, xx) * jnp.asarray(g.transpose(0, 2, 3, 1)))

  params = {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}
  dparams, dx = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(dparams["kernel"]).transpose(3, 2, 0, 1), wt.grad.numpy(),
                             atol=1e-10)
  np.testing.assert_allclose(np.asarray(dparams["bias"]), bt.grad.numpy(), atol=1e-10)
  np.testing.assert_allclose(np.asarray(dx).transpose(0, 3, 1, 2), xt.grad.numpy(), atol=1e-10)


def test_conv2d_in_order_reads_its_input_in_that_channel_order():
  """The kernel keeps the original layout; the input holds its channel ranges in `in_order`."""
  x = np.random.RandomState(5).standard_normal((1, 8, 8, 10)).astype(np.float32)
  plain = layers.Conv2d(6, 3, pad=1)
  params = plain.init(jax.random.PRNGKey(0), x)
  order = ((0, 3), (7, 10), (3, 7))
  moved = np.concatenate([x[..., a:b] for a, b in order], axis=-1)
  reordered = layers.Conv2d(6, 3, pad=1, in_order=order, grad_groups=(6, 4))
  np.testing.assert_allclose(np.asarray(reordered.apply(params, moved)),
                             np.asarray(plain.apply(params, x)), rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match="once each"):
    layers.Conv2d(6, 3, pad=1, in_order=((0, 3), (3, 9))).apply(params, x)


@pytest.mark.parametrize("module", [layers.conv(5, 3, name="c"),
                                    layers.ConvTranspose4x4(5, name="t")])
def test_a_parameter_of_the_wrong_shape_is_refused_in_apply(module):
  # apply compares each existing parameter with its declared shape (without tracing its init).
  x = jnp.ones((1, 8, 8, 4))
  variables = module.init(jax.random.key(0), x)
  module.apply(variables, x)
  for name in ("kernel", "bias"):
    bad = jax.tree_util.tree_map(lambda a: a, variables)
    good = bad["params"][name]
    bad["params"][name] = jnp.zeros(good.shape[:-1] + (good.shape[-1] + 1,))
    with pytest.raises(flax.errors.ScopeParamShapeError, match=f"{name}.*{good.shape}"):
      module.apply(bad, x)
