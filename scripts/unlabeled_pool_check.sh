#!/usr/bin/env bash
# Checks on real models that a pool read without its labels (files.train_unlabeled = true) is
# labelled exactly as the same pool read with gold: gold may score a FreeAL cell, never steer it.
# Runs the quick start's FreeAL cell (experiments/sst2.toml) on SST-2's pool as published, then on
# its sentences alone (written to WORKDIR with a definition that reads them unlabeled), and
# compares every round's labels, clean flags, SLM predictions and the handed-back pool_labels.csv.
# The second run's LLM answers come from the first's cache. Usage:
#   scripts/unlabeled_pool_check.sh WORKDIR [--set key=value ...]
# Arguments after WORKDIR go to both runs (e.g. --set run.llm.cache='"/path/cache.sqlite"').
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 WORKDIR [--set key=value ...]" >&2
  exit 2
fi
work=$(mkdir -p "$1" && cd "$1" && pwd)
shift
root=$(cd "$(dirname "$0")/.." && pwd)
raw="$root/datasets/sst2/raw/stsa_binary"
# stsa.binary.train is "<label> <sentence>" per line: keep the sentence.
cut -d' ' -f2- "$raw/stsa.binary.train" > "$work/pool.txt"
# Named sst2 so that the run finds configs/prompts/sst2.toml, as the labelled cell does.
sed -e 's|^train = .*|train = "pool.txt"\ntrain_unlabeled = true|' \
    -e "s|= \"raw/|= \"$root/datasets/sst2/raw/|" \
    "$root/datasets/sst2/dataset.toml" > "$work/dataset.toml"
cd "$root"
run() {
  cargo run --release -- experiments/sst2.toml --only '*-freeal-*' \
    --set run.results_dir="\"$work/results\"" "$@"
}
run --set experiment.name='"labeled"' "$@"
run --set experiment.name='"unlabeled"' --set "sweep.dataset=[\"$work/dataset.toml\"]" "$@"
labeled=$(ls -d "$work"/results/labeled/cells/*/)
unlabeled=$(ls -d "$work"/results/unlabeled/cells/*/)
status=0
for file in "$labeled"labels_round*.csv; do
  name=$(basename "$file")
  # Column 2 is gold: filled in one, empty in the other.
  if cmp -s <(cut -d, -f1,3- "$file") <(cut -d, -f1,3- "$unlabeled$name"); then
    echo "$name: the same labels, clean flags, posteriors and SLM predictions"
  else
    echo "$name: DIFFERS"
    status=1
  fi
done
if cmp -s "$labeled/pool_labels.csv" "$unlabeled/pool_labels.csv"; then
  echo "pool_labels.csv: identical ($(($(wc -l < "$labeled/pool_labels.csv") - 1)) rows)"
else
  echo "pool_labels.csv: DIFFERS"
  status=1
fi
for dir in labeled unlabeled; do
  echo "$dir: $(grep '^| freeal ' "$work/results/$dir/summary.md") (test accuracy, %)"
done
exit $status
