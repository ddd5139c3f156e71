#!/usr/bin/env bash
# Reproduce the headline comparison on one data set (docs/RESULTS.md):
#   bash examples/headline.sh mnist  [DATA_DIR] [OUT]
#   bash examples/headline.sh cifar10 [DATA_DIR] [OUT]
#   bash examples/headline.sh svhn    [DATA_DIR] [OUT]     (official train_32x32.mat / test_32x32.mat)
# Environment knobs (defaults in brackets): EPOCHS_FLOAT, EPOCHS_CONV, EPOCHS_FT, LEVEL [10], INSTANCES [20],
# IMPL [bit_true for mnist, fast otherwise], WIDTH, TRAIN_SUBSET, TEST_SUBSET, DEVICE [cpu], NOISE_STDS ["0.03 0.06 0.12 0.25 0.5"],
# VARIANTS [S-DDHR variants to train: "faithful exact composed resampled" for mnist, "faithful" (the default
# variant) otherwise], EXTRA [more train flags, e.g.
# "--w-bits 3 --x-bits 3"], ARCH [mlp for mnist, resnet20 otherwise; vgg for the smaller VGG],
# CHECK_CHIPS [3: bit-true chips per level of the fast-vs-bit-true check when IMPL=fast; 0 skips it].
set -euo pipefail
DS=${1:?data set: mnist, cifar10 or svhn}
DATA=${2:-${SDDHR_DATA_DIR:?give DATA_DIR or set SDDHR_DATA_DIR}}
OUT=${3:-runs/$DS}
SDDHR=${SDDHR:-sddhr}
LEVEL=${LEVEL:-10}
INSTANCES=${INSTANCES:-20}
DEVICE=${DEVICE:-cpu}
NOISE_STDS=${NOISE_STDS:-"0.03 0.06 0.12 0.25 0.5"}
if [ "$DS" = mnist ]; then
  # as the MNIST tables of docs/RESULTS.md (fine-tuned 10 epochs)
  ARCH=${ARCH:-mlp}; IMPL=${IMPL:-bit_true}; EPOCHS_FLOAT=${EPOCHS_FLOAT:-8}; EPOCHS_CONV=${EPOCHS_CONV:-4}; EPOCHS_FT=${EPOCHS_FT:-10}
  VARIANTS=${VARIANTS:-"faithful exact composed resampled"}
  KEEP=(--keep-digital)   # every layer on the IMC macro
  AUG=(--no-augment)
else
  # ResNet-20 at level 10 kept improving for 6-7 fine-tuning epochs (docs/RESULTS.md, CIFAR-10)
  ARCH=${ARCH:-resnet20}; IMPL=${IMPL:-fast}; EPOCHS_FLOAT=${EPOCHS_FLOAT:-15}; EPOCHS_CONV=${EPOCHS_CONV:-4}; EPOCHS_FT=${EPOCHS_FT:-6}
  VARIANTS=${VARIANTS:-faithful}
  KEEP=(--keep-digital first)   # normalised RGB input is signed: the first conv stays digital
  AUG=()
fi
COMMON=(--arch "$ARCH" --data "$DS" --data-dir "$DATA" --batch-size 128 --optimizer adam --device "$DEVICE"
        "${KEEP[@]}" "${AUG[@]}")
[ -n "${WIDTH:-}" ] && COMMON+=(--width "$WIDTH")
[ -n "${EXTRA:-}" ] && read -r -a EXTRA_ARGS <<< "$EXTRA" && COMMON+=("${EXTRA_ARGS[@]}")
[ -n "${TRAIN_SUBSET:-}" ] && COMMON+=(--train-subset "$TRAIN_SUBSET")
[ -n "${TEST_SUBSET:-}" ] && COMMON+=(--test-subset "$TEST_SUBSET")
source "$(dirname "$0")/lib.sh"

run float        --recipe float        --epochs "$EPOCHS_FLOAT" --lr 2e-3
run conventional --recipe conventional --epochs "$EPOCHS_CONV"  --lr 1e-3 --init-from "$OUT/float"
FT=(--epochs "$EPOCHS_FT" --lr 5e-4 --init-from "$OUT/conventional")
run ddhr            --recipe ddhr  --level "$LEVEL" --chip-seed 0 --impl fast "${FT[@]}"
for v in $VARIANTS; do run "sddhr-$v" --recipe sddhr --level "$LEVEL" --variant "$v" "${FT[@]}"; done
for s in $NOISE_STDS; do run "noise-$s" --recipe noise --noise-std "$s" "${FT[@]}"; done

# pick the noise strength by accuracy at LEVEL on tuning chips
BEST=$(pick_noise "$LEVEL" $NOISE_STDS -- ${TEST_SUBSET:+--test-subset "$TEST_SUBSET"} --device "$DEVICE")
echo "== tuned noise baseline: $BEST"
"$SDDHR" compare "$OUT/conventional" "$OUT/ddhr" $(for v in $VARIANTS; do echo "$OUT/sddhr-$v"; done) "$OUT/$BEST" \
  --names conventional ddhr $(for v in $VARIANTS; do echo "sddhr-$v"; done) "$BEST" \
  --levels 1 2 4 6 8 10 --instances "$INSTANCES" --impl "$IMPL" ${TEST_SUBSET:+--test-subset "$TEST_SUBSET"} \
  --device "$DEVICE" --out "$OUT/compare"
"$SDDHR" report "$OUT/compare" --title "$DS $ARCH, mram-22nm ${EXTRA:-4b/4b}, S-DDHR trained at level $LEVEL"

# fast chips: check them against bit-true chips on a few chips at two levels
if [ "$IMPL" = fast ] && [ "${CHECK_CHIPS:-3}" -gt 0 ]; then
  "$SDDHR" compare "$OUT/conventional" $(for v in $VARIANTS; do echo "$OUT/sddhr-$v"; done) \
    --names conventional $(for v in $VARIANTS; do echo "sddhr-$v"; done) \
    --levels 4 "$LEVEL" --instances "${CHECK_CHIPS:-3}" --impl bit_true ${TEST_SUBSET:+--test-subset "$TEST_SUBSET"} \
    --device "$DEVICE" --out "$OUT/compare-bit-true"
fi
