#!/usr/bin/env bash
# Compares two FreeAL cells' pool labels example by example (their labels_round<r>.csv, paired by
# index), on the pool examples B has labelled, for comparisons of variants that label different
# examples (e.g. `label_fraction`). Usage:
#   scripts/paired_pool_labels.sh LABELS_A.csv LABELS_B.csv [UNLABELLED_IN.csv]
# With a third file, only the examples that file leaves unlabelled count (B's labels_round0.csv:
# the examples a P% cell labelled first in a refinery round). Prints how many examples count,
# the accuracy of A's labels and of B's on them (A's missing labels count as wrong), and how many
# of them each has right where the other has them wrong.
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 LABELS_A.csv LABELS_B.csv [UNLABELLED_IN.csv]" >&2
  exit 2
fi
for file in "$@"; do
  if [ ! -f "$file" ]; then
    echo "$file: not found (is the cell's round finished?)" >&2
    exit 1
  fi
done
awk -F, '
  FNR == 1 { file++; next }       # header: index,gold,label,clean,clean_posterior,slm_pred,loss
  $2 == "" {
    print FILENAME ": no gold labels (an unlabeled pool): nothing to score" > "/dev/stderr"
    failed = 1
    exit 1
  }
  file == 1 { gold[$1] = $2; a[$1] = $3; next }
  file == 2 {
    if (!($1 in gold) || gold[$1] != $2) {
      printf "index %s: not the same pool in both files\n", $1 > "/dev/stderr"
      failed = 1
      exit 1                      # END still runs: it must not print a summary
    }
    if ($3 != "") b[$1] = $3
    next
  }
  $3 != "" { delete b[$1] }       # the third file labelled it: it does not count
  END {
    if (failed) exit 1
    for (i in b) {
      n++
      right_a = (a[i] == gold[i])
      right_b = (b[i] == gold[i])
      hits_a += right_a
      hits_b += right_b
      only_a += (right_a && !right_b)
      only_b += (right_b && !right_a)
    }
    if (n == 0) { print "no example counts" > "/dev/stderr"; exit 1 }
    printf "examples %d  acc_a %.2f  acc_b %.2f  right_only_in_a %d  right_only_in_b %d\n",
      n, 100 * hits_a / n, 100 * hits_b / n, only_a, only_b
  }' "$@"
