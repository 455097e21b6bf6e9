#!/usr/bin/env bash
# SLM throughput, burn (this crate) and PyTorch side by side on the same machine in one run.
# Needs a Python environment with torch and transformers: PYTHON=/path/to/python (default
# /tmp/refvenv/bin/python, made with `python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip
# install torch transformers`). With a libtorch from scripts/fetch-libtorch.sh, burn's libtorch
# backend is measured as well.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/tmp/refvenv/bin/python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freeal-bench/target}"
echo "== burn (freeal-bench)"
cargo bench --bench slm_throughput 2>/dev/null | tee /tmp/bench_burn.txt
# burn's libtorch backend too, where scripts/fetch-libtorch.sh has put a libtorch.
LIBTORCH_DIR="${FREEAL_BENCH_LIBTORCH:-$HOME/.cache/freeal-bench/libtorch-2.9.0}"
if [ -f "$LIBTORCH_DIR/.complete" ]; then
  echo "== burn, libtorch backend (freeal-bench --features tch)"
  LIBTORCH="$LIBTORCH_DIR" LIBTORCH_CXX11_ABI=1 LD_LIBRARY_PATH="$LIBTORCH_DIR/lib" \
    FREEAL_BENCH_BACKEND=libtorch cargo bench --features tch --bench slm_throughput 2>/dev/null \
    | tee /tmp/bench_burn_libtorch.txt
fi
echo "== PyTorch"
"$PYTHON" scripts/bench_slm_torch.py | tee /tmp/bench_torch.txt
ratio() { # burn-output
  paste <(grep -E '^(train|embed)' "$1") <(grep -E '^(train|embed)' /tmp/bench_torch.txt) \
    | awk -F'\t' '{split($1,a,":"); split(a[2],b," "); split($2,c,":"); split(c[2],d," "); printf "%s: %.2fx\n", a[1], b[1]/d[1]}'
}
echo "== ratio burn (flex) / PyTorch (examples/s)"
ratio /tmp/bench_burn.txt
if [ -f "$LIBTORCH_DIR/.complete" ]; then
  echo "== ratio burn (libtorch) / PyTorch (examples/s)"
  ratio /tmp/bench_burn_libtorch.txt
fi
