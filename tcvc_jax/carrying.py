"""Carrying a user's colour hints (tcvc_jax/guidance.py) from anchor to anchor of one shot.

The carrying rule (`carry`): the hint field of anchor A is pulled onto the next anchor B of the shot
(the two ends of one window) along the model's own optical flow (FlowNet2, or the classical flow),
*composed frame by frame* through the window (`window_flows`, `compose_flows`): the flows between
consecutive frames are small and reliable where one flow across the whole window is not (synthetic
validation clips, the demo's classical flow, frame 0 -> 5, the rule below: one flow kept 64 % of the
moving objects' pixels, 4.3 % of the kept ones off by > 0.1 in ab; the composed flows 93 %, 2.7 %).
A pixel is kept only where the warp is reliable:
  * it comes from inside frame A, from hinted pixels (its four bilinear neighbours all hinted);
  * photometric consistency: |L_B - warp(L_A)| <= 2.5 L* + 1.0 x the local lightness gradient
    (L* per pixel, the larger of the two frames'), so that a sub-pixel misalignment of a fine
    texture is not taken for an occlusion (TCVC's own occlusion weight exp(-50 dL^2) > 0.97 is the
    2.5 L* part alone; it rejected ~40 % of correctly warped pixels on textured objects);
  * forward-backward consistency of the composed flows: |F_BA + warp(F_AB, F_BA)| <= 2 px + 10 %
    of the flows' magnitude (the standard test for occlusions and flow failures).
The rule was chosen on the synthetic *validation* clips (synthetic_clips/painted, demo model,
interval 4) and measured on the test clips (README, "Guided colorization"): on validation the
far-frame PSNR was 26.46 dB with one flow per window and the old rule (photometric 2.5 L*, FB
0.25 px + 5 %), 27.42 composed with the old rule, 28.94 composed with the gradient term and
FB 1 px + 10 %, 29.11 with FB 2 px + 10 %, and flat beyond (no FB check at all: 29.08).
Guided runs pay for it in the first pass: the flows between consecutive frames of every window up
to the end of the last hinted shot, twice (both directions); the composed flows of hinted shots
are kept (2 flows per window at the network size).
An anchor's own user hints win where they are set; elsewhere it takes the carried hints of the
nearest hinted anchor in time (forward or backward, ties going to the earlier one), and where those
are not set, the carried hints of the other direction (a click on a later frame, a few pixels, took
the place of a reference carried from an earlier one, and the colours flickered).
"""

import numpy as np

from tcvc_jax import guidance

PHOTOMETRIC_DL, PHOTOMETRIC_GRAD = 2.5, 1.0  # L* units; x the local L* gradient per pixel
FB_ABS, FB_REL = 2.0, 0.1
FLOW_CHUNK = 8  # frame pairs per flow call in `window_flows` (one compiled shape)


def _warp(x, flow):
  from tcvc_jax.ops.warp import backward_warp  # pylint: disable=g-import-not-at-top
  return np.asarray(backward_warp(np.asarray(x, np.float32)[None],
                                  np.asarray(flow, np.float32)[None]))[0]


def compose_flows(flows):
  """The flow across consecutive flows: [f_01, f_12, ...] ([h, w, 2] each) -> F_0n [h, w, 2].

  f_t,t+1 maps frame t to frame t+1 (frame_t(p) ~ frame_t+1(p + f(p))); so does the result, from
  frame 0 to the last: F_0,t+1(p) = F_0t(p) + f_t,t+1(p + F_0t(p)), bilinear and border-clamped as
  TCVC warps.
  """
  total = np.asarray(flows[0], np.float32)
  for f in flows[1:]:
    total = total + _warp(f, total)
  return total


def window_flows(l_frames, flow_fn, chunk=FLOW_CHUNK):
  """Composed flows between the two ends of a window, through every frame of it.

  Args:
    l_frames: normalised L [n, h, w, 1] of the window's frames, n >= 2.
    flow_fn: `(a [B, h, w, 1], b) -> [B, h, w, 2]`, the flow from a to b in pixels (a(p) ~
      b(p + F(p))), e.g. `api.Colorizer.flow`; called on `chunk` pairs at a time (the last chunk
      padded), so one shape is compiled.

  Returns:
    (F_last->first, F_first->last), each [h, w, 2].
  """
  l_frames = np.asarray(l_frames, np.float32)
  n = len(l_frames)
  a = np.concatenate([l_frames[1:], l_frames[:-1]])  # (t+1 -> t) for t < n-1, then (t -> t+1)
  b = np.concatenate([l_frames[:-1], l_frames[1:]])
  out = []
  for k in range(0, len(a), chunk):
    pad = max(k + chunk - len(a), 0)
    fa, fb = a[k:k + chunk], b[k:k + chunk]
    if pad:
      fa = np.concatenate([fa, np.repeat(fa[-1:], pad, 0)])
      fb = np.concatenate([fb, np.repeat(fb[-1:], pad, 0)])
    out.append(np.asarray(flow_fn(fa, fb), np.float32)[:chunk - pad])
  flows = np.concatenate(out)
  backward = [flows[t] for t in range(n - 2, -1, -1)]  # f_{n-1,n-2}, ..., f_{1,0}
  forward = [flows[n - 1 + t] for t in range(n - 1)]  # f_{0,1}, ..., f_{n-2,n-1}
  return compose_flows(backward), compose_flows(forward)


class ShotFlows:
  """The composed flows (`window_flows`) of the windows of hinted shots, gathered in one pass.

  Windows arrive in order (`start_shot` before the first window of each shot). A window's flows are
  computed when its shot already has a hint or a hinted frame lies at or after its start (it may
  still join a hinted shot), and dropped when its shot ends without a hint. Call with `(a, b)`,
  the ends of a kept window, for `anchor_hints`.
  """

  def __init__(self, hinted_frames, flow_fn):
    self._hinted_frames = sorted(hinted_frames)
    self._flow_fn = flow_fn
    self._flows, self._shot_windows, self._shot_hinted = {}, [], False

  def start_shot(self):
    if not self._shot_hinted:
      for key in self._shot_windows:
        del self._flows[key]
    self._shot_windows, self._shot_hinted = [], False

  def wanted(self, start, stop):
    """Whether the window [start, stop) needs its flows; notes whether it holds a hinted frame."""
    self._shot_hinted |= any(start <= f < stop for f in self._hinted_frames)
    later = bool(self._hinted_frames) and self._hinted_frames[-1] >= start
    return stop - start >= 2 and (self._shot_hinted or later)

  def add(self, start, l_frames):
    """Computes the flows of the window starting at `start` from its L frames [n, h, w, 1]."""
    key = (start, start + len(l_frames) - 1)
    self._flows[key] = window_flows(l_frames, self._flow_fn)
    self._shot_windows.append(key)

  def __call__(self, a, b):
    return self._flows[(a, b)]


def _gradient(x):
  """Central-difference gradient magnitude of x [h, w, 1] (0 on the border)."""
  gy, gx = np.zeros_like(x), np.zeros_like(x)
  gy[1:-1] = (x[2:] - x[:-2]) / 2
  gx[:, 1:-1] = (x[:, 2:] - x[:, :-2]) / 2
  return np.sqrt(gx * gx + gy * gy)


def carry(hint: guidance.FrameHint, l_src, l_dst, f_ds, f_sd) -> guidance.FrameHint:
  """Pulls `hint` (on the frame of normalised L `l_src` [h, w, 1]) onto the frame `l_dst`.

  `f_ds` [h, w, 2] is the flow from the destination frame to the source (dst(p) ~ src(p + f_ds(p))),
  `f_sd` the flow back, both in pixels (e.g. `window_flows`). See the module docstring for the rule.
  """
  src, dst = np.asarray(l_src, np.float32), np.asarray(l_dst, np.float32)
  f_ds, f_sd = np.asarray(f_ds, np.float32), np.asarray(f_sd, np.float32)
  ab = _warp(hint.ab, f_ds)
  covered = _warp(hint.mask, f_ds) > 0.999
  warped = _warp(src, f_ds)
  # In L* units (normalised L x 100).
  gradient = np.maximum(_gradient(warped), _gradient(dst)) * 100
  photometric = np.abs(dst - warped) * 100 <= PHOTOMETRIC_DL + PHOTOMETRIC_GRAD * gradient
  back = _warp(f_sd, f_ds)
  error = np.linalg.norm(f_ds + back, axis=-1, keepdims=True)
  size = (np.linalg.norm(f_ds, axis=-1, keepdims=True)
          + np.linalg.norm(back, axis=-1, keepdims=True))
  consistent = error <= FB_ABS + FB_REL * size
  hh, ww = dst.shape[:2]
  ys, xs = np.mgrid[0:hh, 0:ww].astype(np.float32)
  px, py = xs + f_ds[..., 0], ys + f_ds[..., 1]
  inside = ((px >= 0) & (px <= ww - 1) & (py >= 0) & (py <= hh - 1))[..., None]
  keep = (covered & photometric & consistent & inside).astype(np.float32)
  return guidance.FrameHint((ab * keep).astype(np.float32), keep)


def anchor_hints(anchors, user, l_of, flows):
  """Hints of every anchor of one shot.

  Args:
    anchors: the shot's anchor frame indices, in order.
    user: {frame: FrameHint at the network size} of the user's hints (frames of this shot).
    l_of: frame index -> normalised L [h, w, 1] at the network size.
    flows: `(a, b) -> (F_b->a, F_a->b)` for consecutive anchors a < b (the ends of one window),
      e.g. from `window_flows`.

  Returns:
    {anchor: FrameHint} for the anchors that get hints.
  """
  anchors = sorted(anchors)
  sweeps = {}  # direction -> {anchor: (carried FrameHint, frames to its nearest keyframe)}
  for direction in (1, -1):
    order = anchors if direction == 1 else anchors[::-1]
    current, source, keyframe, sweep = None, None, None, {}
    for a in order:
      if current is not None:
        f_back, f_fwd = flows(min(source, a), max(source, a))
        f_ds, f_sd = (f_back, f_fwd) if a > source else (f_fwd, f_back)
        current = carry(current, l_of(source), l_of(a), f_ds, f_sd)
      current = guidance.merge(user.get(a), current)
      keyframe = a if a in user else keyframe
      source = a
      if current is not None:
        sweep[a] = (current, abs(a - keyframe))
    sweeps[direction] = sweep
  out = {}
  for a in anchors:
    # The nearer keyframe's hints first (ties: the earlier), the other's where it has none: a
    # click on a later frame must not wipe out a reference carried from an earlier one.
    found = sorted((sweeps[d][a][1], i, sweeps[d][a][0])
                   for i, d in enumerate((1, -1)) if a in sweeps[d])
    if found:
      out[a] = found[0][2] if len(found) == 1 else guidance.merge(found[0][2], found[1][2])
  return out
