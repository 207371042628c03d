#!/usr/bin/env bash
# Build the CUDA binary and test executables here and pack them for a GPU machine without
# Rust (bench/gpu_check.sh unpacks and runs them):  bash bench/gpu_pack.sh  → .gpu/bundle.tar.xz
# .gpu/ is git-ignored; carry it to the GPU machine with the working tree.
# Extra arguments name cargo features to build a binary each with (`bash bench/gpu_pack.sh
# cuda-gemm cuda-tune`), packed with its tests/cuda.rs as .gpu/variants/{preimage,cuda}-FEATURE in
# .gpu/variants.tar.xz, for bench/gpu_check.sh to test and time next to the plain one.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/variants
rm -f .gpu/variants/* .gpu/variants.tar.xz
for feature in "$@"; do
  cargo build --release --features "$feature"
  cp target/release/preimage ".gpu/variants/preimage-$feature" && strip ".gpu/variants/preimage-$feature"
  # That build's tests/cuda.rs too, so that the GPU machine checks its kernels' results.
  exe=$(cargo test --release --features "$feature" --test cuda --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["profile"]["test"]][-1])')
  cp "$exe" ".gpu/variants/cuda-$feature" && strip ".gpu/variants/cuda-$feature"
done
if [ $# -gt 0 ]; then XZ_OPT="-T2 -6" tar -C .gpu -cJf .gpu/variants.tar.xz variants; fi
rm -rf .gpu/variants
mkdir -p .gpu/bins
rm -f .gpu/bins/*
cargo build --release --features cuda
cargo test --release --features cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = m["target"]["name"] + {"lib": "-lib", "bin": "-bin"}.get(m["target"]["kind"][0], "")
        shutil.copy(m["executable"], os.path.join(".gpu/bins", name))
        print(name)'
cp target/release/preimage .gpu/bins/preimage
strip .gpu/bins/*
cp -r ../shared/fixtures .gpu/fixtures 2>/dev/null || true
XZ_OPT="-T2 -6" tar -C .gpu -cJf .gpu/bundle.tar.xz bins fixtures
rm -rf .gpu/bins .gpu/fixtures
ls -la .gpu
