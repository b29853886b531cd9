"""tcvc_jax.Colorizer: padded windows are exact and compile once per frame size."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax import streaming
from tcvc_jax import window_stream
from tcvc_jax.evaluation import windows

import tiny
import xla_flags


@pytest.fixture(scope="module")
def pair():
  model = tiny.tiny_model()
  variables = tiny.tiny_variables(model)
  return api.Colorizer(model, variables), api.Colorizer(model, variables)


# A padded window runs the same computation on each of its frames as the unpadded one, but XLA's
# convolutions batched over a window's frames (the L features, the channel reduction) may round
# the last bit differently at another batch size: 1 ulp (1.5e-8) in one pixel of 8192, seen on an
# AVX2-only AMD EPYC with 8 host devices (bitwise equal on AVX-512 machines). A padded frame that
# leaked into the real ones moved ab by ~2e-3 (tried: frames padded with half the last frame).
ROUNDING = 1e-6


def _assert_equal_to_rounding(got, want):
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=ROUNDING)


def test_padded_windows_equal_unpadded_ones(pair):
  plain, padded = pair
  padded.pad_windows(6)
  gray = np.random.RandomState(0).uniform(-0.5, 0.5, (6, 32, 32, 1)).astype(np.float32)
  for n in (2, 4, 6):  # anchors only; internal frames, padded by 2; the padded length itself
    want, want_state = plain.colorize_window(gray[:n], return_last_anchor=True)
    got, got_state = padded.colorize_window(gray[:n], return_last_anchor=True)
    # The same shapes (n = 6, and the anchors, which run one frame at a time): bit for bit.
    same = np.testing.assert_array_equal if n == 6 else _assert_equal_to_rounding
    same(got, want)
    for g, w in zip(got_state, want_state, strict=True):
      np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # The carried anchor of the previous window as frame 0.
    same(padded.colorize_window(gray[:n], first_anchor=got_state),
         plain.colorize_window(gray[:n], first_anchor=want_state))
  assert padded._apply_padded._cache_size() == 1  # pylint: disable=protected-access
  assert padded._apply._cache_size() == 0  # pylint: disable=protected-access


def test_a_video_compiles_once(pair, tmp_path):
  """13 frames, interval 4: windows of 6, 6 and 3 frames (and a cut would add more lengths)."""
  _, colorizer = pair
  colorizer.window_frames = None
  rs = np.random.RandomState(1)
  frames = [rs.randint(0, 255, (32, 32, 3), np.uint8) for _ in range(13)]
  before = colorizer._apply_padded._cache_size()  # pylint: disable=protected-access
  out = list(streaming.colorize_frames(frames, colorizer, interval=4, network_size=32))
  assert len(out) == 13
  assert colorizer._apply_padded._cache_size() == max(before, 1)  # pylint: disable=protected-access
  # The same frames as the plain protocol on the unpadded model (each window from scratch).
  plain = api.Colorizer(colorizer.model, colorizer.variables)
  want = windows.colorize_clip(np.stack(frames), plain.colorize_window, (4,), 32)
  _assert_equal_to_rounding(np.stack(out), want)  # the last window: 3 frames padded to 6


def test_a_clip_shorter_than_a_window_is_padded_to_its_length_only(pair):
  """A huge --interval on a short clip costs the clip's frames, not the interval's."""
  _, colorizer = pair
  rs = np.random.RandomState(2)
  frames = [rs.randint(0, 255, (32, 32, 3), np.uint8) for _ in range(5)]
  colorizer.window_frames = None
  stream = streaming.colorize_frames(frames, colorizer, interval=500, network_size=32)
  out = [next(stream)]
  assert colorizer.window_frames == 5  # during the pass
  out += list(stream)
  assert len(out) == 5
  assert colorizer.window_frames is None  # and the user's setting back after it
  plain = api.Colorizer(colorizer.model, colorizer.variables)
  want = windows.colorize_clip(np.stack(frames), plain.colorize_window, (500,), 32)
  np.testing.assert_array_equal(np.stack(out), want)


class _PadRecorder:

  def __init__(self):
    self.frames = None

  def pad_windows(self, frames):
    self.frames = frames


@pytest.mark.parametrize("interval,num_frames,want", [
    (17, None, 19),  # length unknown (a container that does not store it): the interval's
    (17, 100, 19),
    (17, 6, 6),
    (0, 6, 2),
    (17, 1, 2),  # a window always holds two anchors
])
def test_anchor_carry_pads_to_the_smaller_of_window_and_clip(interval, num_frames, want):
  model = _PadRecorder()
  window_stream.AnchorCarry(model).set_interval(interval, num_frames)
  assert model.frames == want


def _bad_window_inputs(gray, state):
  """{case: (colorize_window kwargs, error pattern)}: values the shapes alone let through."""
  n, h, w, _ = gray.shape
  nan = gray.copy()
  nan[1, 3, 4] = np.nan
  inf = gray.copy()
  inf[0, 0, 0] = -np.inf
  mask = np.zeros((n, h, w, 1), np.float32)
  ab = np.zeros((n, h, w, 2), np.float32)
  ab_nan = ab.copy()
  ab_nan[0, 5, 5] = np.nan
  small = np.zeros((n, 16, 16, 1), np.float32)
  return {
      "uint8 gray": ({"gray": np.round((gray + 0.5) * 255).astype(np.uint8)},
                     r"^gray must be real floating point \(normalised L, \(L\* - 50\) / 100: "
                     r"from uint8 RGB, color.rgb_to_gray_ab\(rgb\)\[0\]\), got dtype uint8$"),
      "no channel": ({"gray": gray[..., 0]}, r"^gray must have shape \[N, H, W, 1\], got "
                     r"\(\d+, 32, 32\) \(add the channel: gray\[..., None\]\)$"),
      "0..255 gray": ({"gray": (gray + 0.5) * 255},
                      r"^gray must be within \[-0.5, 0.5\] .*got values from"),
      "nan gray": ({"gray": nan}, "^gray must be finite"),
      "inf gray": ({"gray": inf}, "^gray must be finite"),
      "complex gray": ({"gray": gray.astype(np.complex64)}, "^gray must be real floating point"),
      "nan hint_ab": ({"gray": gray, "hint_ab": ab_nan, "hint_mask": mask + 1},
                      "^hint_ab must be finite"),
      "int hint_ab": ({"gray": gray, "hint_ab": ab.astype(np.int32), "hint_mask": mask + 1},
                      "^hint_ab must be real floating point"),
      "no array": ({"gray": (g for g in gray)},
                   r"^gray must be an array \[N, H, W, 1\] of normalised L, got generator$"),
      "None": ({"gray": None}, "^gray must be an array .*got NoneType$"),
      "ragged list": ({"gray": [gray[0], gray[1, :8]]},
                      r"^gray must be an array \[N, H, W, 1\] of normalised L; got a list of "
                      r"frames of different shapes \[\(8, 32, 1\), \(32, 32, 1\)\]: resize "),
      "uint8 hint_mask": ({"gray": gray, "hint_mask": (mask + 255).astype(np.uint8)},
                          "^hint_mask must be real floating point or bool"),
      "255 hint_mask": ({"gray": gray, "hint_mask": mask + 255},
                        r"^hint_mask must be within \[0, 1\]"),
      "nan hint_mask": ({"gray": gray, "hint_mask": mask + np.nan}, "^hint_mask must be finite"),
      "anchor of another size": ({"gray": small, "first_anchor": state},
                                 r"^first_anchor must be the state .*\(1, 16, 16, 2\).*got shapes "
                                 r"\(\(1, 32, 32, 2\)"),
      "anchor junk": ({"gray": gray, "first_anchor": "junk"}, "^first_anchor must be .*got str$"),
      "anchor half": ({"gray": gray, "first_anchor": state[0]}, "^first_anchor must be .*of shape"),
      "anchor triple": ({"gray": gray, "first_anchor": (*state, state[0])},
                        "^first_anchor must be .*got tuple$"),
      "nan anchor": ({"gray": gray, "first_anchor": (state[0] * np.nan, state[1])},
                     "^first_anchor must be finite"),
      "hint_ab without a mask": ({"gray": gray, "hint_ab": ab + 0.3}, "^hint_ab needs hint_mask"),
      "hint_ab x 1000": ({"gray": gray, "hint_ab": ab + 300, "hint_mask": mask + 1},
                         r"^hint_ab must be within \[-1.16364, 1.15455\]"),
  }


def test_colorize_window_checks_values_not_only_shapes(pair):
  colorizer, _ = pair
  colorizer.window_frames = None
  gray = np.random.RandomState(3).uniform(-0.5, 0.5, (3, 32, 32, 1)).astype(np.float32)
  want, state = colorizer.colorize_window(gray, return_last_anchor=True)
  for case, (kwargs, pattern) in _bad_window_inputs(gray, state).items():
    with pytest.raises(ValueError, match=pattern) as e:
      colorizer.colorize_window(**kwargs)
    assert "\n" not in str(e.value), case
  # Every legitimate input still works: float64 and bfloat16 gray, the extremes of L (what
  # `windows.frames_to_l` gives black and white frames in both gray modes), a bool mask, the
  # carried state.
  np.testing.assert_array_equal(colorizer.colorize_window(gray.astype(np.float64)), want)
  assert colorizer.colorize_window(jnp.asarray(gray, jnp.bfloat16)).shape == want.shape
  for mode in windows.GRAY_MODES:
    frames = np.zeros((3, 32, 32, 1), np.float32)
    frames[0], frames[2] = 1, 1
    extremes = windows.frames_to_l(frames, mode)
    assert extremes.max() == 0.5 and extremes.min() == -0.5
    colorizer.colorize_window(extremes)
  hinted = colorizer.colorize_window(gray, hint_ab=np.full((3, 32, 32, 2), 0.3, np.float32),
                                     hint_mask=np.ones((3, 32, 32, 1), bool))
  np.testing.assert_array_equal(
      hinted, colorizer.colorize_window(gray, hint_ab=np.full((3, 32, 32, 2), 0.3, np.float32),
                                        hint_mask=np.ones((3, 32, 32, 1), np.float32)))
  # Colours where the mask is 0 are no hints: ignored, even NaN or out of range ones.
  half = np.zeros((3, 32, 32, 1), np.float32)
  half[:, :16] = 1
  unread = np.where(half > 0, 0.3, np.nan).repeat(2, -1).astype(np.float32)
  unread[0, 20, 0] = 50.0
  for ab in (np.full((3, 32, 32, 2), 0.3, np.float32), unread):
    np.testing.assert_array_equal(
        colorizer.colorize_window(gray, hint_ab=ab, hint_mask=half),
        colorizer.colorize_window(gray, hint_ab=np.full((3, 32, 32, 2), 0.3, np.float32) * half,
                                  hint_mask=half))
  following = np.concatenate([gray[2:], gray[:2]])  # starts on the frame `state` belongs to
  np.testing.assert_allclose(colorizer.colorize_window(following, first_anchor=state),
                             colorizer.colorize_window(following), atol=1e-5)


def test_load_and_pad_windows_check_their_arguments(pair, tmp_path):
  colorizer, _ = pair
  for bad in (0, 1, -3, 1.7, "x", True):
    with pytest.raises(ValueError, match="frames must be a whole number >= 2"):
      colorizer.pad_windows(bad)
  colorizer.pad_windows(None)
  assert colorizer.window_frames is None
  for dtype in (jnp.int32, "uint8", np.complex64, jnp.float16):
    with pytest.raises(ValueError, match="dtype must be float32, bfloat16 or float64"):
      api.load(str(tmp_path), dtype=dtype)
  with pytest.raises(ValueError, match="jax_enable_x64"):
    api.load(str(tmp_path), dtype=np.float64)
  with pytest.raises(TypeError, match="path must be a file or folder name, got NoneType"):
    api.load(None)


def test_a_colorizer_pickles_into_another_process(pair):
  """A Colorizer goes to a worker process (multiprocessing, joblib) and colorizes there bit for
  bit as here, its window padding kept (it raised: the jitted programs are local lambdas)."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import operator  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top
  _, colorizer = pair
  colorizer.pad_windows(6)
  gray = np.random.RandomState(7).uniform(-0.5, 0.5, (5, 32, 32, 1)).astype(np.float32)
  want = colorizer.colorize_window(gray)
  copy = pickle.loads(pickle.dumps(colorizer))
  assert copy.window_frames == 6 and copy.spec == colorizer.spec
  np.testing.assert_array_equal(copy.colorize_window(gray), want)
  with concurrent.futures.ProcessPoolExecutor(
      1, mp_context=multiprocessing.get_context("spawn")) as pool:
    got = pool.submit(operator.methodcaller("colorize_window", gray), colorizer).result(timeout=300)
  np.testing.assert_array_equal(got, want)


def test_colorize_frames_checks_its_arguments_first(pair):
  _, colorizer = pair
  rs = np.random.RandomState(4)
  frames = rs.randint(0, 255, (4, 32, 32, 3), np.uint8)
  bad = {"interval": (-1, None, 2.5), "network_size": (64.0, (64,), -64, "6x", True)}
  for arg, values in bad.items():
    for value in values:
      pattern = "^interval must be" if arg == "interval" else "^bad network size"
      with pytest.raises(streaming.UsageError, match=pattern):
        streaming.colorize_frames(frames, colorizer, **{"interval": 2, "network_size": 32,
                                                        arg: value})
  with pytest.raises(streaming.UsageError, match="^cuts must be None or a list .*got tuple$"):
    streaming.colorize_frames(frames, colorizer, 2, 32, cuts=())
  with pytest.raises(streaming.UsageError, match="this checkpoint cannot run at that size"):
    streaming.colorize_frames(frames, colorizer, 2, 36)
  # A size written as --size takes it ('32': 32x32, not 3x2), and bfloat16 frames are floats.
  want = list(streaming.colorize_frames(frames, colorizer, 2, 32))
  np.testing.assert_array_equal(list(streaming.colorize_frames(frames, colorizer, 2, "32")), want)
  as_bf16 = jnp.asarray(frames / 255.0, jnp.bfloat16)
  assert len(list(streaming.colorize_frames(as_bf16, colorizer, 2, (32, 32)))) == 4


def test_enable_compilation_cache_keeps_programs_in_the_folder(tmp_path):
  """tcvc_jax.enable_compilation_cache in a new process (as a user's script): JAX's persistent
  cache in the folder given, where a compiled program lands; a folder that cannot be made: None."""
  (tmp_path / "a_file").write_text("not a folder")
  script = textwrap.dedent(f"""
      import jax, jax.numpy as jnp, tcvc_jax
      assert tcvc_jax.enable_compilation_cache({str(tmp_path / "a_file" / "xla")!r}) is None
      print(tcvc_jax.enable_compilation_cache({str(tmp_path / "xla")!r}))
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
      jax.jit(lambda x: jnp.sin(x) * 3.25 + 17.0)(jnp.arange(11.0)).block_until_ready()
      """)
  env = xla_flags.child_env(drop_prefixes=("JAX_",))
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == str(tmp_path / "xla")
  assert "not usable" in proc.stderr
  assert os.listdir(tmp_path / "xla")
