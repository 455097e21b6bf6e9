#!/usr/bin/env bash
# The Slurm test: a small sweep run twice, once locally and once as a Slurm job array on a
# single-node cluster started on this machine (scripts/slurm-local.sh), then the two summary
# tables must be byte-identical.
#
#   sudo apt-get install -y slurm-wlm munge
#   scripts/fetch-models.sh            (the default SLM)
#   scripts/slurm-test.sh
#
# The sweep (scripts/slurm-test.toml): SST-2 subsampled to 64 training / 64 test sentences,
# supervised and FreeAL (simulated annotator) x 2 seeds, two SLM epochs each, plus a method that
# fails on purpose (2 cells) so the report of missing cells is checked too. Both runs
# use one CPU thread per cell, so float reductions happen in the same order.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/freeal-bench
SPEC=$ROOT/scripts/slurm-test.toml
WORK=$(mktemp -d /tmp/freeal-slurm-test.XXXXXX)
eval "$(scripts/slurm-local.sh start)"
trap 'scripts/slurm-local.sh stop' EXIT

echo "== local run -> $WORK/local"
# Exit 1: the broken cells fail (the others still run).
RAYON_NUM_THREADS=1 "$BIN" "$SPEC" --set "run.results_dir=\"$WORK/local\"" >/dev/null || true

echo "== Slurm array -> $WORK/slurm"
# The LLM cache in sharded mode, as on a cluster sharing it over NFS: each task writes its own
# shard, report merges those of complete cells.
SETS=(--set "run.results_dir=\"$WORK/slurm\"" --set run.slurm.cpus_per_task=1 --set 'run.slurm.mem="2G"'
      --set 'run.slurm.time="00:20:00"' --set run.llm.cache_shards=true --set "run.llm.cache=\"$WORK/cache.sqlite\"")
"$BIN" plan "$SPEC" --emit slurm "${SETS[@]}"
SCRIPT=$WORK/slurm/slurm_test/slurm/submit.sh
# --wait returns non-zero when a task failed: the broken cells do.
sbatch --wait "$SCRIPT" || true
"$BIN" report "$WORK/slurm/slurm_test" | tee "$WORK/report.txt"
# The failed cells are listed with their Slurm log and the command that reruns them.
grep -q "missing: sst2-broken-s1 (failed: " "$WORK/report.txt"
grep -q "log: $WORK/slurm/slurm_test/slurm/logs/.*\.log" "$WORK/report.txt"
grep -q "rerun: freeal-bench run-cell $SPEC --set .* --cell " "$WORK/report.txt"
# Shards of complete cells were merged and removed; the two failed cells' remain.
test -f "$WORK/cache.sqlite"
test "$(ls "$WORK/cache.sqlite.shards" | grep -c '\.sqlite$')" -eq 2

echo "== compare"
for f in summary.csv summary.md; do
    cmp "$WORK/local/slurm_test/$f" "$WORK/slurm/slurm_test/$f"
done
# Emitting again resubmits only the two failed cells.
AGAIN=$("$BIN" plan "$SPEC" --emit slurm "${SETS[@]}")
grep -q "^2 array tasks" <<<"$AGAIN"
cat "$WORK/slurm/slurm_test/summary.md"
echo "PASS: the Slurm array's table equals the local run's ($WORK)"
