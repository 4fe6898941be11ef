#!/usr/bin/env bash
# The README's main command: benchmark this machine with the quick asv suite.
#
#   bash scripts/quick_bench.sh            # install what is needed, run, print the table + chart paths
#   bash scripts/quick_bench.sh --dry-run  # same, but asv saves nothing
#   FUNASR_NANO_MODEL=/path/to/Fun-ASR-Nano-2512 bash scripts/quick_bench.sh   # a real checkpoint
#
# Steps: (1) `pip install -e .[bench]` (asv 0.6.6, matplotlib) into
# the current interpreter, or into ./.venv when the system Python refuses pip (PEP 668).
# (2) `python -m funasr_nano.bench.quick "$@"` (= `funasr-nano bench`): machine fingerprint,
# synthetic real-shaped checkpoint (written once to ~/.cache/funasr_nano), asv run on the quick
# selection, results in results/<machine>/, asv publish (.asv/html), table + charts (results/report).
# On Linux, MLX's CPU backend gets OpenBLAS from the scipy-openblas32 dependency (funasr_nano/runtime/blas.py,
# preloaded into the benchmark processes); the results record which BLAS ran.
# Extra arguments go to `funasr-nano bench` (see `funasr-nano bench --help`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
t0=$(date +%s)

say() { printf '[quick_bench] %s\n' "$*"; }

# --- 1. the package with the bench extra --------------------------------------------------------------
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    say "error: $PY has no pip"; exit 4
fi
say "pip install -e .[bench] ($("$PY" -c 'import sys; print(sys.executable)'))"
if ! "$PY" -m pip install -q --disable-pip-version-check -e ".[bench]" 2>/tmp/quick_bench_pip.$$; then
    if grep -q "externally-managed" /tmp/quick_bench_pip.$$; then
        say "system Python refuses pip (PEP 668): using ./.venv"
        [ -x .venv/bin/python ] || "$PY" -m venv .venv
        PY="$PWD/.venv/bin/python"
        "$PY" -m pip install -q --disable-pip-version-check -e ".[bench]"
    else
        cat /tmp/quick_bench_pip.$$ >&2; rm -f /tmp/quick_bench_pip.$$; exit 4
    fi
fi
rm -f /tmp/quick_bench_pip.$$
say "installed in $(( $(date +%s) - t0 )) s"

# --- 2. the quick suite -------------------------------------------------------------------------------------
set +e
"$PY" -m funasr_nano.bench.quick "$@"
rc=$?
set -e
say "total wall time $(( $(date +%s) - t0 )) s (exit status $rc)"
exit $rc
