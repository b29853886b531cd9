"""Helpers of the evaluator tests: a tiny generated test set and configs/eval.py's presets.

The test set: two 40x56 clips of 9 and 7 frames (CLIPS). Runs use a tiny random TCVC (classical
flow, tiny.save_checkpoint) at network size 32 and the `tiny` preset of configs/eval.py (interval
3; ensemble 3 and 5).
"""

import importlib.util
import json
import os

import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax.media import writing

import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("eval_config",
                                               os.path.join(REPO, "configs", "eval.py"))
eval_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_config)

H, W = 40, 56
CLIPS = {"bear": 9, "cat": 7}


def drifting_frames(seed, n):
  """n uint8 RGB frames [H, W, 3]: a smooth colour pattern drifting by 2 px per frame."""
  y, x = np.mgrid[0:H, 0:W].astype(np.float64)
  params = np.random.default_rng(seed).uniform(0.05, 0.3, (3, 3))
  out = []
  for i in range(n):
    chans = [np.sin(fx * (x + 2 * i) + fy * y + 20 * ph) for fx, fy, ph in params]
    out.append(np.round((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8))
  return out


def clip_set(root, clips):
  """A test set at `root`: {name: number of frames}, clip k drawn with seed k."""
  for k, (name, n) in enumerate(clips.items()):
    os.makedirs(os.path.join(root, name))
    for i, f in enumerate(drifting_frames(k, n)):
      with open(os.path.join(root, name, f"{i:05d}.png"), "wb") as fh:
        fh.write(writing.encode_png(f))
  return str(root)


def make_config(checkpoint, root, presets="tiny", **data):
  """configs/eval.py with `presets`, for `checkpoint` on the test set at `root`; `data`: entries
  of config.data."""
  config = eval_config.get_config(presets)
  config.checkpoint = checkpoint
  config.data.root = root
  for k, v in data.items():
    config.data[k] = v
  return config


def read_summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


# The fixtures both evaluator test modules use (imported there by name).
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return tiny.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def colorizer(checkpoint):  # pylint: disable=redefined-outer-name
  return api.load(checkpoint)


@pytest.fixture(autouse=True)
def cached_loader(monkeypatch, checkpoint, colorizer):  # pylint: disable=redefined-outer-name
  """The evaluator loads via api.load; reuse one Colorizer (and its jit cache)."""
  real = api.load
  monkeypatch.setattr(api, "load",
                      lambda p, dtype=None: colorizer if p == checkpoint else real(p, dtype))


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
  return clip_set(tmp_path_factory.mktemp("testset"), CLIPS)
