"""TCVC-IDC training as in the paper (docs/original.md#training); presets `released` and `tiny`.

  python train.py --config configs/default.py --workdir runs/tcvc \
      --config.data.manual_dir=/data/clips \
      --config.init_from=weights/siggraph17,weights/flownet2
  python train.py --config configs/default.py:released ...  # the released YAML: SRL only
  python train.py --config configs/default.py:tiny ...      # CPU-sized, used by the tests

`init_from` takes converted checkpoints (`python -m tcvc_jax.convert`): SIGGRAPH17 and FlowNet2
(frozen), or a full TCVC, or an earlier workdir; comma-separated, later ones win.
"""

import ml_collections
from ml_collections import config_dict

# The four small nets the original trains; SIGGRAPH17 (`fea_key`) and the flow net are frozen.
TRAINABLE = ("L_fea_extractor", "channel_reduction", "weigting", "feature_refine")


def get_config(arg=None):
  """The paper's setup; `arg` selects a preset: None, "released" or "tiny"."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  # The original saves at step 1 and every 2000 steps.
  config.checkpoint_every_steps = 2_000
  # The original has no validation; 0 turns it off. The last step always evaluates.
  config.eval_every_steps = 10_000
  # Converted checkpoints or a workdir to start from when the workdir has no checkpoint.
  config.init_from = config_dict.placeholder(str)
  # Train although a frozen net has no pretrained weights (tests and benchmarks only).
  config.allow_random_frozen = False
  # Recompute each propagation step in the backward pass: XLA's peak per device at 256x256, N=12,
  # batch 4 is 16.3 GiB with it, ~35 GiB without. It saves nothing once the scan is unrolled (CPU
  # presets).
  config.remat_propagation = True

  config.model = ml_collections.ConfigDict()
  config.model.colorizer_widths = (64, 128, 256, 512, 512, 512, 512, 256, 128, 128)
  config.model.l_features = 32
  config.model.reduced_features = 64
  config.model.weighting_hidden = (196, 64)
  config.model.refine_hidden = (196, 128)
  # Propagation steps per scan iteration; XLA on CPU runs conv gradients inside a loop ~5x
  # slower, so CPU runs unroll the whole window (num_frames - 2).
  config.model.unroll = 1
  # Compute dtype: "float32", or "bfloat16" (bf16 products with fp32 sums; flows stay fp32);
  # parameters stay float32.
  config.model.dtype = "float32"
  # Flow pairs per FlowNet2 evaluation (0: all pairs at once; -1: 2 on CPU, 0 on GPU / TPU).
  config.model.flow_batch = -1

  config.flow = ml_collections.ConfigDict()
  # "flownet2" (frozen, weights through init_from) or "classical" (TV-L1, no weights).
  config.flow.type = "flownet2"
  # Keyword arguments of the classical estimator (models/classical_flow.py).
  config.flow.classical = ml_collections.ConfigDict(
      dict(num_scales=5, num_warps=5, num_iters=20))

  config.loss = ml_collections.ConfigDict()
  # Reconstruction on ab: criterion l1, l2 (MSE), smooth_l1 or charbonnier.
  config.loss.reconstruction_weight = 1.0
  config.loss.criterion = "l2"
  config.loss.warp1_weight = 1.0
  config.loss.warp2_weight = 1.0

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 5e-5
  config.optim.b1 = 0.9
  config.optim.b2 = 0.99
  config.optim.eps = 1e-8
  # MultiStep decay: the rate is multiplied by gamma after these many updates.
  config.optim.milestones = (10_000, 20_000, 30_000)
  config.optim.gamma = 0.5
  # Top-level sub-networks that learn; add "fea_key" to fine-tune the colorizer too.
  config.optim.trainable = TRAINABLE
  # Abort after this many consecutive steps with a non-finite loss or gradient.
  config.optim.max_consecutive_nonfinite = 20

  config.data = ml_collections.ConfigDict()
  # TFDS builder (tcvc_jax/data/datasets.py: synthetic_clips or video_frames) and its config
  # (video_frames: folder, folder_300, davis, or davis_videvo: DAVIS train + Videvo train at
  # 300x300, DAVIS test).
  config.data.name = "video_frames"
  config.data.config = "davis_videvo"
  # Where the built dataset goes (TFDS's default, ~/tensorflow_datasets, if unset).
  config.data.data_dir = config_dict.placeholder(str)
  # Folder with the source clips (layouts: tcvc_jax/data/docs/video_frames/README.md). The built
  # dataset records it and a fingerprint of its listing; when either changes it is rebuilt.
  config.data.manual_dir = config_dict.placeholder(str)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  # Global batch size (the original: 4 GPUs x 1).
  config.data.batch_size = 4
  # keyframe_interval (10) + the two anchors.
  config.data.num_frames = 12
  # Random crop of the training windows: n (n x n), (height, width), or None for whole frames
  # (then every training clip must have one size); a side must suit the model (multiples of 64
  # with FlowNet2). rot90 needs a square. Untyped, so that --config.data.crop_size takes 256,
  # '(256,320)' or None.
  config.data.crop_size = config_dict.FieldReference(256, field_type=object)
  config.data.interval_list = (1,)
  config.data.random_reverse = False
  config.data.hflip = True
  config.data.rot90 = True
  # Read frames 0..N-1 of the drawn clip, as the released loader did (docs/original.md#training).
  config.data.reproduce_original_sampling = False
  # Colour hints simulated from the ground truth on the anchors (frames 0 and N-1), so that the
  # model learns to follow clicks and reference frames (tcvc_jax/data/hints.py has the rule).
  # Off: the original's training, which never gives hints. Per window: no hint at all with
  # probability none_fraction; else per anchor a dense hint (the ground truth but in up to
  # dense_max_holes random holes) with probability dense_fraction, else K ~ Geometric(points_p)
  # patches (K >= 0, P(K = 0) = points_p) of side uniform in 1..max_patch holding the patch's
  # mean ab, placed as SIGGRAPH17 did ("normal": centred Gaussian, or "uniform").
  config.data.simulated_hints = ml_collections.ConfigDict(dict(
      enabled=False, none_fraction=0.25, dense_fraction=0.125, points_p=0.125, max_patch=9,
      location="normal", dense_max_holes=4))
  config.data.num_workers = 4
  config.data.read_threads = 2
  config.data.eval_batch_size = 1

  config.eval = ml_collections.ConfigDict()
  # The test protocol's interval length T (windows of T + 2 frames) and network size: n,
  # (height, width), or None for each clip's own size. Untyped, so that
  # --config.eval.network_size takes 256, '(256,320)' or None.
  config.eval.interval_length = 17
  config.eval.network_size = config_dict.FieldReference((256, 256), field_type=object)
  # Validation clips shown as images, and frames per image.
  config.eval.num_images = 2
  config.eval.image_frames = 6

  config.ckpt = ml_collections.ConfigDict()
  config.ckpt.max_to_keep = 3
  config.ckpt.async_save = True

  config.mesh = ml_collections.ConfigDict()
  # (axis, size) pairs; -1 takes all remaining devices.
  config.mesh.axes = (("data", -1),)
  config.mesh.axis_type = "explicit"

  config.log = ml_collections.ConfigDict()
  config.log.progress_bar = True
  config.log.tensorboard = True

  if arg == "released":
    _released(config)
  elif arg == "tiny":
    _tiny(config)
  elif arg:
    raise ValueError(f"unknown preset {arg!r}; use 'released' or 'tiny'")
  return config


def _released(config):
  """The released options/train/train_TCVC_IDC.yml: pixel_weight 0 (the pixel term is MSE)."""
  config.loss.reconstruction_weight = 0.0
  config.loss.criterion = "l2"
  config.data.reproduce_original_sampling = True
  config.eval_every_steps = 0


def _tiny(config):
  """A few steps of a tiny model on 32x32 synthetic clips, classical flow (tests)."""
  config.num_train_steps = 4
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0
  config.allow_random_frozen = True
  config.model.colorizer_widths = (8, 8, 8, 8, 8, 8, 8, 8, 8, 16)
  config.model.l_features = 4
  config.model.reduced_features = 4
  config.model.weighting_hidden = (8, 4)
  config.model.refine_hidden = (8, 8)
  config.model.unroll = 1
  config.remat_propagation = False
  config.flow.type = "classical"
  config.flow.classical = ml_collections.ConfigDict(
      dict(num_scales=1, num_warps=1, num_iters=2))
  config.optim.learning_rate = 1e-3
  config.data.name = "synthetic_clips"
  config.data.config = "tiny"
  config.data.eval_split = "validation"
  config.data.batch_size = 2
  config.data.num_frames = 3
  config.data.crop_size = 32
  config.data.num_workers = 0
  config.eval.interval_length = 4
  config.eval.network_size = None
  config.eval.num_images = 1
  config.ckpt.max_to_keep = 2
  config.log.progress_bar = False
