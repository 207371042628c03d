#!/usr/bin/env bash
# On the GPU machine, in the repository root with .gpu/bundle.tar.xz (bench/gpu_pack.sh):
# tests/cuda.rs of the CUDA build on the GPU, then the benchmark with --device cuda next to
# PyTorch CUDA (bench/pytorch_reference.py). With .gpu/variants.tar.xz (builds with other
# features, `bash bench/gpu_pack.sh cuda-gemm cuda-tune`) each variant's tests/cuda.rs runs and
# the same workloads are timed with it (cuda-gemm: GEMM convolutions without tuning; cuda-tune
# and cuda-autotune: Burn's autotuning without and with fusion), one workload group per
# process so that a slow tuning pass costs one group.
# Time limits in seconds: CUDA_TEST_S (tests/cuda.rs), TORCH_S (PyTorch), AT_S (each variant's
# workload group), VT_S (each variant's tests/cuda.rs; 0 skips them), PL_S (the plain binary's
# bench; 0 skips it when there are variants).
# AT_LEVEL and AT_GROUPS: see below. CPU_SUITES=1 also runs every other test executable (they
# are the tests CI runs; they passed there before). Logs and JSON go to $OUT (default gpu-out/).
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
root=$PWD
nvidia-smi -L | tee "$out/gpu.txt"
python3 -c "
import tarfile, os
for t in ['bundle', 'variants']:
    p = f'.gpu/{t}.tar.xz'
    if os.path.exists(p): tarfile.open(p).extractall('.gpu')"
mkdir -p target/release && cp .gpu/bins/preimage target/release/preimage
# The test executables name the repository and the fixtures by the paths they had where
# they were built (/work/main, /work/shared); point those at this checkout.
if [ "$root" != /work/main ]; then mkdir -p /work && ln -sfn "$root" /work/main; fi
mkdir -p /work/shared && [ -e /work/shared/fixtures ] || ln -sfn "$root/.gpu/fixtures" /work/shared/fixtures
cd /work/main
if [ "${CPU_SUITES:-0}" = 1 ]; then
  for t in .gpu/bins/*; do
    n=$(basename "$t"); case $n in preimage|cuda) continue;; esac
    echo "== $n"; timeout 300 "$t" --test-threads 8 2>&1 | grep -E "^test result|FAILED|panicked|failures:" ; echo "rc $n ${PIPESTATUS[0]}"
  done > "$out/tests_cpu.log" 2>&1
  cat "$out/tests_cpu.log"
fi
echo "== cuda"; start=$(date +%s)
timeout "${CUDA_TEST_S:-200}" .gpu/bins/cuda --test-threads 1 2>&1 | tee "$out/tests_cuda.log" | tail -20
echo "rc cuda ${PIPESTATUS[0]} ($(( $(date +%s) - start )) s)"
b=/tmp/gpu-bench; mkdir -p $b
target/release/preimage render --out $b/render-1024 --count 1024 --size 64 --seed 0 >/dev/null
start=$(date +%s)
timeout "${TORCH_S:-120}" python3 bench/pytorch_reference.py --device cuda --json $b/pytorch.json --data $b/render-1024 --threads "$(nproc)" 2>&1 | tail -3
echo "pytorch: $(( $(date +%s) - start )) s"
run_bench() {  # binary tag seconds only
  local start=$(date +%s)
  timeout "$3" "$1" bench --device cuda --data $b/render-1024 --json "$out/$2.json" --pytorch $b/pytorch.json --only "$4" 2>&1 | tail -16
  echo "$2: rc ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s"
}
variants=$(ls .gpu/variants/preimage-* 2>/dev/null)
if [ -n "$variants" ]; then
  # AT_LEVEL: CubeCL's tuning effort (minimal, balanced = its default, extensive, full); the
  # tuner's choices are logged to $out/autotune.log. AT_GROUPS: the workload groups, each in
  # its own process of at most AT_S seconds (tuning results are cached under target/).
  printf '[autotune]\nlevel = "%s"\n[autotune.logger]\nlevel = "minimal"\nfile = "%s"\n' \
    "${AT_LEVEL:-balanced}" "$(realpath "$out")/autotune.log" > cubecl.toml
  for v in $variants; do
    tag=${v##*/preimage-}
    if [ "${VT_S:-150}" -gt 0 ] && [ -x ".gpu/variants/cuda-$tag" ]; then
      start=$(date +%s)
      PREIMAGE_BIN="$PWD/$v" timeout "${VT_S:-150}" ".gpu/variants/cuda-$tag" --test-threads 1 2>&1 | tee "$out/tests_cuda-$tag.log" | tail -8
      echo "rc cuda-$tag ${PIPESTATUS[0]} ($(( $(date +%s) - start )) s)"
    fi
    for g in ${AT_GROUPS:-decoder_step encoder_forward optim_iteration,decoder_forward,extract}; do
      run_bench "$v" "$tag-${g%%,*}" "${AT_S:-110}" "$g"
    done
  done
  rm -f cubecl.toml
  [ "${PL_S:-40}" -gt 0 ] && run_bench target/release/preimage plain-decoder "${PL_S:-40}" decoder_step
else
  run_bench target/release/preimage plain "${PL_S:-240}" ""
fi
cp $b/pytorch.json "$out/" 2>/dev/null
# Image decoding one batch ahead on its own thread (`batch::prefetched`) against decoding in turn
# (PREIMAGE_PREFETCH=0), on extraction, alternated twice; PREFETCH_AB=0 skips it.
if [ "${PREFETCH_AB:-1}" = 1 ]; then
  for i in 1 2; do for p in 1 0; do
    PREIMAGE_PREFETCH=$p timeout 60 target/release/preimage bench --device cuda --data $b/render-1024 --only extract --runs 9 2>&1 | grep '^extract_' | sed "s/^/prefetch=$p /"
  done; done | tee "$out/prefetch.log"
fi
