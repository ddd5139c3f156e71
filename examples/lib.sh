# Shared by examples/headline.sh and examples/cifar10_cpu.sh (sourced; expects SDDHR, OUT, COMMON).

# run NAME ARGS...: one `sddhr train` into $OUT/NAME (resumes a stopped run), timed
run() { local name=$1; shift; echo "== $name"; /usr/bin/time -f "   $name: %e s" "$SDDHR" train "${COMMON[@]}" --out "$OUT/$name" --resume "$@"; }

# pick_noise LEVEL STD... [-- COMPARE_FLAGS...]: the noise-STD model with the best mean accuracy at
# LEVEL on 5 tuning chips (seeds 500..504, disjoint from the test chips); prints its name
pick_noise() {
  local level=$1; shift; local stds=() flags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do stds+=("$1"); shift; done
  [ $# -gt 0 ] && shift && flags=("$@")
  "$SDDHR" compare $(for s in "${stds[@]}"; do echo "$OUT/noise-$s"; done) \
    --names $(for s in "${stds[@]}"; do echo "noise-$s"; done) \
    --levels "$level" --instances 5 --first-seed 500 --impl fast "${flags[@]}" \
    --out "$OUT/noise-tuning" > "$OUT/noise-tuning.txt"
  python3 - "$OUT/noise-tuning/results.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(max(doc["summary"], key=lambda s: s["mean"])["model"])
PY
}
