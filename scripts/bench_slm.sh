#!/usr/bin/env bash
# SLM throughput, burn (this crate) and PyTorch side by side on the same machine in one run.
# Needs a Python environment with torch and transformers: PYTHON=/path/to/python (default
# /tmp/refvenv/bin/python, made with `python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip
# install torch transformers`). With a libtorch from scripts/fetch-libtorch.sh, burn's libtorch
# backend is measured as well.
#
#   scripts/bench_slm.sh          CPU: burn flex with and without the fused kernels (and
#                                 libtorch) against PyTorch on the CPU
#   scripts/bench_slm.sh --gpu    GPU: burn wgpu against PyTorch on CUDA, 40 timed steps
#
# MODEL_DIR (default: the fetched all-MiniLM-L6-v2) is read by both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/tmp/refvenv/bin/python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freeal-bench/target}"
MODELS_DIR="${FREEAL_BENCH_RUN__MODELS_DIR:-$HOME/.cache/freeal-bench/models}"
export FREEAL_BENCH_RUN__MODELS_DIR="$MODELS_DIR"
MODEL_DIR="$MODELS_DIR/all-MiniLM-L6-v2"

ratio() { # burn-output torch-output
  paste <(grep -E '^(train|embed)' "$1") <(grep -E '^(train|embed)' "$2") \
    | awk -F'\t' '{split($1,a,":"); split(a[2],b," "); split($2,c,":"); split(c[2],d," "); printf "%s: %.2fx\n", a[1], b[1]/d[1]}'
}

if [ "${1:-}" = "--gpu" ]; then
  # Six steps take a fraction of a second on a GPU: too short to time.
  export FREEAL_BENCH_TRAIN_STEPS=40
  echo "== burn, wgpu backend (freeal-bench)"
  FREEAL_BENCH_BACKEND=wgpu cargo bench --bench slm_throughput 2>/dev/null | tee /tmp/bench_burn_wgpu.txt
  echo "== PyTorch, CUDA"
  FREEAL_BENCH_TORCH_DEVICE=cuda "$PYTHON" scripts/bench_slm_torch.py "$MODEL_DIR" \
    | tee /tmp/bench_torch_cuda.txt
  echo "== ratio burn (wgpu) / PyTorch (CUDA) (examples/s)"
  ratio /tmp/bench_burn_wgpu.txt /tmp/bench_torch_cuda.txt
  exit 0
fi

echo "== burn (freeal-bench), flex with the fused kernels"
cargo bench --bench slm_throughput 2>/dev/null | tee /tmp/bench_burn.txt
echo "== burn (freeal-bench), flex with burn's own ops (--backend cpu_unfused)"
FREEAL_BENCH_BACKEND=cpu_unfused cargo bench --bench slm_throughput 2>/dev/null \
  | tee /tmp/bench_burn_unfused.txt
# burn's libtorch backend too, where scripts/fetch-libtorch.sh has put a libtorch.
LIBTORCH_DIR="${FREEAL_BENCH_LIBTORCH:-$HOME/.cache/freeal-bench/libtorch-2.9.0}"
if [ -f "$LIBTORCH_DIR/.complete" ]; then
  echo "== burn, libtorch backend (freeal-bench --features tch)"
  LIBTORCH="$LIBTORCH_DIR" LIBTORCH_CXX11_ABI=1 LD_LIBRARY_PATH="$LIBTORCH_DIR/lib" \
    FREEAL_BENCH_BACKEND=libtorch cargo bench --features tch --bench slm_throughput 2>/dev/null \
    | tee /tmp/bench_burn_libtorch.txt
fi
echo "== PyTorch"
"$PYTHON" scripts/bench_slm_torch.py "$MODEL_DIR" | tee /tmp/bench_torch.txt
echo "== ratio burn (flex, fused kernels) / PyTorch (examples/s)"
ratio /tmp/bench_burn.txt /tmp/bench_torch.txt
echo "== ratio burn (flex, burn's own ops) / PyTorch (examples/s)"
ratio /tmp/bench_burn_unfused.txt /tmp/bench_torch.txt
if [ -f "$LIBTORCH_DIR/.complete" ]; then
  echo "== ratio burn (libtorch) / PyTorch (examples/s)"
  ratio /tmp/bench_burn_libtorch.txt /tmp/bench_torch.txt
fi
