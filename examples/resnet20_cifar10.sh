#!/usr/bin/env bash
# CIFAR-10 ResNet-20 from float training to chips: float, conventional (quantisation-aware),
# S-DDHR at levels 10 and 6, DDHR, tuned noise injection; evaluated on held-out fast chips, two
# re-checked bit-true; the shipped models exported (docs/RESULTS.md, "ResNet-20 on CIFAR-10"):
#   bash examples/resnet20_cifar10.sh [DATA_DIR] [OUT]
# Every stage resumes where a kill left it (at most the interrupted epoch is lost): rerun the
# same command. Knobs (defaults are what the CPU run of docs/RESULTS.md used):
#   DEVICE [cpu]         cpu or cuda (a GPU affords more: e.g. FLOAT_EPOCHS=160 FT_EPOCHS=10)
#   THREADS [2]          CPU threads per command (give the run the whole machine)
#   DATASET [cifar10]    or svhn (the official train_32x32.mat / test_32x32.mat in DATA/svhn)
#   FLOAT_EPOCHS [80]    float epochs (SGD lr 0.1, Nesterov, cosine, label smoothing 0.1)
#   FT_EPOCHS [2]        fine-tune epochs of every hardware-aware run (Adam lr 5e-4)
#   CHIPS [20]           test chips per level (seeds 3000...), full test set, fast chip form
#   LEVELS [1 2 4 6 8 10] variation levels of the comparison
#   STAGES               which stages to run [float conventional sddhr-l10 sddhr-l6 ddhr noise compare]
#   EXTRA                more flags for every training run (e.g. "--train-subset 1000" for a quick look)
set -euo pipefail
DATA=${1:-${SDDHR_DATA_DIR:?give DATA_DIR or set SDDHR_DATA_DIR}}
OUT=${2:-runs/resnet20-cifar10}
SDDHR=${SDDHR:-sddhr}
DEVICE=${DEVICE:-cpu}
STAGES=${STAGES:-float conventional sddhr-l10 sddhr-l6 ddhr noise compare}
COMMON=(--arch resnet20 --data "${DATASET:-cifar10}" --data-dir "$DATA" --batch-size 128 --device "$DEVICE"
        --threads "${THREADS:-2}" ${EXTRA:-})
source "$(dirname "$0")/lib.sh"
want() { [[ " $STAGES " == *" $1 "* ]]; }

want float && run float --recipe float --epochs "${FLOAT_EPOCHS:-80}" --optimizer sgd --lr 0.1 --label-smoothing 0.1
FT=(--epochs "${FT_EPOCHS:-2}" --optimizer adam --lr 5e-4 --init-from "$OUT/float")
want conventional && run conventional --recipe conventional "${FT[@]}"
want sddhr-l10 && run sddhr-l10 --recipe sddhr --level 10 "${FT[@]}"
want sddhr-l6 && run sddhr-l6 --recipe sddhr --level 6 "${FT[@]}"
want ddhr && run ddhr --recipe ddhr --level 10 --chip-seed 0 --impl fast "${FT[@]}"
if want noise; then
  for s in 0.06 0.12; do run "noise-$s" --recipe noise --noise-std "$s" "${FT[@]}"; done
  BEST=$(pick_noise 10 0.06 0.12)  # tuned on chips 500-504, never the test chips
  echo "== tuned noise baseline: $BEST"
fi
if want compare; then
  MODELS=() NAMES=()
  for m in conventional sddhr-l10 sddhr-l6 ddhr ${BEST:-}; do
    [ -f "$OUT/$m/checkpoint.pt" ] && MODELS+=("$OUT/$m") NAMES+=("$m")
  done
  "$SDDHR" compare "${MODELS[@]}" --names "${NAMES[@]}" --levels ${LEVELS:-1 2 4 6 8 10} --instances "${CHIPS:-20}" \
    --first-seed 3000 --impl fast --device "$DEVICE" --threads "${THREADS:-2}" --out "$OUT/compare"
  "$SDDHR" compare "$OUT/sddhr-l10" --names sddhr-l10 --levels 10 --instances 2 --first-seed 3000 \
    --impl bit_true --device "$DEVICE" --threads "${THREADS:-2}" --out "$OUT/compare-bit-true"
  "$SDDHR" report "$OUT/compare" --title "${DATASET:-cifar10} ResNet-20, mram-22nm 4b/4b"
fi
