#!/bin/sh
# Evaluates the six shipped CamVid heads on the val split and compares their mIoU with PyTorch's
# (shared/models/camvid_r18-d8/README.md). Usage: scripts/eval_camvid.sh [CAMVID_VAL_DIR] [THREADS]
# Exit status 1 when any head is more than 0.1 point away.
set -eu
cd "$(dirname "$0")/.."
VAL=${1:-../shared/data/camvid/val}
THREADS=${2:-$(nproc)}
OUT=${OUT:-bench-out/eval}
mkdir -p "$OUT"
status=0
for pair in fcn:73.16 ann:72.76 ccnet:73.42 isanet:72.85 eanet:72.70 nonlocal:72.73; do
    head=${pair%%:*} ref=${pair#*:}
    ./segattn eval -q -t "$THREADS" -c "configs/camvid_r18-d8_$head.json" --dataset camvid --root "$VAL" \
        --json "$OUT/$head.json" > "$OUT/$head.txt"
    got=$(sed -n 's/^aAcc: [0-9.]*  mIoU: \([0-9.]*\) .*/\1/p' "$OUT/$head.txt")
    verdict=$(awk -v g="$got" -v r="$ref" 'BEGIN { d = g - r; if (d < 0) d = -d; print (d <= 0.1 ? "ok" : "OFF") }')
    printf '%-9s mIoU %6s  PyTorch %6s  %s\n' "$head" "$got" "$ref" "$verdict"
    [ "$verdict" = ok ] || status=1
done
exit $status
