"""Video colorization metrics: PSNR, CDC, MATLAB-style SSIM and a flow-based warping error.

PSNR, CDC and SSIM follow the original TCVC evaluation code (docs/original.md#evaluation-protocol)
number for number:

* PSNR is computed per frame on uint8 images (float64 MSE over all pixels and channels),
  averaged per clip, then averaged over clips (unweighted). Key frames are the indices in
  `range(0, n, T + 1)` plus the last frame; the rest are inter frames.
* CDC (colour distribution consistency) is the Jensen-Shannon divergence (natural log) between
  the per-channel 256-bin histograms of frames i and i + d, for d in (1, 2, 4) weighted 1/3 each.
  Like the original (cv2 histograms, scipy entropy), histograms and entropies are evaluated in
  float32 and the sums run in float32 in the same order, so the numbers agree with the original's
  to the last bit on the golden clip.
* SSIM is the MATLAB-style one of `utils/util.py`: 11x11 Gaussian (sigma 1.5), C1 = (0.01*255)^2,
  C2 = (0.03*255)^2, valid region only (5 px cropped on each side); for RGB the mean over channels.

The warping error is not in the original; see `warp_error` for the definition used here.
"""

import dataclasses
import math
from typing import Callable
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from tcvc_jax.ops import color
from tcvc_jax.ops import warp

CDC_GAPS = (1, 2, 4)
CDC_WEIGHTS = (1 / 3, 1 / 3, 1 / 3)


# --------------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------------


def psnr(img1, img2):
  """PSNR in dB of two uint8 images (any shape), peak 255; `inf` when they are identical."""
  a = np.asarray(img1, dtype=np.float64)
  b = np.asarray(img2, dtype=np.float64)
  if a.shape != b.shape:
    raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
  mse = np.mean((a - b) ** 2)
  if mse == 0:
    return float("inf")
  return 20 * math.log10(255.0 / math.sqrt(mse))


def key_frame_mask(num_frames, interval_length):
  """Bool [num_frames]: True for the frames the original counts as key frames.

  Args:
    num_frames: clip length n.
    interval_length: T; keyframes are range(0, n, T + 1), and the last frame always counts as key.

  Returns:
    np.ndarray of bool, shape [num_frames].
  """
  mask = np.zeros(num_frames, dtype=bool)
  mask[0:num_frames:interval_length + 1] = True
  if num_frames:
    mask[-1] = True
  return mask


@dataclasses.dataclass(frozen=True)
class ClipPSNR:
  """PSNR of one clip: per frame and the three per-clip means (NaN where a group is empty)."""

  per_frame: np.ndarray  # [n] float64
  is_key: np.ndarray  # [n] bool
  avg: float
  key: float
  inter: float


def psnr_clip(gt_frames, out_frames, interval_length):
  """PSNR of one clip, frames paired by position.

  Args:
    gt_frames: uint8 [n, H, W, C] ground truth.
    out_frames: uint8 [n, H, W, C] colorized frames.
    interval_length: T used for the key/inter split (the first interval in an ensemble).

  Returns:
    ClipPSNR. The original raises ZeroDivisionError for a clip without inter frames (n <= 2); here
    that mean is NaN instead and `mean_over_clips` skips it.
  """
  if len(gt_frames) != len(out_frames):
    raise ValueError(f"clip lengths differ: {len(gt_frames)} vs {len(out_frames)}")
  if not len(gt_frames):
    raise ValueError("empty clip")
  per_frame = np.array([psnr(g, o) for g, o in zip(gt_frames, out_frames, strict=True)],
                       dtype=np.float64)
  is_key = key_frame_mask(len(per_frame), interval_length)
  # Summed frame by frame in Python like the original, so the last bit matches too.
  return ClipPSNR(per_frame=per_frame, is_key=is_key, avg=sum(per_frame.tolist()) / len(per_frame),
                  key=_seq_mean(per_frame[is_key]), inter=_seq_mean(per_frame[~is_key]))


def _seq_mean(values):
  values = values.tolist()
  return sum(values) / len(values) if values else float("nan")


def mean_over_clips(values):
  """Unweighted mean over clips of per-clip values, skipping NaN (value undefined for that clip)."""
  vals = [float(v) for v in values if not math.isnan(float(v))]
  return sum(vals) / len(vals) if vals else float("nan")


# --------------------------------------------------------------------------------------------------
# CDC
# --------------------------------------------------------------------------------------------------


def channel_histograms(frames):
  """Per-channel 256-bin histograms divided by H*W, in float32 like cv2.calcHist / (H*W).

  Args:
    frames: uint8 [n, H, W, C].

  Returns:
    float32 [n, C, 256].
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4:
    raise ValueError(f"expected uint8 [n, H, W, C] frames, got {frames.dtype} {frames.shape}")
  n, h, w, c = frames.shape
  # Frame by frame: the whole clip as int64 took 8 bytes a sample, twice (20 GB each for 400
  # 1080p frames, and eval.py was killed for memory).
  counts = np.array([[np.bincount(frame[..., ch].ravel(), minlength=256) for ch in range(c)]
                     for frame in frames], np.int64).reshape(n, c, 256)
  return counts.astype(np.float32) / np.float32(h * w)


def js_divergence(p, q):
  """Jensen-Shannon divergence (natural log) along the last axis, in the dtype of p and q.

  Each distribution is renormalised to sum 1 first and 0 * log 0 = 0, as scipy.stats.entropy does.
  """
  m = (p + q) / 2
  return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def _kl(p, q):
  p = p / np.sum(p, axis=-1, keepdims=True)
  q = q / np.sum(q, axis=-1, keepdims=True)
  return np.sum(special.rel_entr(p, q), axis=-1)


@dataclasses.dataclass(frozen=True)
class ClipCDC:
  """CDC terms of one clip. Channel order R, G, B (the original reports B, G, R; same values)."""

  per_channel: np.ndarray  # [3] float32: sum_d w_d * mean_i JS(h_c(i), h_c(i + d))
  per_gap: dict  # gap -> float32 [3], mean over pairs at that gap (for plots)


def cdc_clip(frames, gaps=CDC_GAPS, weights=CDC_WEIGHTS):
  """CDC terms of one clip of uint8 RGB frames [n, H, W, 3].

  A gap with no pair (n <= d) gives NaN, as in the original (np.mean of an empty list).
  """
  hists = channel_histograms(frames)
  per_channel = np.zeros(hists.shape[1], dtype=np.float32)
  per_gap = {}
  for d, w in zip(gaps, weights, strict=False):
    if len(hists) > d:
      js = js_divergence(hists[:-d], hists[d:])  # [n - d, C] float32
      # Reduced along a contiguous axis so numpy sums pairwise in float32, as np.mean of the list.
      gap_mean = np.mean(np.ascontiguousarray(js.T), axis=-1)
    else:
      gap_mean = np.full(hists.shape[1], np.nan, dtype=np.float32)
    per_gap[d] = gap_mean
    per_channel = per_channel + np.float32(w) * gap_mean  # accumulated in float32, gap by gap
  return ClipCDC(per_channel=per_channel, per_gap=per_gap)


def cdc(clips_cdc):
  """CDC over clips: mean over channels of the per-channel means over clips.

  Args:
    clips_cdc: sequence of ClipCDC.

  Returns:
    dict with `cdc` (float) and `js_r`, `js_g`, `js_b` (per-channel means over clips), over the
    clips that have a CDC (a clip too short for a gap has none, `cdc_clip`: one such clip made the
    whole dataset's CDC NaN); `clips`: how many those are (NaN values when none).
  """
  kept = [c.per_channel for c in clips_cdc if not np.isnan(c.per_channel).any()]
  if not kept:
    return {"cdc": float("nan"), "js_r": float("nan"), "js_g": float("nan"),
            "js_b": float("nan"), "clips": 0}
  stacked = np.stack(kept, axis=-1)  # [3, clips] float32, R G B
  js = [float(np.mean(stacked[ch])) for ch in range(stacked.shape[0])]
  # The original averages in cv2 channel order B, G, R, in float64.
  value = float(np.mean(np.array(js[::-1], dtype=np.float64)))
  return {"cdc": value, "js_r": js[0], "js_g": js[1], "js_b": js[2], "clips": len(kept)}


# --------------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------------


def _gaussian_1d(size=11, sigma=1.5):
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  k = np.exp(-(x**2) / (2 * sigma**2))
  return k / k.sum()


def _filter_valid(img, k):
  # Separable valid correlation over axes 0 and 1 of [H, W, C]; the original's 2-D cv2.filter2D is
  # the same up to float64 rounding since the outer-product window is separable.
  r = len(k)
  rows = sum(k[i] * img[i:img.shape[0] - r + 1 + i] for i in range(r))
  return sum(k[j] * rows[:, j:rows.shape[1] - r + 1 + j] for j in range(r))


def ssim(img1, img2):
  """MATLAB-style SSIM of two images in [0, 255] ([H, W] or [H, W, C]); mean over channels.

  Raises:
    ValueError: shapes differ or an image is smaller than 11x11.
  """
  a = np.asarray(img1, dtype=np.float64)
  b = np.asarray(img2, dtype=np.float64)
  if a.shape != b.shape:
    raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
  if a.ndim == 2:
    a, b = a[..., None], b[..., None]
  if a.shape[0] < 11 or a.shape[1] < 11:
    raise ValueError(f"SSIM needs images of at least 11x11, got {a.shape[:2]}")
  c1 = (0.01 * 255) ** 2
  c2 = (0.03 * 255) ** 2
  k = _gaussian_1d()
  mu1 = _filter_valid(a, k)
  mu2 = _filter_valid(b, k)
  s11 = _filter_valid(a * a, k) - mu1**2
  s22 = _filter_valid(b * b, k) - mu2**2
  s12 = _filter_valid(a * b, k) - mu1 * mu2
  ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
  return float(ssim_map.mean())


def ssim_clip(gt_frames, out_frames):
  """Mean SSIM over the frames of one clip (frames paired by position)."""
  if len(gt_frames) != len(out_frames) or not len(gt_frames):
    raise ValueError(f"clip lengths differ or are 0: {len(gt_frames)} vs {len(out_frames)}")
  return float(np.mean([ssim(g, o) for g, o in zip(gt_frames, out_frames, strict=True)]))


# --------------------------------------------------------------------------------------------------
# Warping error
# --------------------------------------------------------------------------------------------------

# flow_fn(gray1 [B, H, W, 1], gray2 [B, H, W, 1]) -> flow [B, H, W, 2] from frame 1 to frame 2.
FlowFn = Callable[[jax.Array, jax.Array], jax.Array]


@jax.jit
def occlusion_mask(flow_fw, flow_bw):
  """Forward-backward consistency mask (Sundaram et al. 2010), 1 = reliable, 0 = occluded.

  A pixel p of frame t is reliable if the backward flow at p + F(p) brings it back:
  |F(p) + B(p + F(p))|^2 <= 0.01 (|F(p)|^2 + |B(p + F(p))|^2) + 0.5, and p + F(p) lies inside the
  image (the warp replicates borders, so samples from outside carry no information).

  Args:
    flow_fw: [B, H, W, 2] flow t -> t+1 in pixels.
    flow_bw: [B, H, W, 2] flow t+1 -> t in pixels.

  Returns:
    float32 [B, H, W, 1].
  """
  flow_fw = jnp.asarray(flow_fw, jnp.float32)
  bw_at = warp.backward_warp(jnp.asarray(flow_bw, jnp.float32), flow_fw)
  diff = jnp.sum((flow_fw + bw_at) ** 2, axis=-1)
  bound = 0.01 * (jnp.sum(flow_fw**2, axis=-1) + jnp.sum(bw_at**2, axis=-1)) + 0.5
  _, h, w, _ = flow_fw.shape
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  px = gx + flow_fw[..., 0]
  py = gy + flow_fw[..., 1]
  inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
  return ((diff <= bound) & inside).astype(jnp.float32)[..., None]


@jax.jit
def _gray(rgb):
  return color.rgb_to_lab(rgb)[..., :1]


@jax.jit
def _masked_sq_error(frames, flow, flow_bw):
  """Per pair: (sum of M * ||frame_t - warped frame_t+1||^2, sum of M); M = 1 without flow_bw."""
  img1, img2 = frames[:-1], frames[1:]
  warped = warp.backward_warp(img2, flow)
  if flow_bw is None:
    mask = jnp.ones(img1.shape[:3] + (1,), jnp.float32)
  else:
    mask = occlusion_mask(flow, flow_bw)
  sq = jnp.sum((img1 - warped) ** 2, axis=-1, keepdims=True)
  return jnp.sum(mask * sq, axis=(1, 2, 3)), jnp.sum(mask, axis=(1, 2, 3))


def warp_error(frames, flow_fn: FlowFn, batch_size=8, use_occlusion_mask=True):
  """Flow-based warping error of one clip (Lai et al., ECCV 2018), lower is better.

  For each pair (t, t+1): F = flow_fn(L_t, L_{t+1}) is the flow from frame t to frame t+1
  (frame_t(p) ~ frame_{t+1}(p + F(p))), computed on the normalised L of the frames (the model's
  gray input); frame t+1 is pulled back onto frame t with `ops.warp.backward_warp` (bilinear,
  border-clamped). With M the `occlusion_mask` (from the backward flow flow_fn(L_{t+1}, L_t)) or
  all ones:

    E_t = sum_p M(p) * ||frame_t(p) - warped_{t+1}(p)||^2 / sum_p M(p),

  with RGB in [0, 1] and ||.||^2 summed over the three channels. The clip's error is the mean of E_t
  over the pairs (pairs with an empty mask are skipped). The flow comes from the caller (for TCVC,
  the frozen FlowNet2 of the model); motion boundaries are not masked, unlike Lai et al.

  Args:
    frames: uint8 [n, H, W, 3] RGB (the colorized output).
    flow_fn: callable (gray1 [B, H, W, 1], gray2 [B, H, W, 1]) -> flow [B, H, W, 2] in pixels,
      channel 0 = x.
    batch_size: pairs per flow_fn call.
    use_occlusion_mask: if False every pixel counts, and flow_fn runs once per pair, not twice.

  Returns:
    float; NaN for a clip of fewer than 2 frames.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"expected [n, H, W, 3] frames, got {frames.shape}")
  errors = []
  for s in range(0, len(frames) - 1, batch_size):
    cur = np.asarray(frames[s:s + batch_size + 1], np.float32) / np.float32(255)  # [b+1, H, W, 3]
    gray = _gray(cur)
    g1, g2 = gray[:-1], gray[1:]
    flow = jnp.asarray(flow_fn(g1, g2), jnp.float32)
    if flow.shape != g1.shape[:3] + (2,):
      raise ValueError(f"flow_fn returned {flow.shape}, expected {g1.shape[:3] + (2,)}")
    flow_bw = jnp.asarray(flow_fn(g2, g1), jnp.float32) if use_occlusion_mask else None
    num, den = (np.asarray(v, np.float64) for v in _masked_sq_error(cur, flow, flow_bw))
    errors.extend((num[den > 0] / den[den > 0]).tolist())
  return float(np.mean(errors)) if errors else float("nan")


def clip_metrics(gt_frames, out_frames, interval_length, flow_fn=None, *, ssim=True,
                 warp_batch=8):
  """All metrics of one clip, for `summarize`.

  Args:
    gt_frames: uint8 [n, H, W, 3] ground truth.
    out_frames: uint8 [n, H, W, 3] colorized frames.
    interval_length: T of the key/inter PSNR split.
    flow_fn: flow function for `warp_error`; None gives NaN.
    ssim: measure SSIM (slow on large frames); False gives NaN.
    warp_batch: frame pairs per flow_fn call in `warp_error`.

  Returns:
    dict: psnr, psnr_key, psnr_inter, ssim, warp_error (floats), psnr_detail (ClipPSNR) and
    cdc_detail (ClipCDC; CDC itself is defined over clips, see `cdc`).
  """
  p = psnr_clip(gt_frames, out_frames, interval_length)
  return {
      "psnr": p.avg, "psnr_key": p.key, "psnr_inter": p.inter,
      "ssim": ssim_clip(gt_frames, out_frames) if ssim else float("nan"),
      "warp_error": (warp_error(out_frames, flow_fn, batch_size=warp_batch)
                     if flow_fn is not None else float("nan")),
      "psnr_detail": p, "cdc_detail": cdc_clip(out_frames),
  }


def summarize(clip_results: Sequence[dict]):
  """Dataset summary of `clip_metrics` results: psnr(_key, _inter), cdc, ssim, warp_error."""
  out = {k: mean_over_clips([r[k] for r in clip_results])
         for k in ("psnr", "psnr_key", "psnr_inter", "ssim", "warp_error")}
  out["cdc"] = cdc([r["cdc_detail"] for r in clip_results])["cdc"]
  return out
