"""TCVC-IDC on a Cloud TPU pod slice: data parallel over every chip of every host, bf16 compute.

  python train.py --config configs/tpu_pod.py:256 --workdir gs://bucket/tcvc \
      --config.data.manual_dir=/data/clips --config.init_from=weights/siggraph17,weights/flownet2

Start the same command on every host; `jax.distributed` finds the pod by itself. The global
batch (default 64) must be a multiple of the number of chips.
"""

from tcvc_jax.configs import default


def get_config(arg=None):
  """The paper's setup at pod scale; `arg` is the global batch size."""
  config = default.get_config()
  config.data.batch_size = int(arg) if arg else 64
  # bfloat16 activations; parameters, optimizer state and the loss stay float32.
  config.model.dtype = "bfloat16"
  config.mesh.axes = (("data", -1),)
  config.mesh.axis_type = "explicit"
  # The paper's rate is for a batch of 4; raise it (--config.optim.learning_rate) for big batches.
  config.optim.learning_rate = 5e-5
  # Host-side input: every host decodes its own share of the batch.
  config.data.num_workers = 16
  config.data.read_threads = 4
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1_000
  config.eval_every_steps = 5_000
  config.ckpt.max_to_keep = 5
  # Pod logs go to files: no progress bar.
  config.log.progress_bar = False
  return config
