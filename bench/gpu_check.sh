#!/usr/bin/env bash
# On the GPU machine, in the repository root with .gpu/bundle.tar.xz (bench/gpu_pack.sh):
# the whole test suite of the CUDA build (tests/cuda.rs on the GPU, the rest as on any
# machine), then the benchmark with --device cuda next to PyTorch CUDA (bench/compare.sh).
# Logs and JSON go to $OUT (default gpu-out/).
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
root=$PWD
nvidia-smi -L | tee "$out/gpu.txt"
python3 -c "import tarfile; tarfile.open('.gpu/bundle.tar.xz').extractall('.gpu')"
mkdir -p target/release && cp .gpu/bins/preimage target/release/preimage
# The test executables name the repository and the fixtures by the paths they had where
# they were built (/work/main, /work/shared); point those at this checkout.
if [ "$root" != /work/main ]; then mkdir -p /work && ln -sfn "$root" /work/main; fi
mkdir -p /work/shared && [ -e /work/shared/fixtures ] || ln -sfn "$root/.gpu/fixtures" /work/shared/fixtures
cd /work/main
# CPU-side suites in the background while the GPU suite runs.
( for t in .gpu/bins/*; do
    n=$(basename "$t"); case $n in preimage|cuda) continue;; esac
    echo "== $n"; timeout 300 "$t" --test-threads 8 2>&1 | grep -E "^test result|FAILED|panicked|failures:" ; echo "rc $n ${PIPESTATUS[0]}"
  done > "$out/tests_cpu.log" 2>&1 ) &
cpu=$!
echo "== cuda"; timeout 240 .gpu/bins/cuda --test-threads 1 2>&1 | tee "$out/tests_cuda.log" | tail -20
echo "rc cuda ${PIPESTATUS[0]}"
wait $cpu
cat "$out/tests_cpu.log"
PREIMAGE=target/release/preimage timeout 240 bash bench/compare.sh /tmp/gpu-bench --device cuda 2>&1 | tail -30
cp /tmp/gpu-bench/*.json /tmp/gpu-bench/table.txt "$out/" 2>/dev/null
