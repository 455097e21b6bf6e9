#!/usr/bin/env bash
# How well FreeAL's clean/noisy split finds the wrong labels, per cell and round, from the
# cells' labels_round<r>.csv (gold, LLM label, clean flag). Usage:
#   scripts/split_quality.sh results/mr [results/mr_e30 ...]
# Columns: labelled examples, wrong labels among them, examples flagged noisy (labelled, not
# clean), the share of flagged labels that are wrong (vs the base rate of wrong labels), and the
# share of wrong labels the split flags (recall). A split no better than chance has
# flagged_wrong equal to base_wrong. loss_auroc: how well the loss the split saw tells wrong
# labels from right ones, threshold-free (the chance that a wrong label's loss exceeds a right
# one's, ties counting half; 0.5 = no signal for any split to find; "-" for files written
# before the loss column).
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 RESULTS_DIR..." >&2
  exit 2
fi
printf '%-20s %-36s %5s %8s %6s %7s %12s %10s %7s %10s\n' experiment cell round labelled wrong flagged flagged_wrong base_wrong recall loss_auroc
for dir in "$@"; do
  for file in "$dir"/cells/*/labels_round*.csv; do
    [ -e "$file" ] || continue
    cell=$(basename "$(dirname "$file")")
    round=$(basename "$file" .csv)
    round=${round#labels_round}
    awk -F, -v experiment="$(basename "$dir")" -v cell="$cell" -v round="$round" '
      NR == 1 { has_loss = ($7 == "loss"); next }  # index,gold,label,clean,clean_posterior,slm_pred,loss
      $2 == "" { no_gold = 1; next }   # an unlabeled pool (files.train_unlabeled): nothing to score
      $3 != "" {
        labelled++
        wrong_label = ($3 != $2)
        wrong += wrong_label
        if ($4 == 0) { flagged++; flagged_wrong += wrong_label }
        if (wrong_label) wrong_loss[wrong] = $7 + 0; else right_loss[labelled - wrong] = $7 + 0
      }
      END {
        if (no_gold) {
          printf "%-20s %-36s %5s (unlabeled pool: no gold to score the split against)\n", experiment, cell, round
          exit
        }
        auroc = "-"
        right = labelled - wrong
        if (has_loss && wrong && right) {
          above = 0
          for (w = 1; w <= wrong; w++)
            for (r = 1; r <= right; r++)
              above += (wrong_loss[w] > right_loss[r]) + 0.5 * (wrong_loss[w] == right_loss[r])
          auroc = sprintf("%.3f", above / (wrong * right))
        }
        printf "%-20s %-36s %5s %8d %6d %7d %12.3f %10.3f %7.3f %10s\n", experiment, cell, round,
          labelled, wrong,
          flagged, flagged ? flagged_wrong / flagged : 0, labelled ? wrong / labelled : 0,
          wrong ? flagged_wrong / wrong : 0, auroc
      }' "$file"
  done
done
