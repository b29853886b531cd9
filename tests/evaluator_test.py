"""Tests for tcvc_jax/evaluator.py and eval.py: end-to-end runs on a tiny generated test set.

Two 40x56 clips of 9 and 7 frames, a tiny random TCVC (classical flow) at network size 32 and the
`tiny` preset of configs/eval.py (interval 3; ensemble 3 and 5).
"""

import csv
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax import atomic
from tcvc_jax import evaluate
from tcvc_jax.evaluation import evaluator
from tcvc_jax.evaluation import metrics
from tcvc_jax.evaluation import report
from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.evaluation.eval_config import EvalError
from tcvc_jax.media import reading
from tcvc_jax.media import writing
from tcvc_jax.models import classical_flow

import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("eval_config",
                                               os.path.join(REPO, "configs", "eval.py"))
eval_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_config)

H, W = 40, 56
CLIPS = {"bear": 9, "cat": 7}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return tiny.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def colorizer(checkpoint):
  return api.load(checkpoint)


@pytest.fixture(autouse=True)
def _cached_loader(monkeypatch, checkpoint, colorizer):
  """The evaluator loads via api.load; reuse one Colorizer (and its jit cache)."""
  real = api.load
  monkeypatch.setattr(api, "load",
                      lambda p, dtype=None: colorizer if p == checkpoint else real(p, dtype))


def _frames(seed, n):
  """n uint8 RGB frames [H, W, 3]: a smooth colour pattern drifting by 2 px per frame."""
  y, x = np.mgrid[0:H, 0:W].astype(np.float64)
  params = np.random.default_rng(seed).uniform(0.05, 0.3, (3, 3))
  out = []
  for i in range(n):
    chans = [np.sin(fx * (x + 2 * i) + fy * y + 20 * ph) for fx, fy, ph in params]
    out.append(np.round((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8))
  return out


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
  root = tmp_path_factory.mktemp("testset")
  for k, (name, n) in enumerate(CLIPS.items()):
    os.makedirs(root / name)
    for i, f in enumerate(_frames(k, n)):
      with open(root / name / f"{i:05d}.png", "wb") as fh:
        fh.write(writing.encode_png(f))
  return str(root)


def _config(checkpoint, root, presets="tiny", **data):
  config = eval_config.get_config(presets)
  config.checkpoint = checkpoint
  config.data.root = root
  for k, v in data.items():
    config.data[k] = v
  return config


def _read(path):
  return reading.open_source(str(path)).read_all(np.uint8)


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def test_one_sampling_end_to_end(checkpoint, test_set, tmp_path):
  config = _config(checkpoint, test_set)
  config.metrics.warp_error = True
  workdir = str(tmp_path / "work")
  evaluator.evaluate(config, workdir)
  s = _summary(workdir)
  for name in ("config.json", "per_clip.csv", "per_frame.csv", "psnr_per_frame.png",
               "cdc_per_gap.png"):
    assert os.path.isfile(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "cdc_per_gap.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  # Recompute every number from the written PNGs and the ground truth.
  per_clip = []
  for name, n in CLIPS.items():
    out = _read(os.path.join(workdir, "frames", name))
    gt = _read(os.path.join(test_set, name))
    assert out.shape == (n, H, W, 3)
    assert sorted(os.listdir(os.path.join(workdir, "frames", name))) == sorted(
        os.listdir(os.path.join(test_set, name)))
    video = reading.open_source(os.path.join(workdir, "videos", name + ".mp4"))
    assert video.num_frames == n
    p = metrics.psnr_clip(gt, out, 3)
    per_clip.append({"psnr": p.avg, "psnr_key": p.key, "psnr_inter": p.inter,
                     "ssim": metrics.ssim_clip(gt, out),
                     "warp_error": metrics.warp_error(out, classical_flow.estimate_flow),
                     "cdc": metrics.cdc_clip(out)})
  for k in ("psnr", "psnr_key", "psnr_inter", "ssim"):
    assert s[k] == pytest.approx(np.mean([c[k] for c in per_clip]), rel=1e-12), k
  assert s["warp_error"] == pytest.approx(np.mean([c["warp_error"] for c in per_clip]), rel=1e-5)
  assert s["cdc"] == pytest.approx(metrics.cdc([c["cdc"] for c in per_clip])["cdc"], rel=1e-7)
  assert "classical" in s["warp_error_flow"]
  assert (s["num_clips"], s["num_frames"], s["mode"]) == (2, 16, "one")
  assert s["interval_lengths"] == [3]
  assert 5 < s["psnr"] < 40 and 0 < s["cdc"] < 1 and 0 < s["ssim"] < 1 and s["warp_error"] > 0

  with open(os.path.join(workdir, "per_clip.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["clip"] for r in rows] == list(CLIPS)
  assert float(rows[1]["psnr"]) == pytest.approx(per_clip[1]["psnr"], rel=1e-12)
  with open(os.path.join(workdir, "per_frame.csv")) as f:
    assert len(list(csv.DictReader(f))) == sum(CLIPS.values())

  # The same workdir again: refused unless overwrite.
  with pytest.raises(EvalError, match="already holds results"):
    evaluator.evaluate(config, workdir)
  config.overwrite = True
  config.metrics.warp_error = False
  config.outputs.videos = False
  assert evaluator.evaluate(config, workdir)["psnr"] == pytest.approx(s["psnr"], rel=1e-12)
  assert _summary(workdir)["warp_error"] is None


def test_ensemble(checkpoint, colorizer, test_set, tmp_path):
  """multi: the truncated mean of the passes at intervals 3 and 5, without anchor carrying."""
  config = _config(checkpoint, test_set, "tiny,multi")
  config.outputs.videos = False
  workdir = str(tmp_path / "work")
  s = evaluator.evaluate(config, workdir)
  assert s["mode"] == "multi" and s["interval_lengths"] == [3, 5]
  psnrs = []
  for name in CLIPS:
    gt = _read(os.path.join(test_set, name))
    passes = [protocol.run_pass(protocol.frames_to_l(gt), colorizer.colorize_window, t, 32)
              for t in (3, 5)]
    want = np.clip((passes[0].astype(np.float64) + passes[1]) / 2, 0, 255).astype(np.uint8)
    got = _read(os.path.join(workdir, "frames", name))
    np.testing.assert_array_equal(got, want)
    psnrs.append(metrics.psnr_clip(gt, got, 3).avg)
  assert s["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-12)


def test_no_ground_truth(checkpoint, tmp_path):
  """Gray and 16-bit frames, no ground truth: frames colorized, only CDC measured."""
  root = tmp_path / "gray"
  for k, (name, n) in enumerate(CLIPS.items()):
    os.makedirs(root / name)
    for i, f in enumerate(_frames(k + 5, n)):
      g = f.mean(-1, keepdims=True)
      g = (g * 257).astype(np.uint16) if k else g.astype(np.uint8)
      with open(root / name / f"img{i}.png", "wb") as fh:
        fh.write(writing.encode_png(g))
  config = _config(checkpoint, str(root), "tiny,nogt")
  config.outputs.videos = False
  workdir = str(tmp_path / "work")
  s = evaluator.evaluate(config, workdir)
  outs = [_read(os.path.join(workdir, "frames", name)) for name in CLIPS]
  assert [o.shape for o in outs] == [(n, H, W, 3) for n in CLIPS.values()]
  saved = _summary(workdir)
  assert saved["no_gt"] is True
  for k in ("psnr", "psnr_key", "psnr_inter", "ssim", "warp_error"):
    assert saved[k] is None, k
  assert saved["cdc"] == pytest.approx(metrics.cdc([metrics.cdc_clip(o) for o in outs])["cdc"])
  assert s["cdc"] == saved["cdc"]
  assert os.path.isfile(os.path.join(workdir, "cdc_per_gap.png"))
  assert not os.path.exists(os.path.join(workdir, "psnr_per_frame.png"))


class _Replay:
  """A stand-in Colorizer: the original's stored ab for the window whose L it is given."""

  model = types.SimpleNamespace(flow_type="classical")

  def __init__(self, windows):
    self.windows = windows

  def colorize_window(self, gray, first_anchor=None, return_last_anchor=False):
    del first_anchor
    g = np.asarray(gray)
    for lum, ab in self.windows:
      if lum.shape == g.shape and np.allclose(lum, g, rtol=0, atol=1e-6):
        return (ab, None) if return_last_anchor else ab
    raise AssertionError(f"no stored window matches the L of shape {g.shape}")


@pytest.mark.parametrize("run,presets", [("one_f32", ""), ("multi_f32", "multi")])
def test_golden_protocol_numbers(run, presets, tmp_path, monkeypatch):
  """On the golden clip (tests/golden/protocol.*) the summary equals the original script's."""
  z = np.load(os.path.join(REPO, "tests", "golden", "protocol.npz"))
  with open(os.path.join(REPO, "tests", "golden", "protocol.json")) as f:
    ref = json.load(f)["runs"][run]
  windows = [(z[f"{prefix}_window{k}_L"].transpose(0, 2, 3, 1),
              z[f"{prefix}_window{k}_out_ab"].transpose(0, 2, 3, 1))
             for prefix, ks in (("one", (0, 1, 2)), ("multi", (3, 4))) for k in ks]
  os.makedirs(tmp_path / "gt" / "clip")
  for i, frame in enumerate(z["input_frames"]):
    with open(tmp_path / "gt" / "clip" / f"{i:05d}.png", "wb") as f:
      f.write(writing.encode_png(frame))
  monkeypatch.setattr(api, "load", lambda p, dtype=None: _Replay(windows))
  config = _config("replay", str(tmp_path / "gt"), presets)
  config.protocol.network_size = 64
  config.protocol.interval_length = 4
  config.protocol.ensemble_intervals = (4, 5)
  config.metrics.warp_error = False
  config.outputs.videos = config.outputs.plots = False
  s = evaluator.evaluate(config, str(tmp_path / "work"))
  # The original's own float32 and float64 runs differ by up to 1.1e-6 dB and 2.7e-6 in CDC.
  for key, ref_key in (("psnr", "psnr_avg"), ("psnr_key", "psnr_key_avg"),
                       ("psnr_inter", "psnr_inter_avg"), ("cdc", "CDC")):
    assert s[key] == pytest.approx(ref[ref_key], abs=1e-5), key
  for ch in "rgb":
    assert s["cdc_per_channel"][ch] == pytest.approx(ref[f"JS_{ch}"], abs=1e-5), ch


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
  (tmp_path / "a.mp4").write_bytes(b"a video, not a test set folder")
  cases = {
      "missing root": (_config(checkpoint, str(tmp_path / "nothing")), "test set folder not found"),
      "root is a file": (_config(checkpoint, str(tmp_path / "a.mp4")),
                         "a.mp4 is a file, not a folder"),
      "empty root": (_config(checkpoint, str(tmp_path / "empty")), "no clips in"),
      "no root": (_config(checkpoint, None), "set --config.data.root"),
      "unknown clip": (_config(checkpoint, test_set, clips="bear,zebra"),
                       "clips not found .*zebra"),
      "no checkpoint": (_config(None, test_set), "set --config.checkpoint"),
      "missing checkpoint": (_config(str(tmp_path / "nock"), test_set), "no such file"),
      "1-frame clip": (_config(checkpoint, str(tmp_path / "one")), "1 frame"),
      "gray ground truth": (_config(checkpoint, str(tmp_path / "gray")), "ground truth is gray"),
  }
  bad_mode = _config(checkpoint, test_set)
  bad_mode.protocol.mode = "many"
  cases["bad mode"] = (bad_mode, "mode must be")
  for case, (config, pattern) in cases.items():
    with pytest.raises(evaluator.INPUT_ERRORS, match=pattern) as e:
      evaluator.evaluate(config, str(tmp_path / "work" / case.replace(" ", "_")))
    assert "\n" not in str(e.value), case


def test_eval_main(checkpoint, test_set, tmp_path):
  """eval.py: a bad test set gives exit status 1 and one error line, no traceback."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
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


def test_tfds_split_source(checkpoint, tmp_path):
  """A split of a data/ dataset (the embedded synthetic clips) is a test set too.

  It is built on demand.
  """
  config = _config(checkpoint, None, source="tfds", name="synthetic_clips", config="tiny",
                   split="test", data_dir=str(tmp_path / "tfds"))
  workdir = str(tmp_path / "work")
  s = evaluator.evaluate(config, workdir)
  clips = sorted(os.listdir(os.path.join(workdir, "frames")))
  assert len(clips) == 2  # the tiny config's test split
  out = _read(os.path.join(workdir, "frames", clips[0]))
  assert out.shape == (8, 32, 32, 3)
  assert np.isfinite(s["psnr"]) and np.isfinite(s["cdc"])
  config.data.split = "nonexistent"
  with pytest.raises(EvalError, match="split 'nonexistent'"):
    evaluator.evaluate(config, str(tmp_path / "work2"))


def test_hinted_modes_are_measured_next_to_the_automatic_run(checkpoint, test_set, tmp_path):
  config = _config(checkpoint, test_set, "tiny,guided")
  config.protocol.network_size = 32
  config.outputs.videos = False
  summary = evaluator.evaluate(config, str(tmp_path / "work"))
  guided = summary["guided"]
  assert set(guided) == {"auto", "reference", "clicks"}
  assert guided["auto"]["psnr"] == pytest.approx(summary["psnr"])  # the protocol's own run
  for mode in ("reference", "clicks"):
    assert np.isfinite(guided[mode]["psnr"]) and guided[mode]["psnr"] != guided["auto"]["psnr"]
  config.protocol.mode = "multi"
  with pytest.raises(EvalError, match="one-sampling"):
    evaluator.evaluate(config, str(tmp_path / "work2"))
  config.protocol.mode = "one"
  config.hints.modes = ("auto", "magic")
  with pytest.raises(EvalError, match="unknown magic"):
    evaluator.evaluate(config, str(tmp_path / "work3"))


def _clip_set(root, clips):
  """A test set at `root`: {name: number of frames}."""
  for k, (name, n) in enumerate(clips.items()):
    os.makedirs(os.path.join(root, name))
    for i, f in enumerate(_frames(k, n)):
      with open(os.path.join(root, name, f"{i:05d}.png"), "wb") as fh:
        fh.write(writing.encode_png(f))
  return str(root)


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
  """(name, config, exception type, patch(monkeypatch, workdir) or None) of runs that fail after
  their first clip."""
  bad = _clip_set(tmp_path / "bad", {"a": 5, "b": 1})
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
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, "-c", driver, "--config=eval:tiny", f"--workdir={old_results}",
         "--compilation_cache=off", f"--config.checkpoint={checkpoint}",
         f"--config.data.root={test_set}", "--config.overwrite=True"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=REPO)
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert proc.stderr.rstrip().endswith("interrupted; no output written")
  assert _snapshot(old_results) == before
  assert sorted(os.listdir(tmp_path)) == ["work"]


def test_a_test_set_of_videos_and_frame_folders(checkpoint, test_set, tmp_path):
  """<root>/<clip>.mp4 (any video PyAV reads) is a clip beside <root>/<clip>/*.png folders."""
  import data_testlib  # pylint: disable=g-import-not-at-top
  root = tmp_path / "mixed"
  os.makedirs(root)
  os.symlink(os.path.join(test_set, "bear"), root / "bear")
  data_testlib.write_video(str(root / "fox.mkv"), np.stack(_frames(5, 6)), codec="ffv1")
  (root / "notes.txt").write_text("not a clip")
  config = _config(checkpoint, str(root))
  config.outputs.videos = False
  evaluator.evaluate(config, str(tmp_path / "work"))
  with open(tmp_path / "work" / "per_clip.csv") as f:
    rows = {r["clip"]: r for r in csv.DictReader(f)}
  assert sorted(rows) == ["bear", "fox"]
  assert int(rows["fox"]["frames"]) == 6 and int(rows["bear"]["frames"]) == CLIPS["bear"]
  data_testlib.write_video(str(root / "bear.mp4"), np.stack(_frames(6, 3)), codec="ffv1")
  dup = "two clips are named bear in .*: bear and bear.mp4"
  with pytest.raises(EvalError, match=dup):
    evaluator.evaluate(config, str(tmp_path / "work2"))
