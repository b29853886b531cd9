"""The evaluation config (configs/eval.py): checking its values before any file is touched."""

from absl import logging
import jax.numpy as jnp
import numpy as np

from tcvc_jax import streaming
from tcvc_jax.evaluation import guided
from tcvc_jax.evaluation import windows as protocol

# The values of `dtype`: the compute dtype the checkpoint is loaded with.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class EvalError(ValueError):
  """A bad config, test set or workdir; the message is one line."""


def _check_int(key, value, minimum):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    want = "a positive" if minimum > 0 else "a non-negative"
    raise EvalError(f"{key} must be {want} integer, got {value!r}")


def _check_bool(key, value):
  if not isinstance(value, (bool, np.bool_)):
    raise EvalError(f"{key} must be True or False, got {value!r}")


def _check_choice(key, value, choices):
  if not isinstance(value, str) or value not in choices:
    raise EvalError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def _check_names(key, value, what):
  if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
    raise EvalError(f"{key} must be a list of {what}, got {value!r}")


def validate_config(config):
  """Raises EvalError (one line, naming the key) for a config value that cannot evaluate.

  Only the values are checked, before any file is read or written (eval.py reports these as usage
  errors, exit code 2); `evaluate` checks what needs the files: the test set, the checkpoint and
  the network sizes its flow allows.
  """
  if not config.checkpoint:
    raise EvalError("no checkpoint: set --config.checkpoint")
  _check_choice("dtype", config.dtype, tuple(DTYPES))
  _check_bool("overwrite", config.overwrite)

  d = config.data
  _check_choice("data.source", d.source, ("folder", "tfds"))
  if d.source == "folder" and not d.root:
    raise EvalError("no test set: set --config.data.root")
  if d.source == "tfds" and d.get("root"):
    raise EvalError(f"data.root ({d.root}) is read only with data.source='folder', and this config "
                    "reads the TFDS split data.name / data.split (the synthetic preset sets "
                    "data.source='tfds'): add --config.data.source=folder to evaluate data.root")
  if d.source == "tfds":
    for key in ("name", "split"):
      if not isinstance(d[key], str) or not d[key]:
        raise EvalError(f"data.{key} must name the dataset's {key}, got {d[key]!r}")
  if not isinstance(d.clips, str):
    raise EvalError(f"data.clips must be comma-separated clip names (or ''), got {d.clips!r}")
  listed = [c.strip() for c in d.clips.split(",") if c.strip()]
  twice = sorted({c for c in listed if listed.count(c) > 1})
  if twice:
    raise EvalError(f"data.clips names {', '.join(twice)} twice")
  _check_bool("data.no_gt", d.no_gt)
  _check_choice("data.gray_mode", d.gray_mode, protocol.GRAY_MODES)

  p = config.protocol
  _check_int("protocol.network_size", p.network_size, 1)
  if p.network_size > protocol.MAX_NETWORK_SIZE:
    raise EvalError(f"protocol.network_size must be at most {protocol.MAX_NETWORK_SIZE}, got "
                    f"{p.network_size}")
  _check_choice("protocol.mode", p.mode, ("one", "multi"))
  _check_int("protocol.interval_length", p.interval_length, 0)
  intervals = p.ensemble_intervals
  _check_names("protocol.ensemble_intervals", intervals, "interval lengths")
  if not intervals or any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0
                          for t in intervals):
    raise EvalError("protocol.ensemble_intervals must be one or more non-negative integers, got "
                    f"{intervals!r}")
  if p.mode == "multi" and len(set(intervals)) == 1:
    logging.warning("protocol.mode='multi' with one interval length (%d): an ensemble of one "
                    "pass, the same as mode='one' with interval_length=%d", intervals[0],
                    intervals[0])

  m = config.metrics
  _check_bool("metrics.ssim", m.ssim)
  _check_bool("metrics.warp_error", m.warp_error)
  _check_choice("metrics.warp_flow", m.warp_flow, ("classical", "flownet2"))
  _check_int("metrics.warp_batch", m.warp_batch, 1)

  h = config.hints
  _check_names("hints.modes", h.modes, "modes")
  unknown = sorted({str(x) for x in h.modes} - set(guided.MODES))
  if unknown:
    raise EvalError(f"hints.modes: unknown {', '.join(unknown)}; use {', '.join(guided.MODES)}")
  if set(h.modes) - {"auto"} and (p.mode != "one" or d.no_gt):
    raise EvalError("hinted modes need one-sampling (protocol.mode='one') and ground truth")
  _check_int("hints.clicks_per_anchor", h.clicks_per_anchor, 0)
  _check_int("hints.click_patch", h.click_patch, 1)
  if h.click_patch % 2 == 0:  # a patch centred on its click, as colorize's --hints takes them
    raise EvalError(f"hints.click_patch must be odd, got {h.click_patch}")
  if "clicks" in h.modes and h.click_patch // 2 * 2 >= p.network_size:
    raise EvalError(f"hints.click_patch must be smaller than protocol.network_size "
                    f"({p.network_size}), got {h.click_patch}")
  _check_int("hints.seed", h.seed, 0)

  o = config.outputs
  for key in ("frames", "videos", "plots"):
    _check_bool(f"outputs.{key}", o[key])
  try:
    streaming.check_fps(o.fps)
  except streaming.UsageError as e:
    raise EvalError(f"outputs.{e}") from e
  if o.fps is None:
    raise EvalError("outputs.fps must be a number of frames per second, got None")
