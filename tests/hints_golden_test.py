"""User colour hints: SIGGRAPH17 with hints matches the original (tests/golden/hints.npz), and TCVC
and the public API feed the anchors' hints to it.

hints.npz holds the original's `forward(input_A, input_B, mask_B)` with the formula weights on two
hint patterns (README "hints.npz"): `sparse` (12 clicks of 3x3 patches) and `dense` (mask 1
everywhere). Tolerances as in golden_test.py: float32 at ~4x the original's own f32-f64 gap on each
output, float64 at 1e-9. Only float64 goldens of conv10_2 exist, so the float32 conv10_2 is compared
with them at the float32 tolerance.
"""

import os

import jax
import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax.models.siggraph17 import SIGGRAPH17

import golden_lib
import tiny

pytest.importorskip("torch")  # the golden weights are written as .pth files by torch

# name -> (float32 tolerance, the original's f32-f64 gap from the README)
F32_TOLERANCES = {
    "hints/ab_sparse": (6e-6, 1.5e-6),
    "hints/ab_dense": (1.5e-5, 3.6e-6),
    "hints/conv10_2_sparse": (6e-6, 1.6e-6),
    "hints/conv10_2_dense": (1.8e-5, 4.4e-6),
}
F64_TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def hint_errors_f32(golden_f32_paths):
  """The converted formula SIGGRAPH17 of the session's golden checkpoints (conftest)."""
  return golden_lib.compute_hint_errors(golden_lib.ConvertedWeights(golden_f32_paths), "float32")


@pytest.fixture(scope="module")
def hint_errors_f64(golden_errors_f64):
  """conftest's float64 run (a fresh process with jax x64) computes the hint goldens too."""
  return golden_errors_f64


@pytest.mark.parametrize("name", sorted(F32_TOLERANCES))
def test_float32_matches_original(hint_errors_f32, name):
  tol = F32_TOLERANCES[name][0]
  assert hint_errors_f32[name] <= tol, f"{name}: max abs error {hint_errors_f32[name]} > {tol}"


@pytest.mark.parametrize("name", sorted(F32_TOLERANCES))
def test_float64_matches_original(hint_errors_f64, name):
  err = hint_errors_f64[name]
  assert err <= F64_TOLERANCE, f"{name}: max abs error {err} > {F64_TOLERANCE}"


def test_hints_golden_inputs_are_what_the_readme_says():
  z = np.load(os.path.join(golden_lib.GOLDEN_DIR, "hints.npz"))
  assert z["hint_mask_sparse"].sum() == 12 * 9 and z["hint_mask_dense"].min() == 1
  assert np.all(z["hint_ab_sparse"] * (1 - z["hint_mask_sparse"]) == 0)  # ab is 0 off the clicks


# --- TCVC and the API (tiny model, random weights) ---


@pytest.fixture(scope="module")
def model_and_vars():
  model = tiny.tiny_model()
  return model, tiny.tiny_variables(model)


def _window(n, seed=0, size=32):
  rs = np.random.RandomState(seed)
  gray = 0.4 * np.tanh(rs.randn(1, n, size, size, 1)).astype(np.float32)
  ab = np.zeros((1, n, size, size, 2), np.float32)
  mask = np.zeros((1, n, size, size, 1), np.float32)
  return gray, ab, mask


def _click(ab, mask, t, y, x, color):
  """A 3x3 hint patch of `color` (normalised ab) at (y, x) of frame t, in place."""
  ab[:, t, y - 1:y + 2, x - 1:x + 2] = color
  mask[:, t, y - 1:y + 2, x - 1:x + 2] = 1


def test_siggraph17_without_hints_equals_zero_hints_bitwise(model_and_vars):
  model, variables = model_and_vars
  sig = SIGGRAPH17(widths=model.colorizer_widths)
  sig_vars = {c: variables[c]["fea_key"] for c in ("params", "batch_stats")}
  gray, ab, mask = _window(1)
  run = jax.jit(lambda v, g, a, m: sig.apply(v, g, hint_ab=a, hint_mask=m))
  plain = run(sig_vars, gray[:, 0], None, None)
  zeros = run(sig_vars, gray[:, 0], ab[:, 0], mask[:, 0])
  for p, z in zip(plain, zeros, strict=True):
    np.testing.assert_array_equal(p, z)
  _click(ab, mask, 0, 8, 8, (0.3, -0.2))
  hinted = run(sig_vars, gray[:, 0], ab[:, 0], mask[:, 0])
  assert np.max(np.abs(hinted[0] - plain[0])) > 1e-3
  with pytest.raises(ValueError, match="hint_mask must have shape"):
    sig.apply(sig_vars, gray[:, 0], hint_mask=mask[:, 0, ..., :1].repeat(2, axis=-1))


def test_tcvc_uses_the_anchors_hints_only(model_and_vars):
  model, variables = model_and_vars
  n = 4
  gray, ab, mask = _window(n, seed=1)
  run = jax.jit(lambda v, g, a, m: model.apply(v, g, hint_ab=a, hint_mask=m)["ab"])
  plain = np.asarray(run(variables, gray, None, None))

  # Hints on internal frames only (anchors' all zero): bit-identical to no hints.
  for t in range(1, n - 1):
    _click(ab, mask, t, 10, 12, (0.4, 0.1))
  np.testing.assert_array_equal(run(variables, gray, ab, mask), plain)

  # Hints on both anchors: each anchor's ab is the colorizer's with its own hints.
  _click(ab, mask, 0, 16, 16, (0.5, -0.3))
  _click(ab, mask, n - 1, 6, 20, (-0.4, 0.4))
  hinted = np.asarray(run(variables, gray, ab, mask))
  sig = model.bind(variables).fea_key
  for t in (0, n - 1):
    want, _ = sig(gray[:, t], hint_ab=ab[:, t], hint_mask=mask[:, t])
    np.testing.assert_allclose(hinted[:, t], want, atol=1e-6)
    assert np.max(np.abs(hinted[:, t] - plain[:, t])) > 1e-3, f"hints did not change frame {t}"
  assert np.max(np.abs(hinted[:, 1:-1] - plain[:, 1:-1])) > 1e-4  # propagated to internal frames

  with pytest.raises(ValueError, match="hint_ab must have shape"):
    model.apply(variables, gray, hint_ab=ab[:, :2])


def test_hints_with_the_carried_first_anchor(model_and_vars):
  """Frame 0's hints live in the carried state: window 2 from window 1's last anchor (hinted) equals
  window 2 from scratch with those hints on its frame 0."""
  model, variables = model_and_vars
  gray, ab, mask = _window(7, seed=2)
  _click(ab, mask, 3, 12, 12, (0.3, 0.3))  # the shared boundary frame
  _click(ab, mask, 6, 20, 8, (-0.2, 0.5))
  run = jax.jit(lambda v, g, first, a, m: model.apply(v, g, first_anchor=first, hint_ab=a,
                                                       hint_mask=m))
  first = run(variables, gray[:, :4], None, ab[:, :4], mask[:, :4])
  # Frame 0's hints are ignored with first_anchor: pass zeros there.
  ab2, mask2 = ab[:, 3:].copy(), mask[:, 3:].copy()
  ab2[:, 0], mask2[:, 0] = 0, 0
  carried = run(variables, gray[:, 3:], first["last_anchor"], ab2, mask2)
  scratch = run(variables, gray[:, 3:], None, ab[:, 3:], mask[:, 3:])
  np.testing.assert_allclose(carried["ab"], scratch["ab"], atol=1e-6)


def test_colorize_window_passes_and_validates_hints(model_and_vars):
  model, variables = model_and_vars
  colorizer = api.Colorizer(model, variables)
  gray, ab, mask = _window(2, seed=3)  # two anchors: no propagation to compile
  _click(ab, mask, 0, 16, 16, (0.5, -0.3))
  _click(ab, mask, 1, 8, 8, (0.2, 0.2))
  got = colorizer.colorize_window(gray[0], hint_ab=ab[0], hint_mask=mask[0])
  sig = model.bind(variables).fea_key
  for t in range(2):
    want, _ = sig(gray[:, t], hint_ab=ab[:, t], hint_mask=mask[:, t])
    np.testing.assert_allclose(got[t], want[0], atol=1e-6)
  assert np.max(np.abs(got - colorizer.colorize_window(gray[0]))) > 1e-3
  bad = {"hint_ab": [ab[0, ..., :1], ab[0, :1], ab],
         "hint_mask": [mask[0, ..., [0, 0]], mask[0, :, :8]]}
  for name, values in bad.items():
    for value in values:
      with pytest.raises(ValueError, match=rf"{name} must have shape \[N, H, W, \d\] = \(2, 32,"):
        colorizer.colorize_window(gray[0], **{name: value})
