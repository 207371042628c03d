#!/usr/bin/env bash
# Side-by-side benchmark: the same workloads in PyTorch (bench/pytorch_reference.py) and in
# preimage, on the same rendered images, then the table with the ratio preimage/PyTorch.
#   bench/compare.sh [OUT_DIR] [--device cuda] [--only decoder_step,...]
# PYTHON (default python3) must have torch and torchvision; PREIMAGE (default the release
# binary) is built with `cargo build --release` (add `--features cuda` for --device cuda).
set -euo pipefail
out=${1:-bench/results}; shift || true
py=${PYTHON:-python3}
bin=${PREIMAGE:-target/release/preimage}
mkdir -p "$out"
data="$out/render-1024"
[ -d "$data" ] || "$bin" render --out "$data" --count 1024 --size 64 --seed 0 >/dev/null
threads=$(nproc)
if "$py" -c "import torch, torchvision" 2>/dev/null; then
  "$py" bench/pytorch_reference.py --json "$out/pytorch.json" --data "$data" --threads "$threads" "$@"
  ref=(--pytorch "$out/pytorch.json")
else
  echo "note: $py has no torch/torchvision; timing preimage alone" >&2
  ref=()
fi
"$bin" bench --data "$data" --json "$out/preimage.json" "${ref[@]}" "$@" | tee "$out/table.txt"
