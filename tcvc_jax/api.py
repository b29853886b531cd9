"""The public inference API: `tcvc_jax.load(path).colorize_window(gray)`."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from tcvc_jax import converted
from tcvc_jax import porting
from tcvc_jax.models import spec as spec_lib
from tcvc_jax.ops import color


class Colorizer:
  """A TCVC model with its weights, ready to colorize windows of frames.

  Attributes:
    model: the Flax `TCVC` module.
    variables: {'params', 'batch_stats'} pytrees.
    spec: the model description (sizes, flow type, the size rule).
  """

  def __init__(self, model, variables, spec=None):
    self.model = model
    self.spec = spec or spec_lib.ModelSpec(**{f: getattr(model, f) for f in spec_lib.FIELDS})
    self.variables = jax.tree_util.tree_map(jnp.asarray, variables)
    self._apply = jax.jit(lambda v, gray, first, hints: _window(model, v, gray, first, hints))
    self._apply_padded = jax.jit(
        lambda v, gray, first, use, length, hints: _padded_window(model, v, gray, first, use,
                                                                  length, hints))
    self._flow = jax.jit(lambda v, a, b: model.apply(v, a, b, method=model.flows))
    # Windows up to this many frames run one compiled program per frame size (see `pad_windows`).
    self.window_frames = None
    # The state the last call returned: passed back as the next first_anchor (a video's windows),
    # it is known to be whole, and its check (a copy to the host) is skipped.
    self._returned_state = None

  def __getstate__(self):
    """Pickling (a worker process, `multiprocessing`, joblib): the model, its weights as numpy
    arrays and the window padding; the jitted programs are made again where it is unpickled (and
    compiled on their first call there, or read from the compilation cache)."""
    return {"model": self.model, "spec": self.spec, "window_frames": self.window_frames,
            "variables": jax.tree_util.tree_map(np.asarray, self.variables)}

  def __setstate__(self, state):
    self.__init__(state["model"], state["variables"], state["spec"])
    self.window_frames = state["window_frames"]

  def flow(self, gray1, gray2):
    """The model's frozen optical flow from gray1 to gray2 ([B, H, W, 1] normalised L), in pixels:
    gray1(p) ~ gray2(p + F(p)); numpy [B, H, W, 2]."""
    dtype = self.model.act_dtype
    return np.asarray(self._flow(self.variables, jnp.asarray(gray1, dtype),
                                 jnp.asarray(gray2, dtype)))

  def pad_windows(self, frames):
    """Runs every later window of <= `frames` frames (and any first_anchor) as one program.

    Shorter windows (a clip's last, a shot's last) are padded in a way that leaves the
    computation of their frames unchanged (`TCVC(length=...)`), so a video compiles once per frame
    size instead of once per window length; the results are those of the unpadded windows (bit for
    bit on the machines measured with AVX-512; XLA's convolutions batched over a window's frames
    may round the last bit differently at another batch size, 1 ulp seen on an AVX2-only CPU). None:
    no padding (each window length compiles its own program).
    """
    if frames is None:  # padding off
      self.window_frames = None
      return
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 2:
      raise ValueError(f"frames must be a whole number >= 2 (a window has two anchors) or None, "
                       f"got {frames!r}")
    self.window_frames = int(frames)

  @property
  def size_multiple(self):
    """H and W of a window must be multiples of this (`ModelSpec.size_multiple`)."""
    return self.spec.size_multiple

  def colorize_window(self, gray, first_anchor=None, return_last_anchor=False, hint_ab=None,
                      hint_mask=None):
    """Colorizes one window; the first and last frames are the anchors.

    Args:
      gray: float32 [N, H, W, 1] normalised L ((L* - 50) / 100, in [-0.5, 0.5]), N >= 2, H and W
        multiples of 64 (8 with the classical flow).
      first_anchor: optional state of frame 0 returned by the previous call
        (`return_last_anchor=True`) when consecutive windows share their boundary frame; saves one
        colorizer pass, same result.
      return_last_anchor: also return the state of frame N-1, to pass as the next window's
        first_anchor.
      hint_ab: optional user colour hints, [N, H, W, 2] normalised ab like the output (within
        AB_RANGE), read where hint_mask > 0 only (set to 0 elsewhere); needs hint_mask. Only the
        anchors' hints (frames 0 and N-1) are used: internal frames take their colours from the
        anchors, and frame 0's hints are ignored with first_anchor (that state already holds the
        hints frame 0 was colorized with). None: no hints.
      hint_mask: optional [N, H, W, 1] (float or bool), 1 where a hint is given, else 0. None:
        zeros.

    Returns:
      numpy [N, H, W, 2] (float32; float64 for a float64 model), normalised ab (a* / 110, b* / 110):
      the first output of the original forward. With return_last_anchor, a pair (ab, state).

    Raises:
      ValueError: naming the argument: a shape, a dtype other than real floating point, a value
        not finite or out of range (gray outside [-0.5, 0.5], hint_mask outside [0, 1], up to
        RANGE_TOLERANCE), or a first_anchor that is no state of a window of this size.
    """
    kind = type(gray).__name__
    try:
      gray = np.asarray(gray)
    except ValueError:  # a list of frames of different sizes ("inhomogeneous shape")
      sizes = sorted({np.shape(f) for f in gray}) if isinstance(gray, (list, tuple)) else []
      raise ValueError(f"gray must be an array [N, H, W, 1] of normalised L; got a {kind} of "
                       f"frames of different shapes {sizes[:3]}: resize them to one size "
                       "(the network size)") from None
    if gray.dtype == object or gray.dtype.kind in "SU":  # None, a string, a generator
      raise ValueError(f"gray must be an array [N, H, W, 1] of normalised L, got {kind}")
    if gray.ndim != 4 or gray.shape[-1] != 1:
      raise ValueError(f"gray must have shape [N, H, W, 1], got {gray.shape}"
                       + (" (add the channel: gray[..., None])" if gray.ndim == 3 else ""))
    n, h, w, _ = gray.shape
    if n < 2:
      raise ValueError(f"a window needs at least 2 frames (the two anchors), got {n}")
    try:
      self.spec.check_size(h, w, "window size")
    except spec_lib.SpecError as e:
      raise ValueError(f"{e}; resize first") from e
    _check_values("gray", gray, (-0.5, 0.5), "normalised L, (L* - 50) / 100: from uint8 RGB, "
                  "color.rgb_to_gray_ab(rgb)[0]")
    hints = {}
    for name, hint, c in (("hint_ab", hint_ab, 2), ("hint_mask", hint_mask, 1)):
      if hint is not None:
        hints[name] = np.asarray(hint)
        if hints[name].shape != (n, h, w, c):
          raise ValueError(f"{name} must have shape [N, H, W, {c}] = {(n, h, w, c)} (N, H, W of "
                           f"gray), got {hints[name].shape}")
    if "hint_ab" in hints and "hint_mask" not in hints:
      raise ValueError("hint_ab needs hint_mask (1 where a hint is given): without it no hint "
                       "is given")
    if "hint_mask" in hints:
      _check_values("hint_mask", hints["hint_mask"], (0, 1), "1 where a hint is given, else 0",
                    allow_bool=True)
    if "hint_ab" in hints:  # read where a hint is given only: the colorizer sees 0 elsewhere
      given = np.broadcast_to(hints["hint_mask"] > 0, hints["hint_ab"].shape)
      _check_values("hint_ab", hints["hint_ab"][given], AB_RANGE,
                    "normalised ab, a* / 110 and b* / 110")
      hints["hint_ab"] = np.where(given, hints["hint_ab"], 0)
    hints = {k: jnp.asarray(v, self.model.act_dtype)[None] for k, v in hints.items()}
    if first_anchor is not None:
      self._check_anchor(first_anchor, h, w, trusted=first_anchor is self._returned_state)
    if self.window_frames is not None and n <= self.window_frames:
      ab, last = self._padded(gray, first_anchor, hints)
    else:
      gray = jnp.asarray(gray, self.model.act_dtype)[None]
      ab, last = self._apply(self.variables, gray, first_anchor, hints)
    ab = np.asarray(ab[0, :n])
    ab = ab if ab.dtype == np.float64 else ab.astype(np.float32)
    if return_last_anchor:
      self._returned_state = last
    return (ab, last) if return_last_anchor else ab

  def _check_anchor(self, first_anchor, h, w, trusted=False):
    """Raises ValueError unless `first_anchor` is the state of a window of frames h x w (and
    finite, unless `trusted`: the state this Colorizer returned last)."""
    feat = self.spec.colorizer_widths[-1]
    want = ((1, h, w, 2), (1, h, w, feat))
    shapes = None
    if isinstance(first_anchor, (tuple, list)) and len(first_anchor) == 2:
      shapes = tuple(tuple(getattr(a, "shape", ())) for a in first_anchor)
      dtypes = [getattr(a, "dtype", None) for a in first_anchor]
      if shapes == want and all(d is not None and jnp.issubdtype(d, jnp.floating)
                                for d in dtypes):
        if trusted or all(np.isfinite(np.asarray(a, np.float32)).all() for a in first_anchor):
          return
        raise ValueError("first_anchor must be finite, got NaN or inf values")
      got = f"dtypes {tuple(map(str, dtypes))}" if shapes == want else f"shapes {shapes}"
    else:
      shape = getattr(first_anchor, "shape", None)
      got = type(first_anchor).__name__ + ("" if shape is None else f" of shape {tuple(shape)}")
    raise ValueError(f"first_anchor must be the state a window of this size returned "
                     f"(return_last_anchor=True): float arrays of shapes {want}, got {got}")

  def _padded(self, gray, first_anchor, hints):
    n, h, w, _ = gray.shape
    pad = lambda x: np.concatenate([x, np.zeros((self.window_frames - n,) + x.shape[1:], x.dtype)])
    dtype = self.model.act_dtype
    hints = {k: jnp.asarray(pad(np.asarray(v[0])), dtype)[None] for k, v in hints.items()}
    use = first_anchor is not None
    if first_anchor is None:  # a placeholder state of the right shapes; not used
      feat = self.spec.colorizer_widths[-1]
      first_anchor = (jnp.zeros((1, h, w, 2), dtype), jnp.zeros((1, h, w, feat), dtype))
    return self._apply_padded(self.variables, jnp.asarray(pad(gray), dtype)[None], first_anchor,
                              jnp.asarray(use), jnp.asarray(n, jnp.int32), hints)


# Inputs may stray this far outside their range (rounding in a colour conversion or a resize).
RANGE_TOLERANCE = color.RANGE_TOLERANCE
AB_RANGE = color.AB_RANGE  # L*a*b*'s a* and b*, normalised


def _check_values(name, x, bounds, what, allow_bool=False):
  """Raises ValueError unless x is real floating point (or bool), finite and within `bounds`
  (low, high; None: any), up to RANGE_TOLERANCE."""
  if not (jnp.issubdtype(x.dtype, jnp.floating) or (allow_bool and x.dtype == np.bool_)):
    kinds = "real floating point or bool" if allow_bool else "real floating point"
    raise ValueError(f"{name} must be {kinds} ({what}), got dtype {x.dtype}")
  v = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
  if not np.isfinite(v).all():
    raise ValueError(f"{name} must be finite ({what}), got NaN or inf values")
  if bounds is None or not v.size:
    return
  low, high = bounds
  lo, hi = v.min(), v.max()
  if lo < low - RANGE_TOLERANCE or hi > high + RANGE_TOLERANCE:
    raise ValueError(f"{name} must be within [{low:g}, {high:g}] ({what}), got values from "
                     f"{lo:g} to {hi:g}")


def _padded_window(model, variables, gray, first_anchor, use, length, hints):
  out = model.apply(variables, gray, first_anchor=first_anchor, use_first_anchor=use,
                    length=length, **hints)
  return out["ab"], out["last_anchor"]


def _window(model, variables, gray, first_anchor, hints):
  out = model.apply(variables, gray, first_anchor=first_anchor, **hints)
  return out["ab"], out["last_anchor"]


def read_checkpoint(path):
  """Weights and model of any checkpoint `load` accepts.

  Returns:
    (variables {'params', 'batch_stats'}, kind, model description: a ModelSpec for "tcvc").

  Raises:
    porting.ConversionError: naming the path and the problem.
  """
  from tcvc_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  workdir, step = path, None
  up, name = os.path.split(os.path.abspath(path))
  if (name.isdigit() and os.path.basename(up) == checkpointing.CHECKPOINT_DIR
      and checkpointing.is_workdir(os.path.dirname(up))):  # one checkpoint of a run
    workdir, step = os.path.dirname(up), int(name)
  if os.path.isdir(path) and checkpointing.is_workdir(workdir):
    try:
      variables, spec, _ = checkpointing.load_workdir(workdir, step)
    except (FileNotFoundError, spec_lib.SpecError) as e:
      raise porting.ConversionError(str(e)) from e
    return variables, "tcvc", spec
  if os.path.isdir(path):
    variables, meta, _ = converted.load_converted(path)
    return variables, meta["kind"], meta["model"]
  if os.path.isfile(path):
    sd, kind, model = porting.read_torch_checkpoint(path)
    variables, _ = porting.torch_to_flax(sd)
    return variables, kind, model
  raise porting.ConversionError(f"{path}: no such file or directory")


def _is_dtype(x):
  try:
    jnp.dtype(x)
    return True
  except TypeError:
    return False


def load(path, dtype=jnp.float32):
  """Loads TCVC weights for inference.

  Args:
    path: a train.py workdir (its latest checkpoint) or one of its checkpoints
      (`WORKDIR/checkpoints/STEP`), a converted checkpoint directory
      (`python -m tcvc_jax.convert`), or an original full TCVC `.pth` state_dict (converted in
      memory; no PyTorch needed, and a file that asks to run code is refused).
    dtype: compute dtype: float32; bfloat16 (the propagation nets and the colorizer multiply in bf16
      and accumulate in fp32, flows stay fp32); float64 (needs jax x64).

  Returns:
    A `Colorizer`.

  Raises:
    porting.ConversionError: the path holds no TCVC checkpoint, or one that does not fit its model;
    OSError (`checkpointing.DamagedCheckpointError`): a workdir's checkpoint files cannot be read;
    ValueError: another dtype.
  """
  if not isinstance(path, (str, os.PathLike)):
    raise TypeError(f"path must be a file or folder name, got {type(path).__name__}")
  path = os.path.expanduser(path)  # "~/runs/demo", as the tools read it
  name = jnp.dtype(dtype).name if _is_dtype(dtype) else repr(dtype)
  if name not in ("float32", "bfloat16", "float64"):
    raise ValueError(f"dtype must be float32, bfloat16 or float64, got {name}")
  if name == "float64" and not jax.config.read("jax_enable_x64"):
    raise ValueError("dtype float64 needs jax's 64-bit mode: jax.config.update('jax_enable_x64', "
                     "True) before any computation")
  variables, kind, spec = read_checkpoint(path)
  if kind != "tcvc":
    raise porting.ConversionError(
        f"{path}: holds {kind} weights only; colorizing needs a full TCVC checkpoint")
  variables = {c: variables.get(c, {}) for c in ("params", "batch_stats")}
  return Colorizer(spec.build(dtype=dtype), variables, spec)


def enable_compilation_cache(folder=None):
  """Keeps compiled programs on disk, as the command-line tools do, so that a new process colorizes
  at once: JAX's persistent compilation cache in `folder` (default `~/.cache/tcvc_jax/xla`, or
  $JAX_COMPILATION_CACHE_DIR). Call it before the first colorizing call; returns the folder, or
  None where it cannot be used (a warning says why)."""
  from tcvc_jax import flag_parsing  # pylint: disable=g-import-not-at-top
  return flag_parsing.enable_compilation_cache(None if folder is None else os.fspath(folder))
