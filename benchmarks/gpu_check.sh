#!/usr/bin/env bash
# The GPU check: one script a CUDA machine runs in under 5 minutes.
#   1. every backend on CUDA against the CPU (tests/test_cuda.py: deterministic modes output for
#      output, stochastic variants by their moments, a training step per mode);
#   2. training-step ratios to float on ResNet-20 and the VGG (float / the default S-DDHR variant /
#      faithful / fast chips), and inference on fast chips, on the GPU.
# Usage (from the repository root, with the package installed): bash benchmarks/gpu_check.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python}
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_nn_model.py -k "cuda" 2>&1 | tee "$OUT/tests.txt"
for arch in resnet20 vgg; do
  "$PY" benchmarks/train_step.py --device cuda --arch "$arch" --batch 128 --repeats 10 --level 10 \
    --modes float,one_chip,faithful,instance-fast --eval-modes instance-fast --json "$OUT/train_step_$arch.json" \
    2>&1 | tee "$OUT/train_step_$arch.txt"
done
echo "results in $OUT/"
