#!/usr/bin/env bash
# Peak resident memory of a run over the whole GLUE SST-2 training set (train + dev of
# datasets/sst2_glue, 67,349 phrases) against a tenth of it, with the same spec
# (experiments/benchmarks/memory_67k.toml). Prints one line per pool size; RELIABILITY.md has
# the figures. Needs the default encoder (scripts/fetch-models.sh); ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
glue=datasets/sst2/raw/glue_alps
mkdir -p "$work/sst2_67k"
{ cat "$glue/train.tsv"; tail -n +2 "$glue/dev.tsv"; } > "$work/sst2_67k/train.tsv"
cp "$glue/test.tsv" "$work/sst2_67k/test.tsv"
cat > "$work/sst2_67k/dataset.toml" <<TOML
name = "sst2_67k"
description = "GLUE SST-2 train + dev (ALPS split) as one pool; test = GLUE dev"
task = "classification"
[format]
kind = "tsv"
header = true
text = "sentence"
label = "label"
[files]
train = "train.tsv"
test = "test.tsv"
[labels]
names = ["negative", "positive"]
TOML
echo "pool rows: $(($(wc -l < "$work/sst2_67k/train.tsv") - 1))"
for limit in 6735 0; do
  /usr/bin/time -v "$target/release/freeal-bench" run experiments/benchmarks/memory_67k.toml \
    --set "dataset=\"$work/sst2_67k/dataset.toml\"" --set "data.train_limit=$limit" \
    --set "run.results_dir=\"$work/results-$limit\"" --backend cpu \
    > "$work/out-$limit.txt" 2> "$work/time-$limit.txt"
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time-$limit.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time-$limit.txt")
  pool=$(grep -o '"train": [0-9]*' "$work"/results-$limit/memory_67k/cells/*/split.json | head -1 | grep -o '[0-9]*$')
  echo "pool $pool: peak RSS $((rss_kb / 1024)) MiB, wall $wall"
done
