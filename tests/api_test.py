"""tcvc_jax.Colorizer: padded windows are exact and compile once per frame size."""

import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax import streaming
from tcvc_jax.evaluation import windows

import tiny


@pytest.fixture(scope="module")
def pair():
  model = tiny.tiny_model()
  variables = tiny.tiny_variables(model)
  return api.Colorizer(model, variables), api.Colorizer(model, variables)


def test_padded_windows_equal_unpadded_bit_for_bit(pair):
  plain, padded = pair
  padded.pad_windows(6)
  gray = np.random.RandomState(0).uniform(-0.5, 0.5, (6, 32, 32, 1)).astype(np.float32)
  for n in range(2, 7):
    want, want_state = plain.colorize_window(gray[:n], return_last_anchor=True)
    got, got_state = padded.colorize_window(gray[:n], return_last_anchor=True)
    np.testing.assert_array_equal(got, want)
    for g, w in zip(got_state, want_state, strict=True):
      np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # The carried anchor of the previous window as frame 0.
    np.testing.assert_array_equal(padded.colorize_window(gray[:n], first_anchor=got_state),
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
  np.testing.assert_array_equal(np.stack(out), want)


def test_a_clip_shorter_than_a_window_is_padded_to_its_length_only(pair):
  """A huge --interval on a short clip costs the clip's frames, not the interval's."""
  _, colorizer = pair
  rs = np.random.RandomState(2)
  frames = [rs.randint(0, 255, (32, 32, 3), np.uint8) for _ in range(5)]
  out = list(streaming.colorize_frames(frames, colorizer, interval=500, network_size=32))
  assert len(out) == 5
  assert colorizer.window_frames == 5
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
  streaming.AnchorCarry(model).set_interval(interval, num_frames)
  assert model.frames == want
