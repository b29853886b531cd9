"""eval.py's hinted modes: ground-truth hints at keyframes, measured next to the automatic run.

Modes (config `hints.modes`):
  * "auto": no hints, the original protocol (the evaluator's main run).
  * "reference": a dense reference, the ground-truth colour of the first frame of each shot (shots
    from the scene-cut detector), carried through the shot by tcvc_jax.carrying.
  * "clicks": K random clicks per anchor (ground-truth ab averaged over a patch x patch square).
Hinted modes run the streaming one-sampling path (`streaming.colorize_frames`) with scene cuts,
since hints are carried within shots; so does the row "auto_cuts", without hints: the hints' own
gain is theirs over "auto_cuts" (windows that stop at a cut score differently from the protocol's,
which runs through it). "Far" frames are those more than T + 1 frames from every reference frame:
they get colour only through hints carried to other anchors.
"""

import numpy as np

from tcvc_jax import guidance
from tcvc_jax import streaming
from tcvc_jax.evaluation import metrics
from tcvc_jax.evaluation import scene_cuts
from tcvc_jax.evaluation import windows
from tcvc_jax.ops import color

MODES = ("auto", "reference", "clicks")


def detect_cuts(frames):
  """Shot starts of a clip (uint8 [n, H, W, 3]) by the scene-cut detector."""
  detector = scene_cuts.CutDetector()
  return [i for i, f in enumerate(frames) if detector(i, f) and i > 0]


def click_hints(gt, anchors, size, count, patch, rng):
  """{anchor: FrameHint at `size`}: `count` random clicks with the ground truth's patch-mean ab
  ({} for none: the anchors stay anchors of the plan without hints)."""
  h, w = size
  out = {}
  for a in anchors if count > 0 else ():
    _, ab = color.rgb_to_gray_ab(gt[a], np)
    ab = guidance.resize_hint(guidance.FrameHint(ab, np.ones(ab.shape[:2] + (1,), np.float32)),
                              h, w).ab
    hint_ab = np.zeros((h, w, 2), np.float32)
    mask = np.zeros((h, w, 1), np.float32)
    r = patch // 2
    for _ in range(count):
      y, x = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
      hint_ab[y - r:y + r + 1, x - r:x + r + 1] = ab[y - r:y + r + 1, x - r:x + r + 1].mean((0, 1))
      mask[y - r:y + r + 1, x - r:x + r + 1] = 1.0
    out[a] = guidance.FrameHint(hint_ab, mask)
  return out


def user_hints(mode, gt, cuts, interval, size, config, rng):
  """The simulated user's hints of a hinted mode."""
  if mode == "reference":
    return {s: guidance.reference_hint(gt[s]) for s in [0] + list(cuts)}
  if mode == "clicks":
    plan = windows.plan_windows(len(gt), interval, cuts)
    anchors = sorted({w.start for w in plan} | {w.stop - 1 for w in plan})
    return click_hints(gt, anchors, size, int(config.clicks_per_anchor),
                       int(config.click_patch), rng)
  raise ValueError(f"unknown hint mode {mode!r}; use one of {', '.join(MODES)}")


def far_frames(n, hinted, interval):
  """Frames more than T + 1 frames from every hinted frame."""
  hinted = np.asarray(sorted(hinted))
  return [t for t in range(n) if len(hinted) == 0 or np.abs(hinted - t).min() > interval + 1]


def run_modes(clip, colorizer, auto_out, config, interval, size, gray_mode, seed):
  """{mode: {psnr, psnr_far, cdc_detail, ssim, far_frames}} for every configured mode."""
  gt = clip.gt
  cuts = detect_cuts(gt)
  rng = np.random.default_rng(seed)
  hinted_sets = {}
  outputs = {"auto": auto_out}
  for mode in ("auto_cuts",) + tuple(m for m in config.modes if m != "auto"):
    hints = None
    if mode == "auto_cuts" and not cuts:  # the same windows as the protocol's: its run
      outputs[mode] = auto_out
      continue
    if mode != "auto_cuts":
      hints = user_hints(mode, gt, cuts, interval, windows.size2(size), config, rng)
      hinted_sets[mode] = set(hints)
    outputs[mode] = np.stack(list(streaming.colorize_frames(
        list(clip.frames), colorizer, interval, size, list(cuts), gray_mode, hints=hints)))
  far_ref = far_frames(len(gt), hinted_sets.get("reference", [0] + cuts), interval)
  results = {}
  for mode, out in outputs.items():
    p = metrics.psnr_clip(gt, out, interval)
    far = far_ref
    results[mode] = {
        "psnr": p.avg, "ssim": metrics.ssim_clip(gt, out), "cdc_detail": metrics.cdc_clip(out),
        "psnr_far": float(np.mean(p.per_frame[far])) if far else float("nan"),
        "far_frames": len(far)}
  return results


def summarize(per_clip):
  """Mean over clips per mode; CDC as the protocol defines it over clips."""
  out = {}
  for mode in per_clip[0]:
    rows = [r[mode] for r in per_clip]
    out[mode] = {k: metrics.mean_over_clips([r[k] for r in rows])
                 for k in ("psnr", "psnr_far", "ssim")}
    out[mode]["cdc"] = metrics.cdc([r["cdc_detail"] for r in rows])["cdc"]
    out[mode]["far_frames"] = int(sum(r["far_frames"] for r in rows))
  return out


def table(summary):
  """The modes side by side, for the terminal."""
  lines = [f"{'mode':10s} {'PSNR':>8s} {'PSNR far':>9s} {'SSIM':>7s} {'CDC':>9s}"]
  def cell(value, width, digits):  # NaN: nothing measured (no frame far enough, no CDC gap)
    return f"{'-':>{width}s}" if np.isnan(value) else f"{value:{width}.{digits}f}"

  for mode, r in summary.items():
    lines.append(f"{mode:10s} {cell(r['psnr'], 8, 3)} {cell(r['psnr_far'], 9, 3)} "
                 f"{cell(r['ssim'], 7, 4)} {cell(r['cdc'], 9, 6)}")
  return "\n".join(lines)
