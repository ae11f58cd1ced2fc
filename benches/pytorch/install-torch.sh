#!/usr/bin/env bash
# Installs CPU-usable PyTorch (the PyPI wheel, ~3 GB with its CUDA libraries, which a CPU run
# never loads) into .venv-torch at the repository root, so `cargo xtask bench --torch` can time
# the reference networks in the same run as ours. Prints the venv's python on the last line.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv-torch"
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'torch==2.15.0' numpy >&2
fi
echo "$venv/bin/python"
