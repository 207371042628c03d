#!/usr/bin/env bash
# Side-by-side benchmark: the same workloads in PyTorch (bench/pytorch_reference.py) and in
# preimage, on the same rendered images, then the table with the ratio preimage/PyTorch.
#   bench/compare.sh [OUT_DIR] [--rounds N] [--threads N] [--device cuda] [--only decoder_step,...]
# PYTHON (default python3) must have torch and torchvision; PREIMAGE (default the release
# binary) is built with `cargo build --release` (add `--features cuda` for --device cuda).
# --rounds N (default 3) alternates the two programs workload by workload, N times, and keeps
# per side and workload the round with the median median (`preimage bench --table`): this
# machine's speed drifts by 20-40 % over minutes, which one PyTorch run followed by one preimage
# run turns into the ratio.
# --rounds 1 runs each program once over all workloads.
# --threads N (default: every core) sets both programs' CPU threads: PyTorch's --threads and
# preimage's thread pool (RAYON_NUM_THREADS); each table's head says what each program had.
set -euo pipefail
out=bench/results
if [ $# -gt 0 ] && [[ $1 != --* ]]; then out=$1; shift; fi
rounds=3 only="" threads=$(nproc) pass=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) pass+=("$1"); shift ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer, not '$rounds'" >&2; exit 2; }
[[ $threads =~ ^[1-9][0-9]*$ ]] || { echo "--threads must be a positive integer, not '$threads'" >&2; exit 2; }
export RAYON_NUM_THREADS=$threads
py=${PYTHON:-python3}
bin=${PREIMAGE:-target/release/preimage}
[ -x "$bin" ] || { echo "no preimage binary at $bin: build it with 'cargo build --release' (or set PREIMAGE)" >&2; exit 2; }
mkdir -p "$out"
data="$out/render-1024"
[ -d "$data" ] || "$bin" render --out "$data" --count 1024 --size 64 --seed 0 >/dev/null
# Every workload, in the bench's order (as `preimage bench` and pytorch_reference.py name them).
all=(decoder_step_a_512_to_64 decoder_step_b_fc6_to_227 encoder_forward_posenet_64 encoder_forward_alexnet_224
     encoder_forward_vgg16_224 optim_iteration_posenet_conv5 optim_iteration_alexnet_conv5
     optim_iteration_vgg16_conv5_3 decoder_forward_1_image
     extract_posenet_4_taps)
names=()
for n in "${all[@]}"; do
  keep=$([ -z "$only" ] && echo 1 || echo 0)
  IFS=, read -ra frags <<< "$only"
  for f in "${frags[@]}"; do [[ -n $f && $n == *"$f"* ]] && keep=1; done
  [ "$keep" = 1 ] && names+=("$n")
done
[ ${#names[@]} -gt 0 ] || { echo "--only '$only' matches no workload (workloads: ${all[*]})" >&2; exit 2; }
sel=$(IFS=,; echo "${names[*]}")
if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
  echo "note: $py has no torch/torchvision; timing preimage alone" >&2
  "$bin" bench --data "$data" --json "$out/preimage.json" --only "$sel" "${pass[@]}" | tee "$out/table.txt"
  exit 0
fi
if [ "$rounds" = 1 ]; then
  "$py" bench/pytorch_reference.py --json "$out/pytorch.json" --data "$data" --threads "$threads" --only "$sel" "${pass[@]}"
  "$bin" bench --data "$data" --json "$out/preimage.json" --pytorch "$out/pytorch.json" --only "$sel" "${pass[@]}" | tee "$out/table.txt"
  exit 0
fi
r="$out/rounds"; rm -rf "$r"; mkdir -p "$r"
for i in $(seq "$rounds"); do
  for n in "${names[@]}"; do
    echo "round $i/$rounds: $n" >&2
    "$py" bench/pytorch_reference.py --json "$r/pytorch.$i.$n.json" --data "$data" --threads "$threads" --only "$n" "${pass[@]}" >/dev/null
    "$bin" bench --data "$data" --json "$r/preimage.$i.$n.json" --only "$n" "${pass[@]}" >/dev/null 2>&1
  done
done
"$bin" bench --table "$r"/pytorch.*.json --json "$out/pytorch.json" >/dev/null
"$bin" bench --table "$r"/preimage.*.json --json "$out/preimage.json" --pytorch "$out/pytorch.json" | tee "$out/table.txt"
