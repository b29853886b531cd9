"""Trains TCVC: `python train.py` runs the CPU demo into runs/demo.

See tcvc_jax/train.py, --help.
"""

import sys

from tcvc_jax import train

if __name__ == "__main__":
  sys.exit(train.main(sys.argv))
