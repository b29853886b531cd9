"""Evaluates a TCVC checkpoint on a test set with the original protocol: frames, videos, metrics.

`evaluate(config, workdir)` (config: configs/eval.py) colorizes every clip with
`protocol.colorize_clip` (one-sampling, or the multi-sampling ensemble), then measures it with
`metrics` as the original scripts do (docs/original.md#evaluation-protocol): PSNR over all, key and
inter frames, per clip and then averaged over clips; CDC; SSIM; and a warping error (not in the
original). Windows sharing a boundary frame reuse its anchor state
(`window_stream.AnchorCarry`): same frames, fewer passes.

Warping error flow: by default the parameter-free classical TV-L1 flow
(`models.classical_flow.estimate_flow`, default parameters) on the normalised L of the colorized
frames, at full resolution. It is the same ruler for every checkpoint, so the numbers of two
checkpoints are comparable, and needs no size multiple. `metrics.warp_flow="flownet2"` uses the
checkpoint's own FlowNet2 instead (frames resized to multiples of 64 for it, the flow resized back).

The config's values are checked by `eval_config.validate_config`; the test set is read by
`clips.iter_clips`.

Workdir layout (a run's results appear whole or not at all: they are written into a temporary
folder and moved into the workdir at the end, summary.json last; a run that fails or is interrupted
leaves the workdir as it was, and one with `overwrite` replaces every earlier result only then):
  config.json                 the resolved config
  frames/<clip>/*.png         colorized frames, named as the input frames
  videos/<clip>.mp4           the same frames as H.264
  per_clip.csv, per_frame.csv metrics per clip and PSNR per frame
  summary.json                psnr, psnr_key, psnr_inter, cdc, ssim, warp_error (null: not measured;
                              cdc over the clips long enough for its gaps, cdc_clips of them),
                              psnr_gray: the gray (ab = 0) baseline's PSNR; all means over clips
  psnr_per_frame.png, cdc_per_gap.png
"""

import json
import os
import shutil
import sys
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from tcvc_jax import api
from tcvc_jax import atomic
from tcvc_jax import converted
from tcvc_jax import porting
from tcvc_jax import streaming
from tcvc_jax import window_stream
from tcvc_jax.evaluation import clips as clips_lib
from tcvc_jax.evaluation import eval_config
from tcvc_jax.evaluation import guided
from tcvc_jax.evaluation import metrics
from tcvc_jax.evaluation import report
from tcvc_jax.evaluation import windows as protocol
from tcvc_jax.evaluation.eval_config import EvalError
from tcvc_jax.media import reading
from tcvc_jax.models import classical_flow

SUMMARY_KEYS = ("psnr", "psnr_key", "psnr_inter", "cdc", "ssim", "warp_error")
CLASSICAL_FLOW_NAME = "classical TV-L1 (tcvc_jax.models.classical_flow.estimate_flow, defaults)"

# Reported in one line by eval.py; anything else is a bug and keeps its traceback.
INPUT_ERRORS = (EvalError, reading.MediaError, porting.ConversionError,
                protocol.ClipTooShortError, streaming.UsageError, OSError)


# --------------------------------------------------------------------------------------------------
# Model and flow
# --------------------------------------------------------------------------------------------------


def interval_lengths(protocol_config):
  """The passes of the configured mode: (T,) for "one", the ensemble's intervals for "multi"."""
  if protocol_config.mode == "one":
    return (int(protocol_config.interval_length),)
  if protocol_config.mode == "multi":
    return tuple(int(t) for t in protocol_config.ensemble_intervals)
  raise EvalError(f"protocol.mode must be 'one' or 'multi', got {protocol_config.mode!r}")


def _flownet2_flow_fn(colorizer):
  """The checkpoint's FlowNet2 on frames resized up to multiples of 64, flow resized back."""
  if colorizer.model.flow_type != "flownet2":
    raise EvalError("metrics.warp_flow='flownet2' needs a checkpoint with FlowNet2; this one uses "
                    f"the {colorizer.model.flow_type} flow")
  model = colorizer.model

  @jax.jit
  def resized_flow(variables, g1, g2):
    b, h, w, _ = g1.shape
    hh, ww = -(-h // 64) * 64, -(-w // 64) * 64
    up = [jax.image.resize(g, (b, hh, ww, 1), "bilinear", antialias=False) for g in (g1, g2)]
    f = model.apply(variables, *up, method=model.flows)  # [b, hh, ww, 2]
    f = jax.image.resize(f.astype(jnp.float32), (b, h, w, 2), "bilinear", antialias=False)
    return f * jnp.array([w / ww, h / hh], jnp.float32)

  return lambda g1, g2: resized_flow(colorizer.variables, g1, g2)


def make_flow_fn(metrics_config, colorizer):
  """(flow_fn or None, description) for the warping error."""
  if not metrics_config.warp_error:
    return None, None
  if metrics_config.warp_flow == "classical":
    return classical_flow.estimate_flow, CLASSICAL_FLOW_NAME
  if metrics_config.warp_flow == "flownet2":
    return _flownet2_flow_fn(colorizer), "the checkpoint's FlowNet2"
  raise EvalError(f"metrics.warp_flow must be 'classical' or 'flownet2', "
                  f"got {metrics_config.warp_flow!r}")


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


# Everything a run puts into the workdir, summary.json (the mark of a finished run) last. A run with
# overwrite replaces all of them, so no result of an earlier run stays beside the new ones.
RESULT_NAMES = ("config.json", "frames", "videos", "per_clip.csv", "per_frame.csv",
                "psnr_per_frame.png", "cdc_per_gap.png", "summary.json")
# A workdir with one of these holds results: a run without overwrite refuses it.
_HELD_RESULTS = ("summary.json", "per_clip.csv", "frames", "videos")


def _check_workdir(workdir, overwrite):
  """Raises EvalError if the workdir cannot be made or holds results (without overwrite)."""
  path = os.path.abspath(workdir)
  top = atomic.highest_missing(path)
  existing = path if top is None else os.path.dirname(top)
  if existing == path and not os.path.isdir(path):
    raise EvalError(f"workdir {workdir} is a file, not a folder")
  if not os.path.isdir(existing):
    raise EvalError(f"cannot make the workdir {workdir}: {existing} is a file")
  held = [n for n in _HELD_RESULTS if os.path.lexists(os.path.join(path, n))]
  if held:  # only an earlier run's results are results (and overwrite may replace them)
    _check_replaceable(workdir)
  if held and not overwrite:
    raise EvalError(f"{workdir} already holds results ({', '.join(held)}); use another --workdir "
                    "or set --config.overwrite=True")


def _check_replaceable(workdir):
  """Raises EvalError unless the results an overwriting run replaces are an earlier run's."""
  path = os.path.abspath(workdir)
  present = [n for n in RESULT_NAMES if os.path.lexists(os.path.join(path, n))]
  foreign = [n for n in present if not _is_result(os.path.join(path, n), n)]
  if "summary.json" not in present:  # a finished run's mark (written last; a failed run's none)
    foreign = present
  if foreign:  # overwrite replaces every result name: only an earlier run's
    raise EvalError(f"{workdir} holds {', '.join(foreign)} that no eval.py run wrote; overwrite "
                    "replaces only an earlier run's results: use another --workdir")


def _listed(folder):
  """A folder's entries but a file manager's own (.DS_Store, Thumbs.db, desktop.ini)."""
  return [n for n in os.listdir(folder) if n not in atomic.FILE_MANAGER_FILES]


def _is_result(path, name):
  """Whether `path` could be what an eval.py run writes as `name`: frames/ of clip folders of PNGs,
  videos/ of .mp4 files, a summary.json with its keys, a file for the others."""
  files = lambda p, ext: all(n.lower().endswith(ext) and os.path.isfile(os.path.join(p, n))
                             and not os.path.islink(os.path.join(p, n)) for n in _listed(p))
  if name in ("frames", "videos"):
    if not os.path.isdir(path) or os.path.islink(path):
      return False
    if name == "videos":
      return files(path, ".mp4")
    return all(os.path.isdir(os.path.join(path, c)) and not os.path.islink(os.path.join(path, c))
               and files(os.path.join(path, c), ".png") for c in _listed(path))
  if not os.path.isfile(path) or os.path.islink(path):
    return False
  if name != "summary.json":
    return True
  try:
    with open(path, encoding="utf-8") as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(summary, dict) and {"num_clips", "cdc_per_gap"} <= set(summary)


def _check_keeps(workdir, config):
  """Raises EvalError where publishing the results would replace what no eval.py run wrote: a
  config.json without an eval's summary.json (that of a train.py run, when evaluating into its
  folder), the checkpoint or data under one of the results' names, or the test set folder (the
  results would become clips of it)."""
  path = os.path.abspath(workdir)
  if (os.path.lexists(os.path.join(path, "config.json"))
      and not os.path.lexists(os.path.join(path, "summary.json"))):
    raise EvalError(f"{workdir} holds a config.json that no eval.py run wrote (a train.py run's "
                    "folder?); the results' config.json would replace it: use another --workdir, "
                    f"e.g. {os.path.join(workdir, 'eval')}")
  if converted.is_converted_dir(path):  # `convert --overwrite` into it would take the results
    raise EvalError(f"the workdir {workdir} is a converted checkpoint folder: its results would "
                    "lie among the weights; use another --workdir")
  root = config.data.get("root")
  if (config.data.source == "folder" and root and os.path.isdir(root)
      and atomic.is_within(path, root)):
    raise EvalError(f"the workdir {workdir} is inside the test set folder {root}: its results "
                    "would become clips of it; use a --workdir outside it")
  inputs = [("the checkpoint", config.checkpoint)] + [
      (f"the data (data.{key})", config.data.get(key))
      for key in ("root", "manual_dir", "data_dir")]
  for name in RESULT_NAMES:
    try:
      atomic.check_keeps_inputs(os.path.join(path, name), inputs)
    except atomic.OutputIsInputError as e:
      raise EvalError(f"{e} (use another --workdir)") from e


class _Staging(atomic.AtomicOutput):
  """A temporary folder (`tmp`) for the run's results, moved into the workdir once all are there.

  It lies inside the workdir, or beside the workdir's highest missing folder, so that every move
  is a rename. Being a `tcvc_jax.atomic` output, it is removed when the run is interrupted (renamed
  first, so that a file the run still writes cannot keep it); it is never committed as a whole
  (`publish` moves what is in it).
  """

  def __init__(self, workdir):
    self.workdir = os.path.abspath(workdir)
    top = atomic.highest_missing(self.workdir)
    if top is None:
      super().__init__(os.path.join(self.workdir, "eval"), directory=True, overwrite=True)
    else:
      super().__init__(top, directory=True)

  def publish(self, workdir_name, overwrite):
    """Moves the results into the workdir, summary.json last, replacing earlier results.

    A signal waits until it is done (`atomic.commits_held`); on an error, the workdir is put back
    as it was.
    """
    workdir = self.workdir
    top = atomic.highest_missing(workdir)
    aside = self.tmp + ".old"  # the earlier results, deleted once the new ones are in place
    set_aside, moved, summary = [], [], None
    with atomic.commits_held():
      try:
        _check_workdir(workdir_name, overwrite)  # results that came meanwhile
        os.makedirs(workdir, exist_ok=True)
        old = [n for n in RESULT_NAMES if os.path.lexists(os.path.join(workdir, n))]
        if old:
          os.mkdir(aside)
        for name in old:
          os.rename(os.path.join(workdir, name), os.path.join(aside, name))
          set_aside.append(name)
        for name in RESULT_NAMES[:-1]:
          if os.path.lexists(os.path.join(self.tmp, name)):
            os.rename(os.path.join(self.tmp, name), os.path.join(workdir, name))
            moved.append(name)
        summary = atomic.AtomicOutput(os.path.join(workdir, "summary.json"), overwrite=True)
        os.replace(os.path.join(self.tmp, "summary.json"), summary.tmp)
        summary.commit()
      except BaseException:
        if summary is not None:
          summary.discard()
        for name in reversed(moved):
          _try(os.rename, os.path.join(workdir, name), os.path.join(self.tmp, name))
        for name in reversed(set_aside):
          _try(os.rename, os.path.join(aside, name), os.path.join(workdir, name))
        _try(os.rmdir, aside)
        path = workdir
        while top is not None and _try(os.rmdir, path) and path != top:
          path = os.path.dirname(path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _try(fn, *args):
  """fn(*args); False if it raised OSError (undoing what it can after an error)."""
  try:
    fn(*args)
  except OSError:
    return False
  return True


def _measure(clip, out, t, flow_fn, metrics_config, gray_mode):
  if clip.gt is None:  # CDC and the warping error need the outputs only
    res = {k: float("nan") for k in SUMMARY_KEYS + ("psnr_gray",) if k != "cdc"}
    res["cdc_detail"] = metrics.cdc_clip(out)
    if flow_fn is not None and len(out) > 1:
      res["warp_error"] = metrics.warp_error(out, flow_fn,
                                             batch_size=int(metrics_config.warp_batch))
    return res
  res = metrics.clip_metrics(clip.gt, out, t, flow_fn, ssim=bool(metrics_config.ssim),
                             warp_batch=int(metrics_config.warp_batch))
  # The gray baseline, ab = 0 (the lightness alone) as the protocol composes it: what colour adds.
  res["psnr_gray"] = metrics.psnr_clip(clip.gt, _GrayFrames(clip.frames, gray_mode), t).avg
  return res


class _GrayFrames:
  """The gray baseline's frames (ab = 0), made one at a time as they are iterated: the clip's
  lightness in float32 and its gray frames, held whole, took 7 bytes a pixel more."""

  def __init__(self, frames, gray_mode):
    self._frames, self._gray_mode = frames, gray_mode

  def __len__(self):
    return len(self._frames)

  def __iter__(self):
    no_ab = np.zeros((1, 1, 1, 2), np.float32)
    for i in range(len(self._frames)):
      l_full = protocol.frames_to_l(self._frames[i:i + 1], self._gray_mode)
      yield protocol.to_uint8_round(protocol.compose_rgb255(l_full, no_ab))[0]


class _TellsWindows:
  """The model, calling `tell(k)` after its k-th window: a long clip's progress on the bar, which
  counts clips (a 400-frame 1080p clip stood at 0/1 for 25 minutes)."""

  def __init__(self, model, tell):
    self._model, self._tell, self._calls = model, tell, 0

  def __call__(self, gray, **kwargs):
    ab = self._model(gray, **kwargs)
    self._calls += 1
    self._tell(self._calls)
    return ab

  def __getattr__(self, name):  # set_interval, end_pass, ...: the model's
    return getattr(self._model, name)


def _summarize(results, config, flow_desc, seconds):
  summary = metrics.summarize(results)  # NaN (null) where not measured: PSNR, SSIM without gt
  cdc_all = metrics.cdc([r["cdc_detail"] for r in results])
  if cdc_all["clips"] < len(results):
    short = [r["clip"] for r in results if np.isnan(r["cdc_detail"].per_channel).any()]
    logging.warning("CDC is measured on %d of %d clips: %s %s too short for its frame gap of %d",
                    cdc_all["clips"], len(results),
                    ", ".join(short[:5]) + (", ..." if len(short) > 5 else ""),
                    "is" if len(short) == 1 else "are", max(metrics.CDC_GAPS))
  per_gap = {}
  for d in metrics.CDC_GAPS:
    per_gap[d] = {ch: metrics.mean_over_clips([r["cdc_detail"].per_gap[d][k] for r in results])
                  for k, ch in enumerate("rgb")}
  frames = sum(r["frames"] for r in results)
  summary["psnr_gray"] = metrics.mean_over_clips([r["psnr_gray"] for r in results])
  summary.update({
      "warp_error_flow": flow_desc, "cdc_per_channel": {c: cdc_all[f"js_{c}"] for c in "rgb"},
      "cdc_per_gap": per_gap, "cdc_clips": cdc_all["clips"], "no_gt": bool(config.data.no_gt),
      "mode": config.protocol.mode,
      "interval_lengths": list(interval_lengths(config.protocol)),
      "network_size": config.protocol.network_size, "checkpoint": config.checkpoint,
      "num_clips": len(results), "num_frames": frames, "seconds": seconds,
      "frames_per_second": frames / seconds if seconds > 0 else float("nan"),
  })
  return summary


def evaluate(config, workdir, progress=False):
  """Colorizes and measures the test set of `config`; writes everything into `workdir`.

  The results are written into a temporary folder and moved into the workdir at the end (see the
  module docstring): an error or an interrupt leaves the workdir as it was.

  Args:
    config: ConfigDict of configs/eval.py.
    workdir: output folder (created, with its parents, if needed).
    progress: show a progress bar (clips, frames/s) on stderr.

  Returns:
    The summary dict written to summary.json (NaN where a metric was not measured).

  Raises:
    One of INPUT_ERRORS, with a one-line message.
  """
  start = time.perf_counter()
  eval_config.validate_config(config)
  _check_keeps(workdir, config)  # first: it names the data, checkpoint or run the workdir holds
  _check_workdir(workdir, config.overwrite)
  passes = interval_lengths(config.protocol)
  hinted = set(config.hints.modes) - {"auto"}
  clips = clips_lib.iter_clips(config.data)
  colorizer = api.load(config.checkpoint, dtype=eval_config.DTYPES[config.dtype])
  size = int(config.protocol.network_size)
  streaming.check_network_size(colorizer, size)
  flow_fn, flow_desc = make_flow_fn(config.metrics, colorizer)
  staging = _Staging(workdir)
  try:
    out_dir = staging.tmp
    report.write_json(os.path.join(out_dir, "config.json"), config.to_dict())
    model = window_stream.AnchorCarry(colorizer)
    results = []
    bar = tqdm.tqdm(total=len(clips), unit="clip", desc="evaluating", disable=not progress,
                    dynamic_ncols=True, file=sys.stderr)
    frames_done, names = 0, set()
    for clip in clips:
      if clip.name in names:  # their frames and videos would be one
        raise EvalError(f"two clips are named {clip.name}")
      names.add(clip.name)
      t0 = time.perf_counter()
      windows = sum(len(protocol.plan_windows(len(clip.frames), t)) for t in passes)
      told = _TellsWindows(model, lambda k, c=clip.name, n=windows: bar.set_postfix_str(
          f"{c}: window {k} of {n}"))
      out = protocol.colorize_clip(clip.frames, told, passes, size, config.data.gray_mode)
      bar.set_postfix_str(f"{clip.name}: writing and measuring {len(out)} frames")
      report.write_clip_media(out_dir, clip, out, config.outputs)
      res = _measure(clip, out, protocol.psnr_interval(passes), flow_fn, config.metrics,
                     config.data.gray_mode)
      res.update(clip=clip.name, names=clip.names, frames=len(out), height=out.shape[1],
                 width=out.shape[2], seconds=time.perf_counter() - t0)
      logging.info("clip %s: %d frames, PSNR %.3f, %.1f s", clip.name, len(out), res["psnr"],
                   res["seconds"])
      if hinted:
        res["guided"] = guided.run_modes(clip, colorizer, out, config.hints, passes[0], size,
                                         config.data.gray_mode, config.hints.seed + len(results))
      results.append(res)
      frames_done += len(out)
      rate = frames_done / max(time.perf_counter() - start, 1e-9)
      psnr = "" if clip.gt is None else f": PSNR {res['psnr']:.2f} dB"
      bar.set_postfix_str(f"{clip.name}{psnr}; {frames_done} frames in all, {rate:.2f} frames/s")
      bar.update(1)
    bar.close()
    summary = _summarize(results, config, flow_desc, time.perf_counter() - start)
    if hinted and results:
      summary["guided"] = guided.summarize([r["guided"] for r in results])
    report.write_tables(out_dir, results)
    if config.outputs.plots:
      report.write_plots(out_dir, results, summary)
    report.write_json(os.path.join(out_dir, "summary.json"), summary)
    staging.publish(workdir, config.overwrite)
  finally:
    staging.discard()  # what is left in it: everything after an error, nothing after publishing
  return summary
