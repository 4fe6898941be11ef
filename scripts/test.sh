#!/usr/bin/env bash
# Installs what the tests need (the package, the official PyTorch reference for the parity
# tests, test tools) and runs the whole test suite. Used by the README and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# torch 2.13.0 (CPU) first, so funasr's unpinned torch requirement cannot pull a CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[reference,test,bench,eval]"

# MLX's Linux CPU wheel links a reference BLAS that is ~25x slower than OpenBLAS on matmuls.
# Results are identical either way; preloading OpenBLAS only makes the real-size tests faster.
source scripts/openblas.sh

exec python -m pytest -q tests "$@"
