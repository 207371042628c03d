#!/usr/bin/env bash
# Section-5 quality numbers of the optimization commands on held-out rendered images
# (a fresh render with another seed, so none was seen in training).
#   bench/optimize_quality.sh RUN_DIR [DECODER_RUN_DIR] [COUNT]
# RUN_DIR: a posenet train-encoder run; DECODER_RUN_DIR: a train-decoder run (refiner).
set -euo pipefail
RUN=${1:?posenet run folder}
DEC=${2:-}
COUNT=${3:-20}
P=${PREIMAGE:-target/release/preimage}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
$P render --out "$W/held" --count "$COUNT" --size 64 --seed 777 >/dev/null
mapfile -t IMGS < <(find "$W/held" -name '*.png' | sort)
mapfile -t CLASSES < <(tail -n +2 "$W/held/classes.csv" | cut -d, -f1)
nc=${#CLASSES[@]}

echo "== M&V baseline (noise init, invert preset) =="
for L in conv3 conv5; do
  for i in "${!IMGS[@]}"; do
    $P invert --encoder posenet --run "$RUN" --layer "$L" --image "${IMGS[$i]}" --out "$W/inv.png" --seed "$i" --quiet
  done | awk -v L="$L" '{e=$8; s=$NF; sub(/\)/,"",s); n++; t+=e; r+=s; if (e<=0.1) ok++} END {printf "%s: mean feature error %.4f (squared, M&V), mean relative %.4f, %d/%d images ≤ 0.1\n", L, t/n, r/n, ok, n}'
done

echo "== transform (class target, content + TV + similarity, transform preset) =="
for i in "${!IMGS[@]}"; do
  img=${IMGS[$i]}
  cls=$(basename "$(dirname "$img")")
  for j in "${!CLASSES[@]}"; do [[ ${CLASSES[$j]} == "$cls" ]] && k=$(( (j + 1) % nc )); done
  $P transform --encoder posenet --run "$RUN" --image "$img" --class "${CLASSES[$k]}" --out "$W/tr.png" --seed "$i" --quiet
done | tee "$W/tr.log" | awk '{after=$7; target=$11; sub(/,/,"",target); ssim=$NF; n++; if (after==target) hit++; if (after==target && ssim>=0.5) both++; s+=ssim} END {printf "%d/%d reach the target class, %d/%d with SSIM ≥ 0.5; mean SSIM %.3f\n", hit, n, both, n, s/n}'

if [[ -n $DEC ]]; then
  L=$(python3 -c "import json,sys; print(json.load(open('$DEC/decoder.json'))['tap'])")
  echo "== refiner (--init decoder:$DEC) at $L =="
  for i in "${!IMGS[@]}"; do
    $P invert --encoder posenet --run "$RUN" --layer "$L" --image "${IMGS[$i]}" --init "decoder:$DEC" --out "$W/ref.png" --seed "$i" --quiet
  done | awk '/^start/ {d=$7; sd+=d} /^wrote/ {e=$8; se+=e; n++; if (e<d) lower++} END {printf "decoder alone: mean feature error %.4f; refined: %.4f; lower for %d/%d images\n", sd/n, se/n, lower, n}'
fi
