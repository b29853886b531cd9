"""Evaluates a TCVC checkpoint with the original test protocol.

See tcvc_jax/evaluate.py, --help.
"""

import sys

from tcvc_jax import evaluate

if __name__ == "__main__":
  sys.exit(evaluate.main(sys.argv))
