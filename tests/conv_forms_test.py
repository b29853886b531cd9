"""The measured convolution forms: each is the same convolution, and the choice is measured once."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcvc_jax.models import conv_forms
from tcvc_jax.models import form_timing
from tcvc_jax.models import winograd

torch = pytest.importorskip("torch")


def _torch_conv(x, k):
  xt = torch.from_numpy(np.asarray(x, np.float64).transpose(0, 3, 1, 2))
  kt = torch.from_numpy(np.asarray(k, np.float64).transpose(3, 2, 0, 1))
  return xt, kt


def _data(shape, cin, cout, seed=0):
  rs = np.random.RandomState(seed)
  x = rs.standard_normal(shape + (cin,)).astype(np.float32)
  k = (rs.uniform(-1, 1, (3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32)
  return x, k


@pytest.mark.parametrize("form", conv_forms.FORWARD_FORMS)
@pytest.mark.parametrize("shape,cin,cout", [((2, 9, 7), 5, 70), ((1, 16, 12), 33, 130),
                                            ((1, 4, 4), 8, 3), ((2, 37, 11), 9, 20)])
def test_forward_forms_equal_float64_torch(form, shape, cin, cout):
  x, k = _data(shape, cin, cout)
  xt, kt = _torch_conv(x, k)
  want = torch.nn.functional.conv2d(xt, kt, padding=1).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(jax.jit(conv_forms._FORWARD[form])(x, k))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=2e-6 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("budget,rows", [(1, 1), (16 * 6 * 29 * 4 * 3, 3), (2**30, 8)])
def test_short_winograd_strips_are_the_same_convolution(monkeypatch, budget, rows):
  """A strip height that does not divide the tile rows (19 here) pads and crops like the default."""
  x, k = _data((2, 37, 11), 9, 20)
  xt, kt = _torch_conv(x, k)
  want = torch.nn.functional.conv2d(xt, kt, padding=1).numpy().transpose(0, 2, 3, 1)
  monkeypatch.setattr(winograd, "SHORT_STRIP_BYTES", budget)
  assert winograd.short_strip_rows(x.shape, 20) == rows
  got = np.asarray(jax.jit(winograd.conv_short)(x, k))
  np.testing.assert_allclose(got, want, atol=2e-6 * max(1.0, np.abs(want).max()))


def test_short_strips_shrink_with_the_layer_width():
  assert winograd.short_strip_rows((1, 256, 256, 352), 196) == 3  # 36 MB in 8-row strips
  assert winograd.short_strip_rows((1, 256, 512, 352), 196) == 1
  assert winograd.short_strip_rows((1, 256, 256, 128), 128) == 8


@pytest.mark.parametrize("form", sorted(conv_forms._KERNEL_GRAD))
def test_gradients_equal_float64_torch(form, monkeypatch):
  x, k = _data((2, 10, 6), 7, 66, seed=1)
  g = np.random.RandomState(2).standard_normal((2, 10, 6, 66)).astype(np.float32)
  xt, kt = _torch_conv(x, k)
  xt.requires_grad_(True)
  kt.requires_grad_(True)
  torch.nn.functional.conv2d(xt, kt, padding=1).backward(
      torch.from_numpy(g.astype(np.float64).transpose(0, 3, 1, 2)))
  want_dx = xt.grad.numpy().transpose(0, 2, 3, 1)
  want_dk = kt.grad.numpy().transpose(2, 3, 1, 0)
  got_dk = np.asarray(jax.jit(conv_forms._KERNEL_GRAD[form])(x, g))
  np.testing.assert_allclose(got_dk, want_dk, atol=1e-5 * np.abs(want_dk).max())
  # Through the custom VJP, every forward form for the input gradient.
  for fwd in conv_forms.FORWARD_FORMS:
    monkeypatch.setattr(conv_forms, "_measured_choice",
                        lambda op, forms, *a, fwd=fwd, **kw: form if op.endswith("grad") else fwd)
    _, vjp = jax.vjp(lambda x_, k_: conv_forms.conv3x3(x_, k_), x, k)
    dx, dk = vjp(g)
    np.testing.assert_allclose(np.asarray(dx), want_dx, atol=2e-6 * np.abs(want_dx).max())
    np.testing.assert_allclose(np.asarray(dk), want_dk, atol=1e-5 * np.abs(want_dk).max())


def test_float64_forms_are_float64_exact():
  x, k = _data((1, 8, 8), 6, 5)
  x, k = x.astype(np.float64), k.astype(np.float64)
  xt, kt = _torch_conv(x, k)
  want = torch.nn.functional.conv2d(xt, kt, padding=1).numpy().transpose(0, 2, 3, 1)
  with jax.enable_x64(True):
    for form in conv_forms.FORWARD_FORMS:
      got = np.asarray(jax.jit(conv_forms._FORWARD[form])(jnp.asarray(x), jnp.asarray(k)))
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


@pytest.fixture
def forms_file(tmp_path, monkeypatch):
  path = tmp_path / "forms.json"
  monkeypatch.setenv("TCVC_CONV_FORMS_FILE", str(path))
  monkeypatch.setattr(conv_forms, "_CHOICES", {})
  monkeypatch.setattr(conv_forms, "_FILE_LOADED", {})
  monkeypatch.setattr(form_timing, "MEASURE_IN_CHILD", False)  # these tests fake time_forms
  return path


def test_choice_is_measured_once_and_remembered_in_the_file(forms_file, monkeypatch):
  monkeypatch.setattr(conv_forms, "MIN_GFLOP", 0.0)
  monkeypatch.setattr(conv_forms, "WINOGRAD_MIN_CHANNELS", 0)
  monkeypatch.delenv("TCVC_CONV_FORMS", raising=False)
  timed = {}
  real_time = form_timing.time_forms
  monkeypatch.setattr(form_timing, "time_forms",
                      lambda fns, args: timed.update(real_time(fns, args)) or timed)
  x, k = _data((1, 12, 12), 4, 70)
  y = jax.jit(conv_forms.forward)(x, k)  # measured while jit traces: the forms must really run
  assert sorted(timed) == ["split64", "winograd", "xla"]
  assert min(timed.values()) > 0
  data = json.loads(forms_file.read_text())
  (key, form), = data.items()
  assert form in conv_forms.FORWARD_FORMS and conv_forms.machine_id() in key
  assert "x(1, 12, 12, 4) k(3, 3, 4, 70)" in key
  # Another process (empty memory) reads the file and measures nothing.
  monkeypatch.setattr(conv_forms, "_CHOICES", {})
  monkeypatch.setattr(conv_forms, "_FILE_LOADED", {})
  monkeypatch.setattr(form_timing, "time_forms", lambda fns, args: pytest.fail("measured again"))
  np.testing.assert_array_equal(np.asarray(jax.jit(conv_forms.forward)(x, k)), np.asarray(y))


def test_kernel_gradient_forms_are_timed_on_the_input_and_output_gradient(forms_file, monkeypatch):
  """Each timed call is the kernel gradient alone, of operands shaped like x and the gradient."""
  monkeypatch.setattr(conv_forms, "MIN_GFLOP", 0.0)
  monkeypatch.delenv("TCVC_CONV_FORMS", raising=False)
  seen = {}

  def fake_time(fns, args):
    seen["shapes"] = [a.shape for a in args]
    seen["outputs"] = {name: np.asarray(f(*args)) for name, f in fns.items()}
    return {"dots": 1.0, "winograd": 0.5}

  monkeypatch.setattr(form_timing, "time_forms", fake_time)
  x, _ = _data((1, 10, 8), 6, 9)
  g = np.random.RandomState(5).standard_normal((1, 10, 8, 9)).astype(np.float32)
  dk = jax.jit(conv_forms.kernel_grad)(x, g)
  assert seen["shapes"] == [(1, 10, 8, 6), (1, 10, 8, 9)]
  for out in seen["outputs"].values():  # a kernel gradient, nothing else
    assert out.shape == (3, 3, 6, 9)
  assert list(json.loads(forms_file.read_text()).values()) == ["winograd"]
  np.testing.assert_allclose(np.asarray(dk), np.asarray(conv_forms._dots_kernel_grad(x, g)),
                             atol=1e-5 * float(np.abs(dk).max()))


def test_winograd_is_timed_only_where_both_sides_are_wide():
  assert conv_forms._forward_forms((1, 256, 256, 352), 196) == ("xla", "split64", "winograd",
                                                                 "winograd_short")
  assert conv_forms._forward_forms((1, 256, 256, 288), 196) == ("xla", "split64", "winograd",
                                                                 "winograd_short")
  assert conv_forms._forward_forms((1, 256, 256, 196), 128) == ("xla", "winograd")
  assert conv_forms._forward_forms((1, 256, 256, 128), 128) == ("xla", "winograd")
  assert conv_forms._forward_forms((1, 256, 256, 64), 196) == ("xla", "split64", "winograd")
  assert conv_forms._forward_forms((1, 256, 256, 196), 64) == ("xla", "winograd")
  assert conv_forms._forward_forms((17, 256, 256, 64), 64) == ("xla",)
  assert conv_forms._forward_forms((1, 256, 256, 64), 100) == ("xla", "split64")
  assert conv_forms._forward_forms((1, 256, 256, 32), 256) == ("xla",)
  assert conv_forms._forward_forms((1, 2, 256, 256), 256) == ("xla",)  # too small for tiles


def test_small_convolutions_and_fixed_mode_are_not_measured(forms_file, monkeypatch):
  monkeypatch.setattr(form_timing, "time_forms", lambda fns, args: pytest.fail("measured"))
  x, k = _data((1, 8, 8), 4, 70)
  jax.jit(conv_forms.conv3x3)(x, k)  # far under MIN_GFLOP
  monkeypatch.setattr(conv_forms, "MIN_GFLOP", 0.0)
  with jax.enable_x64(True):  # float64 (the goldens' checking precision) is not worth measuring
    assert conv_forms.forward(jnp.asarray(x, jnp.float64), jnp.asarray(k, jnp.float64)).dtype \
        == jnp.float64
  monkeypatch.setenv("TCVC_CONV_FORMS", "fixed")
  assert conv_forms.forward(x, k).shape == (1, 8, 8, 70)
  monkeypatch.setenv("TCVC_CONV_FORMS", "xla")
  assert conv_forms.forward(x, k).shape == (1, 8, 8, 70)
  assert not forms_file.exists()
  monkeypatch.setenv("TCVC_CONV_FORMS", "fastest")
  with pytest.raises(ValueError, match="TCVC_CONV_FORMS must be"):
    conv_forms.forward(x, k)


def test_unwritable_file_keeps_the_choice_in_memory(tmp_path, monkeypatch):
  blocker = tmp_path / "file"
  blocker.write_text("")
  monkeypatch.setenv("TCVC_CONV_FORMS_FILE", str(blocker / "forms.json"))  # parent is a file
  monkeypatch.setattr(conv_forms, "_CHOICES", {})
  monkeypatch.setattr(conv_forms, "_FILE_LOADED", {})
  monkeypatch.setattr(conv_forms, "MIN_GFLOP", 0.0)
  monkeypatch.setattr(form_timing, "MEASURE_IN_CHILD", False)
  monkeypatch.delenv("TCVC_CONV_FORMS", raising=False)
  x, k = _data((1, 8, 8), 4, 70)  # two forms to time: xla, split64
  conv_forms.forward(x, k)
  assert len(conv_forms._CHOICES) == 1


@pytest.mark.parametrize("times,want", [
    ({"xla": 1.0, "split64": 0.95, "winograd": 0.5}, "winograd"),
    ({"xla": 1.0, "split64": 0.95, "winograd": 0.9}, "split64"),
    ({"xla": 0.5, "split64": 0.95, "winograd": 0.9}, "xla")])
def test_another_form_must_beat_the_fixed_rule_clearly(forms_file, monkeypatch, times, want):
  monkeypatch.setattr(conv_forms, "MIN_GFLOP", 0.0)
  monkeypatch.delenv("TCVC_CONV_FORMS", raising=False)
  monkeypatch.setattr(form_timing, "time_forms", lambda fns, args: times)
  x, k = _data((1, 8, 8), 4, 70)  # the fixed rule: split64 (70 = 64 + 6)
  conv_forms.forward(x, k)
  assert list(json.loads(forms_file.read_text()).values()) == [want]


@pytest.mark.parametrize("form", sorted(conv_forms._MIXED))
def test_bf16_forms_sum_the_bf16_products_in_fp32(form):
  x, k = _data((2, 9, 6), 20, 70)
  xb, kb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16)
  xt, kt = _torch_conv(np.asarray(xb, np.float32), np.asarray(kb, np.float32))
  want = torch.nn.functional.conv2d(xt, kt, padding=1).numpy().transpose(0, 2, 3, 1)
  got = jax.jit(conv_forms._MIXED[form])(xb, kb)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-6 * np.abs(want).max())


def test_input_gradient_in_groups_is_the_gradient_and_drops_unused_groups():
  x, k = _data((1, 12, 10), 24, 16, seed=3)
  g = np.random.RandomState(4).standard_normal((1, 12, 10, 16)).astype(np.float32)
  plain = jax.vjp(lambda x_, k_: conv_forms.conv3x3(x_, k_), x, k)[1](g)
  grouped = jax.vjp(lambda x_, k_: conv_forms.conv3x3(x_, k_, None, (16, 8)), x, k)[1](g)
  for a, b in zip(plain, grouped, strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match="do not add up"):
    jax.vjp(lambda x_: conv_forms.conv3x3(x_, k, None, (16, 4)), x)[1](g)

  # Only the first 16 channels differentiated (the last 8 are a constant, like frozen features):
  # the convolution of the last group is not in the program.
  def flops(groups):
    def loss(part, rest, k_, g_):
      y = conv_forms.conv3x3(jnp.concatenate([part, jax.lax.stop_gradient(rest)], -1), k_, None,
                             groups)
      return jnp.sum(y * g_)
    lowered = jax.jit(jax.grad(loss)).lower(x[..., :16], x[..., 16:], k, g)
    cost = lowered.compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]

  # Per input channel of the input gradient: 16 products for each kernel tap inside the 12x10 image.
  conv_flops = 2 * 16 * (3 * 12 - 2) * (3 * 10 - 2)
  assert flops(None) - flops((16, 8)) == 8 * conv_flops


@pytest.fixture
def child_process(forms_file, monkeypatch):
  """The measuring child of this test alone, closed at its end."""
  monkeypatch.setattr(form_timing, "MEASURE_IN_CHILD", True)
  monkeypatch.setattr(form_timing, "_CHILD", {})
  monkeypatch.setattr(conv_forms, "MIN_GFLOP", 0.0)
  monkeypatch.delenv("TCVC_CONV_FORMS", raising=False)
  yield form_timing._CHILD
  form_timing.close_child()


def test_forms_are_timed_in_a_child_process(child_process, forms_file, monkeypatch):
  monkeypatch.setattr(form_timing, "time_forms", lambda fns, args: pytest.fail("timed here"))
  x, k = _data((1, 13, 11), 5, 70)  # a shape no other test traces (jit would not trace it again)
  y = jax.jit(conv_forms.forward)(x, k)
  proc = child_process["process"].proc
  assert proc.poll() is None and proc.pid != os.getpid()
  (form,) = json.loads(forms_file.read_text()).values()
  assert form in ("xla", "split64")  # the forms timed at 5 -> 70
  np.testing.assert_allclose(np.asarray(y), np.asarray(conv_forms._FORWARD[form](x, k)),
                             rtol=0, atol=0)
  g = np.random.RandomState(5).standard_normal((1, 13, 11, 70)).astype(np.float32)
  jax.jit(conv_forms.kernel_grad)(x, g)  # the same child times the next shape
  assert child_process["process"].proc is proc and len(json.loads(forms_file.read_text())) == 2
  form_timing.close_child()
  assert proc.returncode == 0


def test_an_idle_child_process_is_closed(child_process, monkeypatch):
  monkeypatch.setattr(form_timing, "CHILD_IDLE_S", 0.5)
  x, k = _data((1, 9, 13), 5, 70)
  jax.jit(conv_forms.forward)(x, k)
  proc = child_process["process"].proc
  for _ in range(100):
    if proc.poll() is not None:
      break
    time.sleep(0.1)
  assert proc.returncode == 0 and "process" not in child_process
  x, k = _data((1, 13, 9), 5, 70)
  jax.jit(conv_forms.forward)(x, k)  # a later measurement starts a new one
  assert child_process["process"].proc.pid != proc.pid


def test_without_a_child_process_the_forms_are_timed_here(child_process, forms_file, monkeypatch,
                                                          caplog):
  monkeypatch.setattr(form_timing.sys, "executable", str(forms_file.parent / "no-python"))
  timed = []
  real_time = form_timing.time_forms
  monkeypatch.setattr(form_timing, "time_forms", lambda fns, args: timed.append(1) or real_time(
      fns, args))
  x, k = _data((1, 11, 13), 6, 70)
  jax.jit(conv_forms.forward)(x, k)
  assert timed and len(json.loads(forms_file.read_text())) == 1
  assert "timing convolution forms in this process" in caplog.text


def _running(pid):
  """Whether process pid runs (a zombie, exited but not yet waited for, does not)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_the_child_process_ends_with_its_parent(tmp_path):
  """Killed outright (no atexit), the parent leaves no measuring process behind."""
  script = """
import os, sys, time
import numpy as np, jax
from tcvc_jax.models import conv_forms, form_timing
conv_forms.MIN_GFLOP = 0.0
x = np.ones((1, 12, 12, 4), np.float32)
jax.jit(conv_forms.forward)(x, np.ones((3, 3, 4, 70), np.float32))
print(form_timing._CHILD["process"].proc.pid, flush=True)
time.sleep(60)
"""
  env = dict(os.environ, TCVC_CONV_FORMS="auto", TCVC_CONV_FORMS_FILE=str(tmp_path / "f.json"))
  parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                            text=True)
  try:
    child = int(parent.stdout.readline())
    os.kill(child, signal.SIGINT)  # a Ctrl-C is the parent's to handle: the child stays
    time.sleep(1.0)
    assert _running(child), "the measuring process ended on SIGINT"
    parent.kill()
    parent.wait()
    for _ in range(100):
      if not _running(child):
        break
      time.sleep(0.1)
    else:
      pytest.fail("the measuring process outlived its parent")
  finally:
    parent.kill()
    parent.stdout.close()
