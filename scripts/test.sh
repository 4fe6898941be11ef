#!/usr/bin/env bash
# Installs what the tests need (the package, the official PyTorch reference for the parity
# tests, test tools) and runs the whole test suite. Used by the README and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# torch 2.13.0 (CPU) first, so funasr's unpinned torch requirement cannot pull a CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[reference,test,bench,eval]"

# Headless Chromium for the published-site test (tests/test_bench_site.py skips, saying why, without it).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
        || echo "scripts/test.sh: could not install chromium with apt-get" >&2
fi

# MLX's Linux CPU wheel links a reference BLAS: build the OpenBLAS shim (scipy-openblas32 dependency,
# funasr_nano/runtime/blas.py) now, so every later `import funasr_nano` loads it without compiling
# (tests/test_blas.py checks that it happened).
funasr-nano blas build || echo "scripts/test.sh: no BLAS shim (see above); MLX keeps a system OpenBLAS or its reference BLAS" >&2

# Lint (pyproject.toml [tool.ruff]): pyflakes and syntax errors, whole tree.
python -m ruff check .

exec python -m pytest -q tests "$@"
