"""Evaluates a TCVC checkpoint with the original test protocol.

See tcvc_jax/evaluate.py, --help.
"""

from tcvc_jax import cli
from tcvc_jax import evaluate

if __name__ == "__main__":
  cli.exit(evaluate.main())
