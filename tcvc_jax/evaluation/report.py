"""eval.py's outputs: colorized frames and videos, per-clip / per-frame CSV tables, JSON, plots.

Every file is written atomically (`tcvc_jax.atomic`), into the run's temporary folder, which the
evaluator moves into the workdir once the run is complete.
"""

import csv
import io
import json
import math
import os
import warnings

from absl import logging
import numpy as np

from tcvc_jax import atomic
from tcvc_jax.evaluation import metrics
from tcvc_jax.media import writing


def _write_atomic(path, data):
  """Writes bytes or text to `path` atomically (replacing an older result of this workdir)."""
  atomic.write_bytes(path, data.encode() if isinstance(data, str) else data, overwrite=True)


def to_json_value(x):
  """NaN / inf -> None (JSON has neither), numpy scalars -> Python."""
  if isinstance(x, dict):
    return {str(k): to_json_value(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json_value(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(float(x)) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_json(path, obj):
  _write_atomic(path, json.dumps(to_json_value(obj), indent=1, allow_nan=False) + "\n")


def _write_csv(path, header, rows):
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(header)
  for row in rows:
    writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
  _write_atomic(path, buf.getvalue())


def _subfolder(workdir, name):
  """workdir/name, made if missing. Never `workdir` itself: a run's temporary folder that an
  interrupt removed while the run goes on must not come back."""
  path = os.path.join(workdir, name)
  try:
    os.mkdir(path)
  except FileExistsError:
    pass
  return path


def write_clip_media(workdir, clip, out, outputs):
  """frames/<clip>/ and videos/<clip>.mp4 of a clip, as `outputs` asks (neither may exist yet)."""
  if outputs.frames:
    _subfolder(workdir, "frames")
    with writing.open_writer(os.path.join(workdir, "frames", clip.name), names=clip.names) as w:
      for frame in out:
        w.write(frame)
  if outputs.videos:
    _subfolder(workdir, "videos")
    with writing.open_writer(os.path.join(workdir, "videos", clip.name + ".mp4"),
                              fps=clip.fps or outputs.fps) as w:
      for frame in out:
        w.write(frame)


_CLIP_HEADER = ("clip", "frames", "height", "width", "psnr", "psnr_key", "psnr_inter", "ssim",
                "warp_error", "cdc", "js_r", "js_g", "js_b", "cdc_gap1", "cdc_gap2", "cdc_gap4",
                "psnr_gray", "seconds")


def _clip_row(r):
  c = r["cdc_detail"]
  gaps = [float(np.mean(c.per_gap[d])) for d in metrics.CDC_GAPS]
  return ([r["clip"], r["frames"], r["height"], r["width"]]
          + [r[k] for k in ("psnr", "psnr_key", "psnr_inter", "ssim", "warp_error")]
          + [float(np.mean(c.per_channel))] + [float(v) for v in c.per_channel] + gaps
          + [r["psnr_gray"], round(r["seconds"], 3)])


def write_tables(workdir, results):
  _write_csv(os.path.join(workdir, "per_clip.csv"), _CLIP_HEADER, [_clip_row(r) for r in results])
  rows = []
  for r in results:
    p = r.get("psnr_detail")
    for i, name in enumerate(r["names"]):
      rows.append([r["clip"], i, name, p.per_frame[i] if p else float("nan"),
                   int(p.is_key[i]) if p else ""])
  _write_csv(os.path.join(workdir, "per_frame.csv"), ("clip", "index", "file", "psnr", "key"), rows)


def _save_figure(fig, path):
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  _write_atomic(path, buf.getvalue())


def write_plots(workdir, results, summary):
  """psnr_per_frame.png (with ground truth) and cdc_per_gap.png, with matplotlib's Agg canvas.

  Clip names in scripts its font lacks (CJK...) are drawn as boxes, without matplotlib's warning
  per missing glyph (printed with its source lines, several per clip)."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")
    _write_plots(workdir, results, summary)


def _write_plots(workdir, results, summary):
  try:
    from matplotlib import figure  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning("matplotlib is not installed; no plots written")
    return
  if not summary["no_gt"]:
    fig = figure.Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    for r in results:
      p = r["psnr_detail"]
      line, = ax.plot(p.per_frame, label=r["clip"], linewidth=1)
      ax.plot(np.flatnonzero(p.is_key), p.per_frame[p.is_key], "o", color=line.get_color(), ms=3)
    ax.set(xlabel="frame (dots: key frames)", ylabel="PSNR (dB)",
           title=f"PSNR per frame; mean over clips {summary['psnr']:.2f} dB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=max(1, len(results) // 12))
    fig.tight_layout()
    _save_figure(fig, os.path.join(workdir, "psnr_per_frame.png"))
  fig = figure.Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  gaps = list(metrics.CDC_GAPS)
  for k, ch in enumerate("RGB"):
    vals = [summary["cdc_per_gap"][d][ch.lower()] for d in gaps]
    ax.bar(np.arange(len(gaps)) + (k - 1) * 0.27, vals, 0.27, label=ch, color="rgb"[k], alpha=0.7)
  ax.set_xticks(np.arange(len(gaps)), [f"gap {d}" for d in gaps])
  cdc = summary["cdc"]
  ax.set(ylabel="Jensen-Shannon divergence", title=f"CDC per frame gap; CDC {cdc:.5f}" if cdc == cdc
         else f"CDC not measured: every clip is shorter than {max(gaps) + 1} frames")
  ax.legend()
  fig.tight_layout()
  _save_figure(fig, os.path.join(workdir, "cdc_per_gap.png"))
