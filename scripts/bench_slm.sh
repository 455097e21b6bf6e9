#!/usr/bin/env bash
# SLM throughput, burn (this crate) and PyTorch side by side on the same machine in one run.
# Needs a Python environment with torch and transformers: PYTHON=/path/to/python (default
# /tmp/refvenv/bin/python, made with `python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip
# install torch transformers`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/tmp/refvenv/bin/python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freeal-bench/target}"
echo "== burn (freeal-bench)"
cargo bench --bench slm_throughput 2>/dev/null | tee /tmp/bench_burn.txt
echo "== PyTorch"
"$PYTHON" scripts/bench_slm_torch.py | tee /tmp/bench_torch.txt
echo "== ratio burn / PyTorch (examples/s)"
paste <(grep -E '^(train|embed)' /tmp/bench_burn.txt) <(grep -E '^(train|embed)' /tmp/bench_torch.txt) \
  | awk -F'\t' '{split($1,a,":"); split(a[2],b," "); split($2,c,":"); split(c[2],d," "); printf "%s: %.2fx\n", a[1], b[1]/d[1]}'
