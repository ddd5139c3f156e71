#!/usr/bin/env bash
# S-DDHR at level 10 on MNIST with the library's default fine-tune settings, every layer on the
# macro (docs/RESULTS.md, "Level 10 with the default recipe"):
#   bash examples/mnist_level10.sh [DATA_DIR] [OUT]
# Knobs: WIDTH (MLP width; default network when unset), VARIANT (S-DDHR variant; library default
# when unset), EPOCHS_FT (fine-tune epochs; library default when unset), INSTANCES [10], FIRST_SEED [2000],
# IMPL [bit_true].
set -euo pipefail
DATA=${1:-${SDDHR_DATA_DIR:?give DATA_DIR or set SDDHR_DATA_DIR}}
OUT=${2:-runs/mnist-level10}
SDDHR=${SDDHR:-sddhr}
COMMON=(--arch mlp --data mnist --data-dir "$DATA" --keep-digital --no-augment)
[ -n "${WIDTH:-}" ] && COMMON+=(--width "$WIDTH")
source "$(dirname "$0")/lib.sh"
run float --recipe float --epochs 8 --optimizer adam --lr 2e-3
# everything else at its default: SGD, lr, weight decay, weight step scale, variant
run sddhr --recipe sddhr --level 10 --init-from "$OUT/float" ${EPOCHS_FT:+--epochs "$EPOCHS_FT"} \
  ${VARIANT:+--variant "$VARIANT"}
/usr/bin/time -f "   compare: %e s" "$SDDHR" compare "$OUT/sddhr" --names sddhr --levels 6 8 10 \
  --instances "${INSTANCES:-10}" --first-seed "${FIRST_SEED:-2000}" --impl "${IMPL:-bit_true}" --out "$OUT/compare"
