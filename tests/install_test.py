"""A non-editable install (a wheel in a fresh venv) trains, evaluates, colorizes from any folder."""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, cwd, env, timeout=900):
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                        check=False)
  assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory):
  """A fresh venv holding only the wheel; the dependencies come from this interpreter's
  site-packages through a path entry (no download, and without this checkout's editable
  install, whose finder lives in a .pth file that a path entry does not run)."""
  root = tmp_path_factory.mktemp("install")
  wheels = root / "wheels"
  # Built from a copy, so that the checkout gets no build/ folder (whose stale files a later
  # local build would package).
  src = root / "src"
  shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
      ".git", ".venv*", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache"))
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", str(wheels), str(src)], cwd=str(root), env=dict(os.environ))
  (wheel,) = glob.glob(str(wheels / "tcvc_jax-*.whl"))
  venv = root / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=str(root),
       env=dict(os.environ))
  python = str(venv / "bin" / "python")
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(site, "deps.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "-q", wheel], cwd=str(root), env=dict(os.environ))
  return python


def _env(tmp_path):
  """No checkout on the path; the session's cache folder (conftest), whose compiled tiny train step
  (cli_test) the installed package reads as the checkout's would."""
  env = xla_flags.child_env(drop_prefixes=("PYTHONPATH",))
  env.update(TFDS_DATA_DIR=str(tmp_path / "tfds"))
  return env


def test_the_wheel_is_what_gets_imported(venv_python, tmp_path):
  proc = _run([venv_python, "-c", "import tcvc_jax, tcvc_jax.configs; print(tcvc_jax.__file__)"],
              cwd=str(tmp_path), env=_env(tmp_path))
  assert REPO not in proc.stdout and "site-packages" in proc.stdout


def test_installed_presets(venv_python, tmp_path):
  """Every preset of the configs folder is in the wheel and found by name from any folder."""
  for tool, preset, line, more in (
      ("train", "demo:short", "num_train_steps: 300", ()),
      ("train", "default:released", "num_frames: 12", ()),
      ("evaluate", "eval:synthetic,tiny", "network_size: ", ("--config.checkpoint=run",))):
    proc = _run([venv_python, "-m", f"tcvc_jax.{tool}", f"--config={preset}", "--show_config",
                 *more], cwd=str(tmp_path), env=_env(tmp_path))
    assert line in proc.stdout, (preset, proc.stdout[-2000:])


def test_installed_train_eval_and_colorize_run_from_any_folder(venv_python, tmp_path):
  env = _env(tmp_path)
  work = tmp_path / "elsewhere"
  work.mkdir()
  # The presets are found by name in the installed package (demo's by test_installed_presets).
  _run([venv_python, "-m", "tcvc_jax.train", "--config=default:tiny", "--workdir=run",
        "--config.num_train_steps=3", "--config.checkpoint_every_steps=3",
        "--config.eval_every_steps=3"], cwd=str(work), env=env)
  assert os.path.isdir(work / "run" / "checkpoints" / "3")
  _run([venv_python, "-m", "tcvc_jax.evaluate", "--config=eval:synthetic,tiny", "--workdir=ev",
        "--config.checkpoint=run", "--config.data.config=tiny", "--config.outputs.videos=False"],
       cwd=str(work), env=env)
  assert os.path.isfile(work / "ev" / "summary.json")
  frames = work / "gray"
  frames.mkdir()
  rs = np.random.RandomState(0)
  from tcvc_jax.media import writing  # pylint: disable=g-import-not-at-top
  for i in range(5):
    (frames / f"{i}.png").write_bytes(writing.encode_png(rs.randint(0, 255, (32, 32, 3), np.uint8)))
  _run([venv_python, "-m", "tcvc_jax.colorize", "gray", "out", "--checkpoint", "run",
        "--size", "32", "--quiet"], cwd=str(work), env=env)
  assert sorted(os.listdir(work / "out")) == [f"{i}.png" for i in range(5)]


def test_pyproject_lists_every_package():
  import tomllib  # pylint: disable=g-import-not-at-top
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
  found = {"tcvc_jax"} | {"tcvc_jax." + d for d in os.listdir(os.path.join(REPO, "tcvc_jax"))
                          if os.path.isfile(os.path.join(REPO, "tcvc_jax", d, "__init__.py"))}
  assert listed == found | {"tcvc_jax.configs"}
