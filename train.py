"""Trains TCVC: `python train.py` runs the CPU demo into runs/demo.

See tcvc_jax/train.py, --help.
"""

from tcvc_jax import cli
from tcvc_jax import train

if __name__ == "__main__":
  cli.exit(train.main())
