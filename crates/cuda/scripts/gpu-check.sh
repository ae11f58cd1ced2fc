#!/usr/bin/env bash
# The GPU checks of diffusion-cuda as one script, for a lent GPU machine that has no Rust.
#   bash crates/cuda/scripts/gpu-check.sh prepare   # here: build the test and bench binaries into .gpu/
#   bash crates/cuda/scripts/gpu-check.sh run       # there: run them (DIFFUSION_REQUIRE_GPU=1), then time
#                                                   # (GPU_CHECK_TESTS_ONLY=1: the tests alone)
# `run` finds libnvrtc and libcublas in a CUDA toolkit or in pip's nvidia-* wheels, writes logs
# to $OUT (when set) and prints a short summary last.
set -uo pipefail
cd "$(dirname "$0")/../../.."
BIN=.gpu

prepare() {
    set -e
    rm -rf "$BIN" && mkdir -p "$BIN"
    cargo build -q --release -p diffusion-cuda --features cuda --example gpu_bench --example kernels_check
    cp target/release/examples/gpu_bench target/release/examples/kernels_check "$BIN/"
    cargo test -q -p diffusion-cuda --features cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])' |
        while read -r name exe; do cp "$exe" "$BIN/test-$name"; done
    strip "$BIN"/*
    ls -la "$BIN"
}

run() {
    local out=${OUT:-/tmp/gpu-check}
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
    local dirs
    dirs=$( (ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null
             find / -xdev \( -name 'libnvrtc.so*' -o -name 'libcublas.so*' \) -path '*nvidia*' 2>/dev/null |
                 xargs -r -n1 dirname) | sort -u | paste -sd:)
    export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    export DIFFUSION_REQUIRE_GPU=1 DIFFUSION_REQUIRE_NVRTC=1
    local status=0 t
    for t in "$BIN"/test-*; do
        echo "== $t"
        if ! "$t" --nocapture --test-threads=1 >"$out/$(basename "$t").log" 2>&1; then status=1; fi
        grep -E "relative|test result|FAILED|panicked|SKIP|error" "$out/$(basename "$t").log" | head -60
    done
    if [ -n "${GPU_CHECK_TESTS_ONLY:-}" ]; then return $status; fi
    echo "== registers and spills (ptxas -v, sm_90)"
    mkdir -p /tmp/ptx; export PATH="$PATH:/usr/local/cuda/bin"
    if "$BIN/kernels_check" /tmp/ptx >/dev/null && command -v ptxas >/dev/null; then
        for f in /tmp/ptx/*.ptx; do ptxas -arch=sm_90 -v "$f" -o /dev/null 2>&1; done |
            tee /tmp/ptxas.txt >/dev/null
        grep -E -A3 "entry function 'lincomb" /tmp/ptxas.txt | grep -E "entry|Used|spill"
        echo "kernels with spills: $(grep -cE '[1-9][0-9]* bytes spill' /tmp/ptxas.txt)"
    fi
    echo "== gpu_bench"
    "$BIN/gpu_bench" "${GPU_BENCH_ELEMENTS:-268435456}" 2>&1 | tee "$out/gpu_bench.txt" || status=1
    echo "== PyTorch eager on the same GPU"
    for model in dit-tiny unet-small; do
        python3 crates/cuda/scripts/torch_gpu.py --model $model 2>&1 | tee -a "$out/gpu_bench.txt" || status=1
    done
    for model in dit-tiny unet-small; do
        python3 crates/cuda/scripts/torch_gpu.py --model $model --train 2>&1 | tee -a "$out/gpu_bench.txt" || status=1
    done
    return $status
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
