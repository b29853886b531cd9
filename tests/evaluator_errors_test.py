"""Tests for tcvc_jax/evaluation/evaluator.py and eval.py: mistakes, failures and interrupts.

Bad inputs and config mistakes are one line each, before any result is written; a run that fails,
is interrupted or overwrites leaves the workdir as it was or wholly replaced. The test set, the
model and the config: eval_testlib.
"""

import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax import atomic
from tcvc_jax import evaluate
from tcvc_jax.evaluation import evaluator
from tcvc_jax.evaluation import report
from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.evaluation.eval_config import EvalError
from tcvc_jax.media import writing

import eval_testlib

# The shared fixtures (pytest finds them by name in this module).
from eval_testlib import cached_loader  # noqa: F401
from eval_testlib import checkpoint  # noqa: F401
from eval_testlib import colorizer  # noqa: F401
from eval_testlib import test_set  # noqa: F401
import xla_flags

REPO = eval_testlib.REPO
_config = eval_testlib.make_config
_summary = eval_testlib.read_summary


def test_bad_inputs(checkpoint, test_set, tmp_path):
  """Each raises one of evaluator.INPUT_ERRORS with a one-line message, before writing results."""
  one = tmp_path / "one" / "clip"
  os.makedirs(one)
  with open(one / "0.png", "wb") as f:
    f.write(writing.encode_png(np.zeros((16, 16, 3), np.uint8)))
  gray = tmp_path / "gray" / "clip"
  os.makedirs(gray)
  for i in range(3):
    with open(gray / f"{i}.png", "wb") as f:
      f.write(writing.encode_png(np.zeros((16, 16), np.uint8)))
  os.makedirs(tmp_path / "empty")
  shutil.copytree(one, tmp_path / "nest" / "cat" / "clip")
  (tmp_path / "a.mp4").write_bytes(b"a video, not a test set folder")
  (tmp_path / "notes.txt").write_bytes(b"a file, not a test set folder")
  # What unzipping on a Mac leaves: not a clip (it was taken for a set nested one level deeper).
  shutil.copytree(gray, tmp_path / "mac" / "__MACOSX" / "clip")
  shutil.copytree(test_set, tmp_path / "latin1")  # a clip folder named in Latin-1: b"caf\xe9"
  os.rename(os.path.join(tmp_path / "latin1", "bear"),
            os.path.join(os.fsencode(tmp_path / "latin1"), b"caf\xe9"))
  shutil.copytree(test_set, tmp_path / "linked")
  os.symlink(tmp_path / "moved_away", tmp_path / "linked" / "zebra")
  cases = {
      "a name not UTF-8": (_config(checkpoint, str(tmp_path / "latin1")),
                           r"^clip caf\\udce9: the name caf\\udce9 is not UTF-8 text"),
      "a broken link": (_config(checkpoint, str(tmp_path / "linked")),
                        "linked/zebra is a link to .*/moved_away, which does not exist: mend or "
                        "remove it"),
      "missing root": (_config(checkpoint, str(tmp_path / "nothing")), "test set folder not found"),
      "root is a video": (_config(checkpoint, str(tmp_path / "a.mp4")),
                          "a.mp4 is a video, not a folder: give the folder that holds it"),
      "root is a file": (_config(checkpoint, str(tmp_path / "notes.txt")),
                         "notes.txt is a file, not a folder"),
      "only __MACOSX": (_config(checkpoint, str(tmp_path / "mac")), r"^no clips in .*/mac \("),
      "empty root": (_config(checkpoint, str(tmp_path / "empty")), "no clips in"),
      # One clip's frame folder given as the test set, and a set nested one level too deep.
      "a clip as root": (_config(checkpoint, str(one)),
                         "it holds frames \\(0.png, ...\\): it is one clip, so give its parent"),
      "nested": (_config(checkpoint, str(tmp_path / "nest")),
                 "folder .*/nest/cat; it holds folders \\(clip\\): are the clips one level deeper"),
      "no root": (_config(checkpoint, None), "set --config.data.root"),
      "unknown clip": (_config(checkpoint, test_set, clips="bear,zebra"),
                       "clips not found .*zebra"),
      "a clip's file name": (_config(checkpoint, test_set, clips="bear.mp4"),
                             "bear.mp4 \\(clips are named without their file extension: bear\\)"),
      "no checkpoint": (_config(None, test_set), "set --config.checkpoint"),
      "missing checkpoint": (_config(str(tmp_path / "nock"), test_set), "no such file"),
      "1-frame clip": (_config(checkpoint, str(tmp_path / "one")), "1 frame"),
      "gray ground truth": (_config(checkpoint, str(tmp_path / "gray")), "ground truth is gray"),
  }
  bad_mode = _config(checkpoint, test_set)
  bad_mode.protocol.mode = "many"
  cases["bad mode"] = (bad_mode, "mode must be")
  inside = tmp_path / "work" / "data_in_results" / "frames"  # the data where results would go
  shutil.copytree(test_set, inside)
  in_results = _config(checkpoint, str(inside))
  in_results.overwrite = True  # without it, the workdir "already holds results (frames)"
  cases["data in results"] = (in_results,
                              r"output .*/frames is the data \(data.root\) .*/frames: writing")
  for case, (config, pattern) in cases.items():
    with pytest.raises(evaluator.INPUT_ERRORS, match=pattern) as e:
      evaluator.evaluate(config, str(tmp_path / "work" / case.replace(" ", "_")))
    assert "\n" not in str(e.value), case
  with pytest.raises(EvalError, match="is inside the test set folder"):
    evaluator.evaluate(_config(checkpoint, str(inside)), str(inside / "results"))
  assert sorted(os.listdir(inside)) == sorted(os.listdir(test_set))


def test_eval_main(checkpoint, test_set, tmp_path):
  """eval.py: a bad test set gives exit status 1 and one error line, no traceback."""
  env = xla_flags.child_env()
  cmd = [sys.executable, os.path.join(REPO, "eval.py"),
         f"--config={os.path.join(REPO, 'configs', 'eval.py')}:tiny",
         f"--workdir={tmp_path / 'work'}", f"--config.checkpoint={checkpoint}",
         f"--config.data.root={tmp_path / 'nothing'}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=REPO)
  assert proc.returncode == 1, proc.stderr
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: test set folder not found: {tmp_path / 'nothing'}"]
  assert proc.stderr.rstrip().endswith(errors[0])


def _snapshot(folder):
  """Every path under `folder` with the bytes of its files (None for folders)."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(folder):
    for name in dirnames:
      out[os.path.relpath(os.path.join(dirpath, name), folder)] = None
    for name in filenames:
      with open(os.path.join(dirpath, name), "rb") as f:
        out[os.path.relpath(os.path.join(dirpath, name), folder)] = f.read()
  return out


@pytest.fixture(name="old_results")
def _old_results(checkpoint, test_set, tmp_path):
  """A workdir holding a finished run's results and a file of the user's."""
  workdir = str(tmp_path / "work")
  config = _config(checkpoint, test_set)
  config.outputs.videos = False
  evaluator.evaluate(config, workdir)
  with open(os.path.join(workdir, "notes.txt"), "w") as f:
    f.write("mine")
  return workdir


def _failing_runs(checkpoint, test_set, tmp_path):
  """(name, config, exception type, patch(monkeypatch, workdir) or None) of runs that fail: a
  1-frame clip before any clip is colorized, the others after their first clip."""
  bad = eval_testlib.clip_set(tmp_path / "bad", {"a": 5, "b": 1})
  real_commit = atomic.AtomicOutput.commit

  def interrupt_at_tables(m, workdir):
    del workdir

    def write_tables(*args):
      raise KeyboardInterrupt
    m.setattr(report, "write_tables", write_tables)

  def summary_commit_fails(m, workdir):  # the last step: the other results are in place by then
    def commit(out):
      if out.path == os.path.join(os.path.abspath(workdir), "summary.json"):
        raise OSError("disk full")
      return real_commit(out)
    m.setattr(atomic.AtomicOutput, "commit", commit)

  return [("1-frame clip", _config(checkpoint, bad), protocol.ClipTooShortError, None),
          ("interrupt", _config(checkpoint, test_set), KeyboardInterrupt, interrupt_at_tables),
          ("moving into place", _config(checkpoint, test_set), OSError, summary_commit_fails)]


def test_a_failed_run_leaves_the_workdir_as_it_was(checkpoint, test_set, old_results, tmp_path,
                                                   monkeypatch):
  """An error or an interrupt after some clips: no new workdir, an old one exactly as it was."""
  before = _snapshot(old_results)
  runs = _failing_runs(checkpoint, test_set, tmp_path)
  top = sorted(os.listdir(tmp_path))
  for name, config, error, patch in runs:
    for workdir, overwrite in ((str(tmp_path / "new" / "work"), False), (old_results, True)):
      with monkeypatch.context() as m:
        if patch is not None:
          patch(m, workdir)
        config.overwrite = overwrite
        with pytest.raises(error):
          evaluator.evaluate(config, workdir)
      assert sorted(os.listdir(tmp_path)) == top, (name, workdir)  # nothing new, nothing hidden
      assert _snapshot(old_results) == before, (name, workdir)


def test_an_interrupt_while_the_run_goes_on_leaves_nothing(checkpoint, test_set, tmp_path,
                                                          monkeypatch):
  """eval.py's signal handler removes the run's outputs while the run still writes; the files it
  writes after that fail, and none comes back."""
  real = protocol.colorize_clip
  calls = []

  def colorize_clip(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      atomic.discard_all()  # what cli.run does at a signal, beside the worker thread
    return real(*args, **kwargs)

  monkeypatch.setattr(protocol, "colorize_clip", colorize_clip)
  with pytest.raises(OSError):
    evaluator.evaluate(_config(checkpoint, test_set), str(tmp_path / "new" / "work"))
  assert len(calls) == 2 and not os.listdir(tmp_path)


def test_a_bad_clip_fails_the_run_before_any_clip_is_colorized(checkpoint, tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(protocol, "colorize_clip", lambda *a, **k: calls.append(1))
  for bad, error in (({"a": 5, "b": 1}, "clip b has 1 frame"), ({"a": 5, "c": 0}, "no frames")):
    root = eval_testlib.clip_set(tmp_path / f"set{len(bad)}{list(bad)[1]}", bad)
    with pytest.raises(evaluator.INPUT_ERRORS, match=error):
      evaluator.evaluate(_config(checkpoint, root), str(tmp_path / "work"))
  assert not calls and not os.path.exists(tmp_path / "work")


def test_ground_truth_without_colour_is_told(checkpoint, tmp_path, caplog):
  # Gray saved as RGB: scored (it is a valid image) but not silently; 1-channel gray is refused.
  clip = tmp_path / "set" / "old_film"
  os.makedirs(clip)
  for i, f in enumerate(eval_testlib.drifting_frames(0, 3)):
    with open(clip / f"{i}.png", "wb") as fh:
      fh.write(writing.encode_png(np.repeat(f[..., :1], 3, -1)))
  config = _config(checkpoint, str(tmp_path / "set"))
  config.outputs.videos = config.outputs.plots = False
  evaluator.evaluate(config, str(tmp_path / "work"))
  assert ("clip old_film: its ground truth has no colour (R = G = B in every frame): its PSNR and "
          "CDC measure against gray") in caplog.text
  # One frame re-saved as gray in a colour clip (a flat black one is no such mistake).
  mixed = tmp_path / "set2" / "mixed"
  os.makedirs(mixed)
  frames = list(eval_testlib.drifting_frames(0, 4))
  frames[2] = np.repeat(frames[2][..., :1], 3, -1)
  frames[3] = np.zeros_like(frames[3])
  for i, f in enumerate(frames):
    (mixed / f"{i}.png").write_bytes(writing.encode_png(f))
  caplog.clear()
  config.data.root = str(tmp_path / "set2")
  evaluator.evaluate(config, str(tmp_path / "work2"))
  assert ("clip mixed: 1 of its 4 ground-truth frames have no colour (R = G = B; 2.png): gray "
          "frames among colour ones?") in caplog.text


def test_overwrite_never_replaces_folders_of_the_users(checkpoint, test_set, tmp_path):
  # frames/ and videos/ the user made, with or without a summary.json of theirs: not results.
  config = _config(checkpoint, test_set, clips="cat")
  config.overwrite = True
  work = tmp_path / "work"
  shutil.copytree(os.path.join(test_set, "bear"), work / "frames" / "myshots")
  (work / "videos").mkdir()
  (work / "videos" / "holiday.mp4").write_bytes(b"a film")
  before = sorted(str(p) for p in work.rglob("*"))
  with pytest.raises(EvalError, match=re.escape(
      f"{work} holds frames, videos that no eval.py run wrote; overwrite replaces only an earlier "
      "run's results")):
    evaluator.evaluate(config, str(work))
  (work / "summary.json").write_text("my notes")
  with pytest.raises(EvalError, match=f"{work} holds summary.json that no eval.py run wrote"):
    evaluator.evaluate(config, str(work))
  (work / "summary.json").write_text('{"num_clips": 1, "cdc_per_gap": {}}')
  (work / "videos" / "notes.txt").write_text("mine")
  with pytest.raises(EvalError, match=f"{work} holds videos that no eval.py run wrote"):
    evaluator.evaluate(config, str(work))
  assert sorted(str(p) for p in work.rglob("*")) == sorted(
      before + [str(work / "summary.json"), str(work / "videos" / "notes.txt")])


def test_overwrite_replaces_every_earlier_result(checkpoint, test_set, old_results, tmp_path):
  config = _config(checkpoint, test_set, clips="cat")
  config.outputs.plots = False
  with pytest.raises(EvalError, match="already holds results"):
    evaluator.evaluate(config, old_results)
  config.overwrite = True
  evaluator.evaluate(config, old_results)
  assert sorted(os.listdir(old_results)) == ["config.json", "frames", "notes.txt", "per_clip.csv",
                                             "per_frame.csv", "summary.json", "videos"]
  assert os.listdir(os.path.join(old_results, "frames")) == ["cat"]  # no stale bear
  assert os.listdir(os.path.join(old_results, "videos")) == ["cat.mp4"]
  with open(os.path.join(old_results, "per_clip.csv")) as f:
    assert [r["clip"] for r in csv.DictReader(f)] == ["cat"]
  assert _summary(old_results)["num_clips"] == 1
  with open(os.path.join(old_results, "notes.txt")) as f:
    assert f.read() == "mine"
  assert sorted(os.listdir(tmp_path)) == ["work"]


@pytest.mark.parametrize("args,text", [
    (["--config.metrics.warp_batch=0", "--config.metrics.warp_error=True"],
     "metrics.warp_batch must be a positive integer, got 0"),
    (["--config.outputs.fps=0"], "outputs.fps must be a number of frames per second"),
    (["--config.data.gray_mode=foo"], "data.gray_mode must be one of srgb, original, got 'foo'"),
    (["--config.protocol.interval_length=-2"],
     "protocol.interval_length must be a non-negative integer, got -2"),
    (["--config.protocol.ensemble_intervals=()"],
     "protocol.ensemble_intervals must be one or more"),
    (["--config.protocol.network_size=-32"], "protocol.network_size must be a positive integer"),
    (["--config.protocol.mode=many"], "protocol.mode must be one of one, multi"),
    (["--config.metrics.warp_flow=raft"], "metrics.warp_flow must be one of classical, flownet2"),
    (["--config.dtype=float16"], "dtype must be one of float32, bfloat16"),
    (["--config.hints.modes=('auto','magic')"], "hints.modes: unknown magic"),
    (["--config.hints.modes=('auto','clicks')", "--config.protocol.mode=multi"],
     "hinted modes need one-sampling"),
    (["--config.hints.modes=('auto','clicks')", "--config.hints.click_patch=33"],
     "hints.click_patch must be smaller than protocol.network_size (32), got 33"),
    (["--config.hints.seed=-1"], "hints.seed must be a non-negative integer"),
    (["--config.hints.click_patch=4"], "hints.click_patch must be odd, got 4"),
    (["--config.data.source=s3"], "data.source must be one of folder, tfds"),
    # eval:synthetic (a TFDS split) given a folder of clips: they were silently not evaluated.
    (["--config.data.source=tfds"], "is read only with data.source='folder', and this config "
     "reads the TFDS split data.name / data.split"),
    (["--config.checkpoint="], "no checkpoint: set --config.checkpoint"),
    (["--config.data.root="], "no test set: set --config.data.root"),
])
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections' loader
def test_config_mistakes_are_usage_errors(args, text, checkpoint, test_set, tmp_path, monkeypatch,
                                          capsys):
  """Exit status 2 and one line naming the key, before any folder is made or the model loaded."""
  def load(*args, **kwargs):
    raise AssertionError("the model was loaded")

  monkeypatch.setattr(api, "load", load)
  monkeypatch.setattr(sys, "argv", list(sys.argv))  # flag parsing rewrites it
  keys = {a.split("=", 1)[0] for a in args}
  argv = ["eval.py", "--config=eval:tiny", f"--workdir={tmp_path / 'work'}"]
  argv += [f"{k}={v}" for k, v in (("--config.checkpoint", checkpoint),
                                   ("--config.data.root", test_set)) if k not in keys]
  assert evaluate.main(argv + args) == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
  assert not os.listdir(tmp_path)


def test_eval_interrupt_leaves_the_old_results(old_results, checkpoint, test_set, tmp_path):
  """eval.py interrupted in its second clip, over a workdir with results, with overwrite: exit
  status 130 and the workdir exactly as it was."""
  before = _snapshot(old_results)
  driver = (
      "import sys\n"
      "from tcvc_jax import cli, evaluate\n"
      "from tcvc_jax.evaluation import windows\n"
      "real, calls = windows.colorize_clip, []\n"
      "def colorize_clip(*args, **kwargs):\n"
      "  calls.append(1)\n"
      "  if len(calls) == 2:\n"
      "    raise KeyboardInterrupt\n"
      "  return real(*args, **kwargs)\n"
      "windows.colorize_clip = colorize_clip\n"
      "cli.exit(evaluate.main(sys.argv))\n")
  env = xla_flags.child_env()
  cmd = [sys.executable, "-c", driver, "--config=eval:tiny", f"--workdir={old_results}",
         "--compilation_cache=off", f"--config.checkpoint={checkpoint}",
         f"--config.data.root={test_set}", "--config.overwrite=True"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=REPO)
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert proc.stderr.rstrip().endswith("interrupted; no output written")
  assert _snapshot(old_results) == before
  assert sorted(os.listdir(tmp_path)) == ["work"]
