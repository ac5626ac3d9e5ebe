#!/usr/bin/env bash
# Runs the tanh full-batch reproduction and prints the measured fractal dimension beside
# the paper's. Usage: [RESOLUTION=N] bash experiments/fractal/reproduce.sh [WORKERS] [OUT]
# (RESOLUTION overrides the file's 128 points per side; the time grows with its square).
set -euo pipefail
cd "$(dirname "$0")/../.."
workers=${1:-$(nproc)}
out=${2:-runs/fractal-tanh-fullbatch}
cargo build --quiet --bin tessera
sweep=experiments/fractal/tanh-fullbatch.yaml
if [ -n "${RESOLUTION:-}" ]; then
  sweep=$(mktemp --suffix .yaml)
  sed "s/^  resolution: .*/  resolution: $RESOLUTION/" experiments/fractal/tanh-fullbatch.yaml > "$sweep"
fi
start=$(date +%s)
./target/debug/tessera run "$sweep" --workers "$workers" --out "$out" --quiet
echo "took $(( $(date +%s) - start )) s with $workers workers"
./target/debug/tessera report "$out" | sed -n '/^fractal boundary/,$p'
python3 - "$out/fractal/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
d = s["pooled_dimension"]
print(f"measured {d:.3f} (median slope over {len(s['frames'])} frames) against the paper's 1.66 for tanh full-batch")
PY
echo "images: $out/fractal/frame-*.png"
