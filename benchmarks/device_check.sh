#!/usr/bin/env bash
# GPU / TPU readiness, one script (< 8 minutes on one accelerator): the golden tests on the device,
# then the model and train-step benchmarks with frames/s, step time and the fraction of the chip's
# measured dense matmul rate (FLOPs from XLA's cost analysis).
#
#   bash benchmarks/device_check.sh            # on the machine with the accelerator
#
# Needs the project installed (pip install -e ".[test]"). Prints the backend first: the CPU-only
# convolution forms (models/layers.py) and flow chunks (TCVC.flow_batch=-1) switch off by backend.
set -uo pipefail
cd "$(dirname "$0")/.."
python - <<'EOF'
import jax
print("backend:", jax.default_backend(), "devices:", jax.devices())
EOF
echo "== golden tests (forward, hints, training step) on $(python -c 'import jax; print(jax.default_backend())')"
timeout 300 python -m pytest -q -x tests/golden_test.py tests/hints_golden_test.py \
  tests/train_golden_test.py -p no:cacheprovider 2>&1 | tail -5
echo "== machine rate (dense matmul, fp32 / bf16)"
timeout 60 python benchmarks/machine_rate.py --size 8192 --repeats 5 2>&1 | tail -4
echo "== inference: one 19-frame 256x256 window, fp32 and bf16"
timeout 120 python benchmarks/model_bench.py --frames 19 --size 256 --repeats 3 \
  --dtype float32,bfloat16 2>&1 | tail -12
echo "== train step: 256x256, N=12, batch 1, SRL, full model"
timeout 120 python benchmarks/train_bench.py --models full --steps 3 2>&1 | tail -8
