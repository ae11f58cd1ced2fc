#!/usr/bin/env bash
# Installs NVIDIA's NVRTC runtime compiler (CUDA 13) from PyPI into $REPO/.venv-nvrtc, without a
# CUDA toolkit or a GPU, and prints the directory holding libnvrtc.so* on its last line of stdout.
#
#   export LD_LIBRARY_PATH="$(bash crates/cuda/scripts/install-nvrtc.sh | tail -n1):$LD_LIBRARY_PATH"
#   cargo test -p diffusion-cuda --features cuda kernels_compile_with_nvrtc
#
# NVRTC_VERSION pins the wheel: 13.0.x matches the cudarc bindings (cuda-13000) and emits the
# oldest CUDA-13 PTX ISA, which every CUDA 13 driver can load. Idempotent: a second run reuses the venv.
set -euo pipefail

NVRTC_VERSION="${NVRTC_VERSION:-13.0.88}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
VENV="$REPO/.venv-nvrtc"

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -m pip show "nvidia-cuda-nvrtc" 2>/dev/null | grep -qx "Version: $NVRTC_VERSION"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
fi

# The wheel puts the libraries under site-packages/nvidia/cu13/lib (older wheels: nvidia/cuda_nvrtc/lib).
LIB="$(find "$VENV" -name 'libnvrtc.so*' ! -name '*builtins*' -printf '%h\n' | sort -u | head -n1)"
if [[ -z "$LIB" ]]; then
    echo "install-nvrtc: no libnvrtc.so* found under $VENV" >&2
    exit 1
fi
# cudarc dlopens the names libnvrtc.so and libnvrtc.so.13; the wheel ships only the versioned file.
if [[ ! -e "$LIB/libnvrtc.so" ]]; then
    target="$(cd "$LIB" && ls libnvrtc.so.* | grep -v builtins | sort | head -n1)"
    ln -sf "$target" "$LIB/libnvrtc.so"
fi
if ! ls "$LIB"/libnvrtc-builtins.so* >/dev/null 2>&1; then
    echo "install-nvrtc: warning: libnvrtc-builtins.so* is missing next to libnvrtc (NVRTC needs it)" >&2
fi
echo "$LIB"
