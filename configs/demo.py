"""The CPU demo: a small TCVC learns to colorize procedural clips from scratch in minutes.

  python train.py                      # = --config configs/demo.py --workdir runs/demo

Every net is trained, the colorizer too (no pretrained weights exist for this size), with the
parameter-free TV-L1 flow instead of FlowNet2, on the embedded `synthetic_clips/painted` dataset
(built on first use, a few seconds; 30 % of its surfaces take a random hue, which only hints tell).
Finishes in under 10 minutes on 2 CPU cores, ending with a validation against the gray (ab = 0)
baseline; the workdir then holds the checkpoint, metrics.jsonl, TensorBoard files and images/ of
colorized validation frames. The anchors train with colour hints simulated from the ground truth
(config.data.simulated_hints), so the model also follows clicks and reference frames; validation
runs without hints.
"""

import ml_collections

from tcvc_jax.configs import default


def get_config(arg=None):
  """The demo; `arg` "short" gives a shorter run (the end-to-end test)."""
  config = default.get_config()
  config.num_train_steps = 2000
  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  config.eval_every_steps = 500
  config.allow_random_frozen = False

  config.model.colorizer_widths = (16, 32, 32, 32, 32, 32, 32, 32, 16, 16)
  config.model.l_features = 8
  config.model.reduced_features = 8
  config.model.weighting_hidden = (16, 8)
  config.model.refine_hidden = (16, 16)
  config.model.unroll = 2  # the whole window (num_frames - 2): fast on CPU
  config.remat_propagation = False  # no memory saved once unrolled

  config.flow.type = "classical"
  config.flow.classical = ml_collections.ConfigDict(
      dict(num_scales=2, num_warps=2, num_iters=5))

  config.optim.learning_rate = 2e-3
  config.optim.milestones = (1400, 1800)
  config.optim.trainable = default.TRAINABLE + ("fea_key",)

  config.data.name = "synthetic_clips"
  # Painted clips: 30 % of the surfaces take a random hue per shot, which only hints can tell,
  # so the hint-trained anchors learn to follow hints rather than ignore them.
  config.data.config = "painted"
  config.data.eval_split = "validation"
  config.data.batch_size = 4
  config.data.num_frames = 4
  # 32x32 crops of the 64x64 clips; validation runs on whole frames.
  config.data.crop_size = 32
  config.data.num_workers = 0
  # The colorizer learns here, so it learns to follow hints too (guided colorization).
  config.data.simulated_hints.enabled = True

  config.eval.interval_length = 10
  config.eval.network_size = None
  config.eval.num_images = 2
  config.eval.image_frames = 8
  config.ckpt.max_to_keep = 2

  if arg == "short":
    # The end-to-end test: 300 steps on the unpainted clips, whose colour follows from lightness
    # and texture. A painted surface's hue cannot be learned, so after a few hundred steps the
    # painted clips' validation PSNR is a coin toss: over seeds 0-5 (a stand-in for the rounding
    # of another CPU) it was 1.3-2.5 dB above the gray baseline at 300 steps, 0.5-1.5 dB at 150;
    # the unpainted clips gave 2.25-5.2 dB at 300 steps (seeds 0-3).
    config.num_train_steps = 300
    config.checkpoint_every_steps = 300
    config.eval_every_steps = 300
    config.optim.milestones = (200, 260)
    config.data.config = "default"
  elif arg:
    raise ValueError(f"unknown preset {arg!r}; use 'short'")
  return config
