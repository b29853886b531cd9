"""Helpers of the CLI tests: the tools run in subprocesses, each test with its own cache folders."""

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from tcvc_jax.media import writing

import tiny
import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool_env(tmp_path):
  """A tool's environment: no XLA_FLAGS; its user cache and TFDS folders under `tmp_path`."""
  env = xla_flags.child_env()
  env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
  env["TFDS_DATA_DIR"] = str(tmp_path / "tfds")
  return env


def run_tool(args, tmp_path, cwd=None, timeout=300):
  """`python *args` to its end, in `cwd` or `tmp_path`, with `tool_env`; text output captured."""
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                        env=tool_env(tmp_path), cwd=cwd or str(tmp_path), check=False)


def call_main(main, argv):
  """A tool's `main(argv)` in this process, its output captured (argparse's usage errors exit):
  for mistakes found before any work, where a subprocess costs ~2-5 s of JAX imports each (a few
  tests per tool keep running the real command). Returns what `run_tool` does."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      rc = main(list(argv))
    except SystemExit as e:
      rc = e.code
  return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


def run_main(main, args, tmp_path, monkeypatch):
  """`call_main` in `tmp_path` with `tool_env`'s folders."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "argv", list(sys.argv))  # (the flag parser sets it)
  for key in ("XDG_CACHE_HOME", "TFDS_DATA_DIR"):
    monkeypatch.setenv(key, tool_env(tmp_path)[key])
  return call_main(main, args)


def random_frames(folder):
  """Makes `folder` with 12 random 32x32 RGB frames as PNGs; returns its path."""
  folder.mkdir()
  rs = np.random.RandomState(0)
  for i in range(12):
    (folder / f"{i:03d}.png").write_bytes(writing.encode_png(rs.randint(0, 255, (32, 32, 3),
                                                                        np.uint8)))
  return str(folder)


# The fixtures both CLI test modules use (imported there by name).
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return tiny.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
  return random_frames(tmp_path_factory.mktemp("frames") / "clip")
