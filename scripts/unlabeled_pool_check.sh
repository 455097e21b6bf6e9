#!/usr/bin/env bash
# Checks on real models that a pool read without its labels (files.train_unlabeled = true) is
# labelled exactly as the same pool read with gold: gold may score a FreeAL cell, never steer it.
# Runs a FreeAL cell on a dataset's pool as published, then on its texts alone (written to
# WORKDIR with a definition that reads them unlabeled), and compares every round's labels, clean
# flags (and, for classification, posteriors and SLM predictions) and the handed-back pool file.
# The second run's LLM answers come from the first's cache. Usage:
#   scripts/unlabeled_pool_check.sh WORKDIR [--ner] [--set key=value ...]
# Default: the quick start's cell (experiments/sst2.toml) on SST-2. --ner: the CoNLL-2003 FreeAL
# cell of experiments/paper/ner.toml, seed 1 (pool read from its token column alone).
# Arguments after WORKDIR (and --ner) go to both runs (e.g. --set run.llm.cache='"/path/db"').
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 WORKDIR [--ner] [--set key=value ...]" >&2
  exit 2
fi
work=$(mkdir -p "$1" && cd "$1" && pwd)
shift
ner=false
if [ "${1:-}" = "--ner" ]; then
  ner=true
  shift
fi
root=$(cd "$(dirname "$0")/.." && pwd)
if $ner; then
  dataset=conll03
  # "token POS chunk tag" per line: keep the token (blank and -DOCSTART- lines stay as they are).
  cut -d' ' -f1 "$root/datasets/conll03/raw/eng.train" > "$work/pool.txt"
  spec=experiments/paper/ner.toml
  cells='*-freeal_ner-s1'
  method=freeal_ner
  pool_file=pool_labels.conll
  # labels_round<r>.csv: index,exact,clean,tags,gold; exact and gold need gold.
  keep=1,3,4
else
  dataset=sst2
  # stsa.binary.train is "<label> <sentence>" per line: keep the sentence.
  cut -d' ' -f2- "$root/datasets/sst2/raw/stsa_binary/stsa.binary.train" > "$work/pool.txt"
  spec=experiments/sst2.toml
  cells='*-freeal-*'
  method=freeal
  pool_file=pool_labels.csv
  # labels_round<r>.csv: column 2 is gold.
  keep=1,3-
fi
# The definition keeps the dataset's name, so that the run finds configs/prompts/<name>.toml as
# the labelled cell does.
sed -e 's|^train = .*|train = "pool.txt"\ntrain_unlabeled = true|' \
    -e "s|= \"raw/|= \"$root/datasets/$dataset/raw/|" \
    "$root/datasets/$dataset/dataset.toml" > "$work/dataset.toml"
cd "$root"
run() {
  cargo run --release -- "$spec" --only "$cells" --set run.results_dir="\"$work/results\"" "$@"
}
run --set experiment.name='"labeled"' --set "sweep.dataset=[\"$dataset\"]" "$@"
run --set experiment.name='"unlabeled"' --set "sweep.dataset=[\"$work/dataset.toml\"]" "$@"
labeled=$(ls -d "$work"/results/labeled/cells/*/)
unlabeled=$(ls -d "$work"/results/unlabeled/cells/*/)
status=0
for file in "$labeled"labels_round*.csv; do
  name=$(basename "$file")
  if cmp -s <(cut -d, -f"$keep" "$file") <(cut -d, -f"$keep" "$unlabeled$name"); then
    echo "$name: the same labels and clean flags (columns $keep)"
  else
    echo "$name: DIFFERS"
    status=1
  fi
done
if cmp -s "$labeled/$pool_file" "$unlabeled/$pool_file"; then
  echo "$pool_file: identical ($(wc -l < "$labeled/$pool_file") lines)"
else
  echo "$pool_file: DIFFERS"
  status=1
fi
for dir in labeled unlabeled; do
  echo "$dir: $(grep "^| $method " "$work/results/$dir/summary.md") ($(grep -m1 '(%' "$work/results/$dir/summary.md"))"
done
exit $status
