"""TCVC (Liu et al. 2021) as TCVC_IDC: anchor colorization + bidirectional deep feature propagation.

Layout: a window is gray [B, N, H, W, 1] of normalised L; frames 0 and N-1 are the anchors.
Everything that does not depend on the recurrence (all optical flows, the L features, the channel
reduction of the backward features) is computed once, batched over time; only the warps and the
small nets run inside `scan`s.

Flow pairs (F(a, b) = flow from frame a to frame b, frozen, under stop_gradient):
  backward propagation  F(x_i, x_{i+1}),  i = 1..N-2
  t=1 pairs phi_i       F(x_{i+1}, x_i),  i = 0..N-2  (forward propagation at step i uses phi_{i-1})
  t=2 pairs psi_i       F(x_{i+2}, x_i),  i = 0..N-3  (only with `srl=True`)
Inference evaluates the flow net 2(N-2) times per window, training with SRL 3N-5 times; the
original 4N-7.
"""

import functools
from typing import Any
from typing import Sequence

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax.models.flownet2 import FlowNet2
from tcvc_jax.models.flownet2 import flow_from_gray
from tcvc_jax.models.flownet2 import mirrored_chunk_order
from tcvc_jax.models.layers import TorchSequential
from tcvc_jax.models.layers import activation_dtype
from tcvc_jax.models.siggraph17 import DEFAULT_WIDTHS
from tcvc_jax.models.siggraph17 import SIGGRAPH17
from tcvc_jax.ops.warp import backward_warp

MASK_SCALE = 50.0  # occlusion mask exp(-50 (dL)^2) on normalised L


def _mask(target, warped):
  """Soft non-occlusion weight, [.., 1]: high where warping is photometrically consistent."""
  return jnp.exp(-MASK_SCALE * jnp.sum((target - warped) ** 2, axis=-1, keepdims=True))


def _repeat_last(x, length):
  """[B, N, ...] with frames t >= length replaced by frame length-1."""
  last = jax.lax.dynamic_index_in_dim(x, length - 1, axis=1, keepdims=True)
  valid = (jnp.arange(x.shape[1]) < length).reshape((1, -1) + (1,) * (x.ndim - 2))
  return jnp.where(valid, x, last)


def _zero_from(flow, start):
  """[B, T, H, W, 2] flows with pairs t >= start set to exactly zero."""
  if flow is None:
    return None
  valid = (jnp.arange(flow.shape[1]) < start).reshape((1, -1, 1, 1, 1))
  return jnp.where(valid, flow, jnp.zeros((), flow.dtype))


def _fold(x):
  """[B, T, ...] -> [B * T, ...]."""
  return x.reshape((-1,) + x.shape[2:])


def _unfold(x, b):
  """[B * T, ...] -> [B, T, ...]."""
  return x.reshape((b, -1) + x.shape[1:])


def _check_hints(gray_shape, hint_ab, hint_mask):
  """Hints must be [B, N, H, W, 2] (ab) and [B, N, H, W, 1] (mask), with gray's B, N, H, W."""
  for name, h, c in (("hint_ab", hint_ab, 2), ("hint_mask", hint_mask, 1)):
    want = tuple(gray_shape[:4]) + (c,)
    if h is not None and tuple(h.shape) != want:
      raise ValueError(f"{name} must have shape {want} (gray's [B, N, H, W], {c} channels), "
                       f"got {tuple(h.shape)}")


class TCVC(nn.Module):
  """TCVC_IDC.

  Parameter paths equal the original state_dict keys (`weigting` is the original's spelling).

  Attributes:
    colorizer_widths: SIGGRAPH17 block widths; the last is the propagated feature size (128).
    l_features: L_fea_extractor width (32).
    reduced_features: channel_reduction width (64).
    weighting_hidden: the two hidden widths of the weighting net (196, 64).
    refine_hidden: the two hidden widths of the refine net (196, 128).
    flow_type: 'flownet2' or 'classical' (a parameter-free estimator, for running without FlowNet2
      weights).
    classical_flow: keyword arguments of the classical estimator.
    unroll: time steps per iteration of the propagation scans (XLA's cost analysis counts a loop
      body once, so benchmarks unroll fully to count FLOPs).
    flow_batch: flow pairs per FlowNet2 evaluation; the window's pairs run in a sequential map over
      chunks of this size (0: all in one batch; -1, the default: 2 on CPU, where XLA's convolutions
      are ~20 % faster at small batch and the flow net's activation memory stays bounded, and 0 on
      GPU / TPU). Results are identical.
    dtype: float32 (the original's numerics), float64, or bfloat16: the colorizer and the small nets
      multiply in bf16 and accumulate in fp32, with fp32 activations; FlowNet2, warps and masks
      stay fp32.
  """
  colorizer_widths: Sequence[int] = DEFAULT_WIDTHS
  l_features: int = 32
  reduced_features: int = 64
  weighting_hidden: Sequence[int] = (196, 64)
  refine_hidden: Sequence[int] = (196, 128)
  flow_type: str = "flownet2"
  classical_flow: Any = None
  unroll: int = 1
  flow_batch: int = -1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    seq = functools.partial(TorchSequential, **kw)
    feat = self.colorizer_widths[-1]
    lf, rf = self.l_features, self.reduced_features
    self.L_fea_extractor = seq((("conv", "0", lf, 3, 1, 1, 1), ("lrelu", 0.1),
                                ("conv", "2", lf, 3, 1, 1, 1)))
    self.channel_reduction = seq((("conv", "conv1", rf, 1, 1, 0, 1), ("lrelu", 0.1),
                                  ("conv", "conv2", rf, 3, 1, 1, 1), ("lrelu", 0.1),
                                  ("conv", "conv3", rf, 1, 1, 0, 1)))
    wh, rh = self.weighting_hidden, self.refine_hidden
    # The weighting net's input, in its kernel's channel order [e_prev, e_cur, e_next, h_i, g_w], is
    # laid out as [e_prev, e_cur, e_next, g_w, h_i]: the input gradient then runs in two groups,
    # and the one of h_i (the frozen colorizer's propagated feature: no gradient needed by default)
    # is dropped by XLA, a third of that convolution's input gradient (see _cell).
    e3w = 3 * lf
    order = {"in_order": ((0, e3w), (e3w + feat, e3w + 2 * feat), (e3w, e3w + feat)),
             "grad_groups": (e3w + feat, feat)}
    self.weigting = seq((("conv", "conv1", wh[0], 3, 1, 1, 1, order), ("lrelu", 0.1),
                         ("conv", "conv2", wh[1], 3, 1, 1, 1), ("lrelu", 0.1),
                         ("conv", "conv3", 1, 3, 1, 1, 1)))
    self.feature_refine = seq((("conv", "conv1", rh[0], 3, 1, 1, 1), ("lrelu", 0.1),
                               ("conv", "conv2", rh[1], 3, 1, 1, 1), ("lrelu", 0.1),
                               ("conv", "conv3", feat, 3, 1, 1, 1)))
    self.fea_key = SIGGRAPH17(widths=tuple(self.colorizer_widths), **kw)
    if self.flow_type == "flownet2":
      self.flow = FlowNet2(**dict(kw, dtype=self.act_dtype))  # flows stay fp32 in bf16 mode
    elif self.flow_type == "classical":
      from tcvc_jax.models.classical_flow import ClassicalFlow  # pylint: disable=g-import-not-at-top
      self.flow = ClassicalFlow(**dict(self.classical_flow or {}))
    else:
      raise ValueError(f"flow_type must be 'flownet2' or 'classical', got {self.flow_type!r}")

  @property
  def act_dtype(self):
    """dtype of activations, flows and outputs: fp32 in bf16 mode, else `dtype`."""
    return activation_dtype(self.dtype)

  def flows(self, img1, img2, mirrored=None):
    """Frozen optical flow between normalised-L frames [M, H, W, 1] -> [M, H, W, 2].

    No gradient flows through it. mirrored: optional traced bool, see FlowNet2 (other flow nets
    ignore it).
    """
    if self.flow_type == "flownet2":
      f = flow_from_gray(self.flow, img1, img2, mirrored=mirrored)
    elif self.is_initializing():  # the classical estimator has no parameters: skip its work at init
      f = jnp.zeros(img1.shape[:3] + (2,), self.act_dtype)
    else:
      f = self.flow(img1, img2).astype(self.act_dtype)
    return jax.lax.stop_gradient(f)

  def _cell(self, g_prev, xs):
    """One forward-propagation step i: returns (g_i, ab_i)."""
    e_prev, e_cur, e_next, h_cur, cr_h_next, flow = xs
    gw = backward_warp(g_prev, flow)  # g_{i-1} aligned to frame i
    e3 = [e_prev, e_cur, e_next]
    w = nn.sigmoid(self.weigting(jnp.concatenate(e3 + [gw, h_cur], axis=-1)))  # see setup
    u = w * gw + (1 - w) * h_cur
    cr = self.channel_reduction
    # The original detaches exactly the three channel_reduction inputs (h_{i+1} was reduced
    # outside).
    r = self.feature_refine(jnp.concatenate(
        e3 + [cr_h_next, cr(jax.lax.stop_gradient(g_prev)), cr(jax.lax.stop_gradient(u))], axis=-1))
    g = u + r
    return g, self.fea_key.head(g)

  def __call__(self, gray, srl=False, first_anchor=None, hint_ab=None, hint_mask=None,
               length=None, use_first_anchor=None):
    """Colorizes windows.

    Args:
      gray: [B, N, H, W, 1] normalised L, N >= 2; H, W multiples of 64 with FlowNet2 (8 otherwise).
      srl: also return the self-regularization terms (training).
      first_anchor: optional (ab [B, H, W, 2], feature [B, H, W, C]) of frame 0, e.g. the previous
        window's `last_anchor` when windows share their boundary frame (the original's optional
        `first_key_HR` / `first_key_fea`); the colorizer then runs on the last frame only. Identical
        results.
      hint_ab: optional [B, N, H, W, 2] user colour hints per frame, normalised ab, 0 where
        hint_mask is 0 (see SIGGRAPH17). Only the anchors' hints are used (frames 0 and N-1, the
        colorizer's inputs): internal frames get colour by propagation only, so their hints are
        ignored, and so are frame 0's with `first_anchor` (that state already holds the hints
        frame 0 was colorized with). None: zeros.
      hint_mask: optional [B, N, H, W, 1], 1 where a hint is given; used like hint_ab. None: zeros.
        Without hints (or with zero hints) the outputs are those of the plain model.
      length: optional int (traced) 2 <= length <= N: the window is frames 0 .. length-1, padded
        to N, so that windows of every length run one compiled program. Frames from `length` on
        are replaced by frame length-1 and every flow pair that touches them by zero flow (an exact
        identity warp), so frames 0 .. length-1 of the output are computed as in the unpadded
        window (to the last bit of XLA's convolutions batched over frames, whose rounding may
        depend on the batch size: 1 ulp seen); frames from length-1 on hold the last anchor's ab.
        Inference only (not srl).
      use_first_anchor: optional traced bool, with `first_anchor` given: use it (True) or colorize
        frame 0 afresh (False), in one compiled program; the results equal those of passing
        first_anchor or None.

    Returns:
      dict with 'ab' [B, N, H, W, 2] (the original's `out`), 'last_anchor' (ab, feature) of frame
      N-1 and, if srl, 'ab_warp1' [B, N-1, H, W, 2], 'mask1' [B, N-1, H, W, 1],
      'ab_warp2' [B, N-2, H, W, 2], 'mask2' [B, N-2, H, W, 1] (the t=2 pair is None for N = 2),
      ordered as the original's ab_fwarp / non_mask_fwarp stacks.
    """
    b, n = gray.shape[:2]
    if n < 2:
      raise ValueError(f"a window needs at least 2 frames (the two anchors), got {n}")
    gray = gray.astype(self.act_dtype)
    _check_hints(gray.shape, hint_ab, hint_mask)
    if length is not None:
      if srl:
        raise ValueError("length (padded windows) is for inference; srl needs the real window")
      gray, hint_ab, hint_mask = (None if x is None else _repeat_last(x, length)
                                  for x in (gray, hint_ab, hint_mask))
    # Anchors: the colorizer on frame 0 and on frame N-1, one call each as in the original (so a
    # frame's anchor state does not depend on which other frame shares its batch).
    frame = lambda x, t: None if x is None else x[:, t]
    anchor = lambda t: self.fea_key(gray[:, t], hint_ab=frame(hint_ab, t),
                                    hint_mask=frame(hint_mask, t))
    ab_last, h_last = anchor(-1)
    if first_anchor is None:
      ab_first, g0 = anchor(0)
    elif use_first_anchor is None:
      ab_first, g0 = (a.astype(self.act_dtype) for a in first_anchor)
    else:
      ab_first, g0 = (jnp.where(use_first_anchor, a.astype(self.act_dtype), c)
                      for a, c in zip(first_anchor, anchor(0), strict=True))

    if n == 2 and self.is_initializing():
      self(jnp.concatenate([gray[:, :1], gray], axis=1))  # create the small nets' params too

    m = n - 2  # internal frames
    # Every flow pair of the window in one batched call: backward (m), phi (m, or N-1 with SRL),
    # psi (m).
    pairs = {"backward": (range(1, n - 1), range(2, n))}
    if srl:
      pairs["phi"] = (range(1, n), range(n - 1))
      pairs["psi"] = (range(2, n), range(n - 2))
    else:
      pairs["phi"] = (range(1, n - 1), range(n - 2))
    flows = self._batched_flows(gray, pairs)
    if length is not None:
      # backward pair i-1 is (x_i, x_{i+1}), phi pair i-1 is (x_i, x_{i-1}), i = 1 .. N-2.
      flows["backward"] = _zero_from(flows["backward"], length - 2)
      flows["phi"] = _zero_from(flows["phi"], length - 1)

    if m > 0:
      abs_mid = self._propagate(gray, g0, h_last, flows["backward"], flows["phi"])
      ab = jnp.concatenate([ab_first[:, None], abs_mid, ab_last[:, None]], axis=1)
    else:
      ab = jnp.stack([ab_first, ab_last], axis=1)
    if length is not None:
      keep = (jnp.arange(n) < length - 1)[None, :, None, None, None]
      ab = jnp.where(keep, ab, ab_last[:, None])
    out = {"ab": ab, "last_anchor": (ab_last, h_last)}
    if srl:
      out.update(self._srl_terms(gray, ab, flows["phi"], flows["psi"]))
    return out

  def _batched_flows(self, gray, pairs):
    """Flows F(x_i, x_j) of the window's frame pairs, all in one call of the flow net.

    Args:
      gray: [B, N, H, W, 1].
      pairs: {name: (frames i, frames j)}, static sequences of frame indices.

    Returns:
      {name: flow [B, T, H, W, 2], or None where the name has no pairs}.
    """
    b, n = gray.shape[:2]
    names = [k for k, (src, _) in pairs.items() if len(src)]
    out = {k: None for k in pairs}
    if not names:
      return out
    # Pair p of the flat list: name-major, then batch, then time.
    flat = [(k * n + i, k * n + j) for name in names for k in range(b)
            for i, j in zip(pairs[name][0], pairs[name][1], strict=True)]
    order, mirrored = mirrored_chunk_order(flat, self._flow_chunk(len(flat)))
    frames = _fold(gray)
    take = lambda idx: jnp.take(frames, np.asarray(idx), axis=0)
    flow = self._chunked_flows(take([flat[p][0] for p in order]),
                               take([flat[p][1] for p in order]), mirrored)
    if order != sorted(order):
      flow = jnp.take(flow, np.argsort(order), axis=0)  # back to the flat list's order
    start = 0
    for k in names:
      size = b * len(pairs[k][0])
      out[k] = _unfold(flow[start:start + size], b)
      start += size
    return out

  def _flow_chunk(self, m):
    """Pairs per flow-net evaluation for m pairs (0: all at once)."""
    c = self.flow_batch
    if c < 0:  # auto: small chunks only where they are faster (XLA:CPU), one batch on GPU / TPU
      c = 2 if jax.default_backend() == "cpu" else 0
    return 0 if c <= 0 or m <= c or self.is_initializing() else c

  def _chunked_flows(self, img1, img2, mirrored=None):
    """self.flows on [M, H, W, 1] pairs, `_flow_chunk(M)` pairs at a time (the last chunk padded).

    mirrored: optional static bools, one per chunk: the chunk's second half is its first half's
    pairs reversed (see `mirrored_chunk_order` and FlowNet2).
    """
    m = img1.shape[0]
    c = self._flow_chunk(m)
    if not c:
      return self.flows(img1, img2)
    chunks = -(-m // c)
    pad = lambda x: jnp.concatenate([x, jnp.zeros((chunks * c - m,) + x.shape[1:], x.dtype)],
                                    axis=0)
    split = lambda x: pad(x).reshape((chunks, c) + x.shape[1:])
    xs = (split(img1), split(img2))
    if mirrored is not None:
      xs += (jnp.asarray(np.asarray(mirrored, bool)),)
    flows = self._scan_body(lambda mdl, _, x: (None, mdl.flows(*x)))
    _, flow = jax.lax.scan(flows, None, xs)
    return flow.reshape((chunks * c,) + flow.shape[2:])[:m]

  def _scan_body(self, fn):
    """fn(module, carry, x) as a function of (carry, x) for `jax.lax.scan`, run on a copy of this
    module bound to its variables (read-only: for `apply`, not `init`).

    flax's `nn.scan` traces its body twice (once to find what it broadcasts); this traces it once.
    The full-size window's trace and lowering: 1.66 -> 0.98 s (2026-12-05, AMD EPYC).
    """
    net, variables = self.unbind()
    body = nn.apply(fn, net)
    return lambda carry, x: body(variables, carry, x)

  def _propagate(self, gray, g0, h_last, bflow, phi):
    """Backward then forward propagation over the N-2 internal frames.

    Returns ab [B, N-2, H, W, 2].
    """
    b, n = gray.shape[:2]
    m = n - 2
    e = _unfold(self.L_fea_extractor(_fold(gray)), b)  # [B, N, H, W, lf], each frame once

    # Backward propagation: h_i = warp(h_{i+1}, F(x_i, x_{i+1})), i = N-2 .. 1.
    def back_step(h_next, flow):
      h = backward_warp(h_next, flow)
      return h, h

    _, h_mid = jax.lax.scan(back_step, h_last, jnp.moveaxis(bflow, 1, 0), reverse=True,
                            unroll=self.unroll)
    h_mid = jnp.moveaxis(h_mid, 0, 1)  # [B, m, H, W, C]: h_1 .. h_{N-2}
    h_next = jnp.concatenate([h_mid[:, 1:], h_last[:, None]], axis=1)  # h_2 .. h_{N-1}
    cr_h_next = _unfold(self.channel_reduction(jax.lax.stop_gradient(_fold(h_next))), b)

    xs = (e[:, :m], e[:, 1:m + 1], e[:, 2:m + 2], h_mid, cr_h_next, phi[:, :m])
    if self.is_initializing():  # a loop: its first step creates the parameters _scan_body reads
      g, ab_mid = g0, []
      for t in range(m):
        g, ab = self._cell(g, jax.tree_util.tree_map(lambda a, t=t: a[:, t], xs))
        ab_mid.append(ab)
      return jnp.stack(ab_mid, axis=1)
    xs = jax.tree_util.tree_map(lambda t: jnp.moveaxis(t, 1, 0), xs)
    cell = self._scan_body(lambda mdl, c, x: mdl._cell(c, x))  # pylint: disable=protected-access
    _, ab_mid = jax.lax.scan(cell, g0, xs, unroll=self.unroll)
    return jnp.moveaxis(ab_mid, 0, 1)

  def _srl_terms(self, gray, ab, phi, psi):
    """Predictions warped one and two steps ahead and their occlusion masks.

    No gradient flows into the masks.
    """
    b = gray.shape[0]

    def warp_pairs(src_ab, src_l, dst_l, flow):
      wab = backward_warp(_fold(src_ab), _fold(flow))
      mask = _mask(_fold(dst_l), backward_warp(_fold(src_l), _fold(flow)))
      return _unfold(wab, b), _unfold(mask, b)

    wab1, mask1 = warp_pairs(ab[:, :-1], gray[:, :-1], gray[:, 1:], phi)
    out = {"ab_warp1": wab1, "mask1": mask1, "ab_warp2": None, "mask2": None}
    if psi is not None:
      out["ab_warp2"], out["mask2"] = warp_pairs(ab[:, :-2], gray[:, :-2], gray[:, 2:], psi)
    return out
