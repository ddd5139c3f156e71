#!/usr/bin/env bash
# The CIFAR-10 run of docs/RESULTS.md, sized for 2 CPU cores (about 1.5 h on one core):
#   bash examples/cifar10_cpu.sh [DATA_DIR] [OUT]
# VGG width 16 (first conv digital), full 50k training set; robust models fine-tuned at
# LEVEL [4] (level 10 is also trained for resampled S-DDHR); evaluation on TEST_SUBSET [1000]
# test images, 20 chips per level, fast (linear-ADC) chip form. On a GPU use
# examples/headline.sh cifar10 with DEVICE=cuda instead (full test set, bit-true chips).
set -euo pipefail
DATA=${1:-${SDDHR_DATA_DIR:?give DATA_DIR or set SDDHR_DATA_DIR}}
OUT=${2:-runs/cifar10}
SDDHR=${SDDHR:-sddhr}
LEVEL=${LEVEL:-4}
TEST_SUBSET=${TEST_SUBSET:-1000}
COMMON=(--arch vgg --width 16 --data cifar10 --data-dir "$DATA" --batch-size 128 --optimizer adam
        --keep-digital first --test-subset "$TEST_SUBSET")
source "$(dirname "$0")/lib.sh"

run float        --recipe float        --epochs 6 --lr 2e-3
run conventional --recipe conventional --epochs 2 --lr 1e-3 --init-from "$OUT/float"
FT=(--epochs 2 --lr 5e-4 --init-from "$OUT/conventional")
run ddhr            --recipe ddhr  --level "$LEVEL" --chip-seed 0 --impl fast "${FT[@]}"
run sddhr-composed  --recipe sddhr --level "$LEVEL" --variant composed  "${FT[@]}"
run sddhr-resampled --recipe sddhr --level "$LEVEL" --variant resampled "${FT[@]}"
run sddhr-resampled-L10 --recipe sddhr --level 10 --variant resampled "${FT[@]}"
# exact costs about 13x a float step here (docs/PERFORMANCE.md): one capped epoch (150 steps)
run sddhr-exact     --recipe sddhr --level "$LEVEL" --variant exact --epochs 1 --max-steps-per-epoch 150 --lr 5e-4 \
    --init-from "$OUT/conventional"
for s in 0.06 0.12 0.25; do run "noise-$s" --recipe noise --noise-std "$s" "${FT[@]}"; done

BEST=$(pick_noise "$LEVEL" 0.06 0.12 0.25 -- --test-subset "$TEST_SUBSET")
echo "== tuned noise baseline: $BEST"
"$SDDHR" compare "$OUT/conventional" "$OUT/ddhr" "$OUT/sddhr-exact" "$OUT/sddhr-composed" "$OUT/sddhr-resampled" \
  "$OUT/sddhr-resampled-L10" "$OUT/$BEST" \
  --names conventional ddhr sddhr-exact sddhr-composed sddhr-resampled sddhr-resampled-L10 "$BEST" \
  --levels 1 2 4 6 8 10 --instances 20 --impl fast --test-subset "$TEST_SUBSET" --out "$OUT/compare"
"$SDDHR" report "$OUT/compare" --title "cifar10 VGG width 16, mram-22nm 4b/4b, S-DDHR trained at level $LEVEL"
