"""Evaluation config for eval.py: the original TCVC test protocol and its metrics.

  python eval.py --config configs/eval.py --workdir /tmp/eval \\
      --config.checkpoint=ckpt/ --config.data.root=data/DAVIS30

Presets, comma-separated in the string argument (`--config configs/eval.py:multi,nogt`):
  multi  the multi-sampling ensemble (intervals 17 and 19), as test_TCVC_multisampling.py.
  nogt   no ground truth: colorize and measure CDC only (frames may be gray).
  tiny   CPU-sized protocol for tests: network size 32, intervals 3 and 5, no warp error.
  synthetic  the embedded synthetic_clips/painted test split (64x64 clips) at network size 64, the
             demo's test set.
  guided  the hinted runs beside the automatic one (hints.modes auto, reference, clicks; interval
          4; README "Guided colorization").
"""

import ml_collections
from ml_collections import config_dict

_PRESETS = ("multi", "nogt", "tiny", "synthetic", "guided")


def get_config(arg=None):
  """Returns the evaluation ConfigDict; `arg` selects presets (see the module docstring)."""
  presets = [p for p in (arg or "").split(",") if p]
  unknown = [p for p in presets if p not in _PRESETS]
  if unknown:
    raise ValueError(f"unknown preset(s) {unknown}; choose from {_PRESETS}")

  config = ml_collections.ConfigDict()
  # Converted checkpoint directory or original full TCVC .pth (anything tcvc_jax.load reads).
  config.checkpoint = config_dict.placeholder(str)
  # Compute dtype of the model: float32 or bfloat16.
  config.dtype = "float32"
  # Replace the results of an earlier run in the same workdir.
  config.overwrite = False

  config.data = ml_collections.ConfigDict()
  # Where clips come from: "folder" reads <root>/<clip>/*.png (the DAVIS30 / Videvo20 layout);
  # "tfds" reads a split of a data/ dataset (name, config, split, data_dir; built first if needed).
  config.data.source = "folder"
  config.data.root = config_dict.placeholder(str)
  config.data.name = "synthetic_clips"
  config.data.config = "default"
  config.data.split = "test"
  config.data.data_dir = config_dict.placeholder(str)
  config.data.manual_dir = config_dict.placeholder(str)
  # Clip names to evaluate (comma-separated); empty: every sub-folder of root.
  config.data.clips = ""
  # No ground truth: frames may be gray; only CDC is measured.
  config.data.no_gt = False
  # One-channel frames: "srgb" (true lightness) or "original" (gray - 0.5, the no-GT script).
  config.data.gray_mode = "srgb"

  config.protocol = ml_collections.ConfigDict()
  # Side of the square the network runs at (the original resizes every frame to 256x256).
  config.protocol.network_size = 256
  # "one": one pass with interval_length; "multi": the ensemble over ensemble_intervals.
  config.protocol.mode = "one"
  # T: key frames 0, T + 1, 2 (T + 1), ... and the clip's last frame; windows of T + 2 frames, the
  # T between two key frames propagated (0: every frame a key frame, colorized by the anchor
  # colorizer alone). Key and inter frames' PSNR (psnr_key, psnr_inter) split by it.
  config.protocol.interval_length = 17
  config.protocol.ensemble_intervals = (17, 19)

  config.metrics = ml_collections.ConfigDict()
  config.metrics.ssim = True
  config.metrics.warp_error = True
  # Flow of the warping error: "classical" (parameter-free TV-L1, the same for every checkpoint)
  # or "flownet2" (the checkpoint's own FlowNet2; needs one).
  config.metrics.warp_flow = "classical"
  # Image pairs per flow call.
  config.metrics.warp_batch = 8

  config.hints = ml_collections.ConfigDict()
  # Runs to measure side by side (tcvc_jax/evaluation/guided.py): "auto" (no hints, the
  # protocol), "reference" (ground-truth colour of each shot's first frame, carried through the
  # shot), "clicks" (clicks_per_anchor ground-truth clicks on every anchor). One-sampling only.
  # frames/, videos/, per_clip.csv and per_frame.csv hold the "auto" run; summary.json["guided"]
  # and the table eval.py prints hold every mode's.
  # With hinted modes, a row "auto_cuts" (no hints on their path, windows stopping at scene cuts)
  # is measured too: the hints' own gain is theirs over it.
  config.hints.modes = ("auto",)
  config.hints.clicks_per_anchor = 10
  config.hints.click_patch = 3
  config.hints.seed = 0

  config.outputs = ml_collections.ConfigDict()
  config.outputs.frames = True  # 8-bit PNGs, as the original writes them (16-bit sources too)
  config.outputs.videos = True
  config.outputs.plots = True
  # Frame rate of the per-clip mp4 files of frame folders, which carry none (e.g. 25 or 29.97); a
  # video clip's mp4 keeps the clip's own rate.
  config.outputs.fps = 25.0

  if "multi" in presets:
    config.protocol.mode = "multi"
  if "nogt" in presets:
    config.data.no_gt = True
  if "tiny" in presets:
    config.protocol.network_size = 32
    config.protocol.interval_length = 3
    config.protocol.ensemble_intervals = (3, 5)
    config.metrics.warp_error = False
  if "guided" in presets:
    config.hints.modes = ("auto", "reference", "clicks")
    config.protocol.interval_length = 4
  if "synthetic" in presets:
    config.data.source = "tfds"
    config.data.config = "painted"
    config.protocol.network_size = 64
  return config
