"""Tests for tcvc_jax/evaluation/evaluator.py: end-to-end runs on a tiny generated test set.

Every number is recomputed from the written frames. The test set, the model and the config:
eval_testlib. Mistakes, failures and interrupts: evaluator_errors_test.
"""

import csv
import json
import os
import types

import numpy as np
import pytest

from tcvc_jax import api
from tcvc_jax.evaluation import evaluator
from tcvc_jax.evaluation import metrics
from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.evaluation.eval_config import EvalError
from tcvc_jax.media import reading
from tcvc_jax.media import writing
from tcvc_jax.models import classical_flow
from tcvc_jax.ops import color

import eval_testlib

# The shared fixtures (pytest finds them by name in this module).
from eval_testlib import cached_loader  # noqa: F401
from eval_testlib import checkpoint  # noqa: F401
from eval_testlib import colorizer  # noqa: F401
from eval_testlib import test_set  # noqa: F401

REPO = eval_testlib.REPO
H, W, CLIPS = eval_testlib.H, eval_testlib.W, eval_testlib.CLIPS
_frames = eval_testlib.drifting_frames
_config = eval_testlib.make_config
_summary = eval_testlib.read_summary


def _read(path):
  return reading.open_source(str(path)).read_all(np.uint8)


def _gray(gt):
  """The gray baseline: the ground truth's L* with a* = b* = 0, as uint8 sRGB (float64 here)."""
  lab = color.rgb_to_lab(gt.astype(np.float64) / 255, np)
  lab[..., 1:] = 0
  return np.round(np.clip(color.lab_to_rgb(lab, np) * 255, 0, 255)).astype(np.uint8)


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
                     "cdc": metrics.cdc_clip(out),
                     "psnr_gray": metrics.psnr_clip(gt, _gray(gt), 3).avg})
  for k in ("psnr", "psnr_key", "psnr_inter", "ssim"):
    assert s[k] == pytest.approx(np.mean([c[k] for c in per_clip]), rel=1e-12), k
  # (float32 in the protocol: a pixel may round the other way)
  assert s["psnr_gray"] == pytest.approx(np.mean([c["psnr_gray"] for c in per_clip]), abs=0.02)
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
  assert float(rows[1]["psnr_gray"]) == pytest.approx(per_clip[1]["psnr_gray"], abs=0.02)
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


def test_no_ground_truth(checkpoint, tmp_path, capsys):
  """Gray and 16-bit frames, no ground truth: frames colorized, only CDC measured; the progress
  bar counts the clips of the set, and no PSNR (it said 'PSNR nan dB')."""
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
  config.metrics.warp_error = True  # needs the outputs only
  workdir = str(tmp_path / "work")
  s = evaluator.evaluate(config, workdir, progress=True)
  progress = capsys.readouterr().err
  assert f" {len(CLIPS)}/{len(CLIPS)} " in progress and "PSNR" not in progress, progress
  # ... and, within a clip, its windows (a long clip stood at 0/1 for minutes).
  for name, n in CLIPS.items():
    windows = len(protocol.plan_windows(n, 3))
    assert f"{name}: window {windows} of {windows}" in progress, progress
  outs = [_read(os.path.join(workdir, "frames", name)) for name in CLIPS]
  assert [o.shape for o in outs] == [(n, H, W, 3) for n in CLIPS.values()]
  saved = _summary(workdir)
  assert saved["no_gt"] is True
  for k in ("psnr", "psnr_key", "psnr_inter", "ssim"):
    assert saved[k] is None, k
  assert saved["warp_error"] == pytest.approx(np.mean(
      [metrics.warp_error(o, classical_flow.estimate_flow) for o in outs]), rel=1e-6)
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
  config.data.clips = f"{clips[1]},nosuch"  # a missing name is an error, as with folders
  with pytest.raises(EvalError, match=(
      "^clips not found in synthetic_clips/tiny split 'test': nosuch \\(it has 2: ")):
    evaluator.evaluate(config, str(tmp_path / "work3"))
  config.data.clips = clips[1]
  assert evaluator.evaluate(config, str(tmp_path / "work3"))["num_clips"] == 1
  config.data.split = "nonexistent"
  with pytest.raises(EvalError, match="split 'nonexistent'"):
    evaluator.evaluate(config, str(tmp_path / "work2"))


def test_hinted_modes_are_measured_next_to_the_automatic_run(checkpoint, test_set, tmp_path):
  config = _config(checkpoint, test_set, "tiny,guided")
  config.protocol.network_size = 32
  config.outputs.videos = False
  summary = evaluator.evaluate(config, str(tmp_path / "work"))
  guided = summary["guided"]
  assert set(guided) == {"auto", "auto_cuts", "reference", "clicks"}
  assert guided["auto"]["psnr"] == pytest.approx(summary["psnr"])  # the protocol's own run
  # No hints on the hinted modes' path: on clips without cuts, the protocol's run.
  assert guided["auto_cuts"]["psnr"] == pytest.approx(guided["auto"]["psnr"], abs=1e-4)
  for mode in ("reference", "clicks"):
    assert np.isfinite(guided[mode]["psnr"]) and guided[mode]["psnr"] != guided["auto"]["psnr"]
  # The hint-free baseline of the hinted modes: no clicks give exactly "auto_cuts".
  config.hints.modes, config.hints.clicks_per_anchor = ("auto", "clicks"), 0
  none = evaluator.evaluate(config, str(tmp_path / "work_none"))["guided"]
  assert none["clicks"] == none["auto_cuts"]
  config.protocol.mode = "multi"
  with pytest.raises(EvalError, match="one-sampling"):
    evaluator.evaluate(config, str(tmp_path / "work2"))
  config.protocol.mode = "one"
  config.hints.modes = ("auto", "magic")
  with pytest.raises(EvalError, match="unknown magic"):
    evaluator.evaluate(config, str(tmp_path / "work3"))


def test_a_test_set_of_videos_and_frame_folders(checkpoint, test_set, tmp_path):
  """<root>/<clip>.mp4 (any video PyAV reads) is a clip beside <root>/<clip>/*.png folders."""
  import data_testlib  # pylint: disable=g-import-not-at-top
  root = tmp_path / "mixed"
  os.makedirs(root)
  os.symlink(os.path.join(test_set, "bear"), root / "bear")
  data_testlib.write_video(str(root / "fox.mkv"), np.stack(_frames(5, 6)), codec="ffv1", fps=10)
  (root / "notes.txt").write_text("not a clip")
  config = _config(checkpoint, str(root))
  config.outputs.fps = 12.5  # of the frame folder's video; the video clip's keeps its 10 fps
  evaluator.evaluate(config, str(tmp_path / "work"))
  with open(tmp_path / "work" / "per_clip.csv") as f:
    rows = {r["clip"]: r for r in csv.DictReader(f)}
  assert sorted(rows) == ["bear", "fox"]
  rates = {c: reading.open_source(str(tmp_path / "work" / "videos" / f"{c}.mp4")).fps
           for c in rows}
  assert rates == {"bear": 12.5, "fox": 10}
  config.outputs.videos = False
  assert int(rows["fox"]["frames"]) == 6 and int(rows["bear"]["frames"]) == CLIPS["bear"]
  data_testlib.write_video(str(root / "bear.mp4"), np.stack(_frames(6, 3)), codec="ffv1")
  dup = "two clips are named bear in .*: bear and bear.mp4"
  with pytest.raises(EvalError, match=dup):
    evaluator.evaluate(config, str(tmp_path / "work2"))


def test_guided_table_shows_what_was_not_measured_as_a_dash():
  """A short clip has no frame far from every reference: its PSNR far is NaN (null in
  summary.json), shown as '-' in the terminal's table (it printed 'nan'), columns aligned."""
  from tcvc_jax.evaluation import guided  # pylint: disable=g-import-not-at-top
  summary = {"auto": {"psnr": 21.5, "psnr_far": float("nan"), "ssim": 0.91, "cdc": 0.0123},
             "clicks": {"psnr": 23.25, "psnr_far": 22.0, "ssim": 0.93, "cdc": 0.0101}}
  header, auto, clicks = guided.table(summary).splitlines()
  assert auto.split() == ["auto", "21.500", "-", "0.9100", "0.012300"]
  assert clicks.split() == ["clicks", "23.250", "22.000", "0.9300", "0.010100"]
  assert len(header) == len(auto) == len(clicks)
  assert auto.index("-") == clicks.index("22.000") + len("22.000") - 1  # right-aligned


def test_multi_mode_with_one_interval_says_it_is_one_pass(caplog):
  from tcvc_jax.evaluation import eval_config  # pylint: disable=g-import-not-at-top
  config = _config("ckpt", "data")
  config.protocol.mode = "multi"
  config.protocol.ensemble_intervals = (3,)
  eval_config.validate_config(config)
  assert "an ensemble of one pass, the same as mode='one' with interval_length=3" in caplog.text
  caplog.clear()
  config.protocol.ensemble_intervals = (3, 5)
  eval_config.validate_config(config)
  assert "ensemble of one" not in caplog.text


def test_eval_py_ends_with_the_gray_baseline_and_where_results_are(tmp_path, monkeypatch, capsys):
  """eval.py's last lines: the summary's JSON (stdout), then PSNR against the gray baseline and the
  results' folder (stderr); without ground truth, no PSNR."""
  from tcvc_jax import evaluate  # pylint: disable=g-import-not-at-top
  summary = {k: 0.5 for k in evaluator.SUMMARY_KEYS}
  summary.update(psnr=24.25, psnr_gray=21.5)
  monkeypatch.setattr(evaluator, "evaluate", lambda config, workdir, progress: summary)
  argv = ["eval.py", "--config=eval:tiny", f"--workdir={tmp_path / 'ev'}",
          "--config.checkpoint=ck", f"--config.data.root={tmp_path}", "--compilation_cache=off"]
  assert evaluate.main(argv) == 0
  out, err = capsys.readouterr()
  assert json.loads(out.splitlines()[-1])["psnr"] == 24.25
  assert err.splitlines()[-1] == (f"PSNR 24.25 dB; the gray (ab = 0) baseline scores 21.50 dB. "
                                  f"Results in {tmp_path / 'ev'} (summary.json, per_clip.csv, ...)")
  summary.update(psnr=float("nan"), psnr_gray=float("nan"))
  assert evaluate.main(argv) == 0
  assert capsys.readouterr().err.splitlines()[-1] == (
      f"Results in {tmp_path / 'ev'} (summary.json, per_clip.csv, ...)")


def test_cdc_plot_of_clips_too_short_for_cdc_says_so(monkeypatch):
  """cdc_per_gap.png's title, where no clip is long enough for CDC's gaps: it said 'CDC nan'."""
  from tcvc_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  titles = {}
  monkeypatch.setattr(report, "_save_figure",
                      lambda fig, path: titles.update({os.path.basename(path):
                                                       fig.axes[0].get_title()}))
  nan = float("nan")
  summary = {"no_gt": True, "cdc": nan,
             "cdc_per_gap": {d: dict.fromkeys("rgb", nan) for d in metrics.CDC_GAPS}}
  report.write_plots("unused", [], summary)
  assert titles == {"cdc_per_gap.png": "CDC not measured: every clip is shorter than 5 frames"}
  summary["cdc"] = 0.0123
  report.write_plots("unused", [], summary)
  assert titles["cdc_per_gap.png"] == "CDC per frame gap; CDC 0.01230"
