#!/usr/bin/env bash
# Compares two cells' test-split labels sentence by sentence (their labels_test.csv, paired by
# index), for ablations where one switch changes the LLM's answers. Usage:
#   scripts/paired_labels.sh CELL_DIR_A CELL_DIR_B [LABEL]
# Prints how many sentences both cells label, the accuracy of each, how many answers changed,
# how many of those B made right (fixed) or wrong (broken), and how often each cell and gold
# give LABEL (default 1, `positive` in the binary sentiment datasets).
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 CELL_DIR_A CELL_DIR_B [LABEL]" >&2
  exit 2
fi
for dir in "$1" "$2"; do
  if [ ! -f "$dir/labels_test.csv" ]; then
    echo "$dir/labels_test.csv: not found (is the cell finished?)" >&2
    exit 1
  fi
done
awk -F, -v label="${3:-1}" '
  FNR == 1 { file++; next }       # header: index,gold,label,confidence
  file == 1 { gold[$1] = $2; a[$1] = $3; next }
  ($1 in a) {
    if (gold[$1] != $2) {
      printf "index %s: gold %s in one file, %s in the other (not the same split)\n", $1, gold[$1], $2 > "/dev/stderr"
      mismatch = 1
      exit 1                      # END still runs: it must not print a summary
    }
    n++
    right_a += (a[$1] == $2)
    right_b += ($3 == $2)
    if (a[$1] != $3) {
      changed++
      fixed += ($3 == $2)
      broken += (a[$1] == $2)
    }
    label_a += (a[$1] == label)
    label_b += ($3 == label)
    label_gold += ($2 == label)
  }
  END {
    if (mismatch) exit 1
    if (n == 0) { print "no sentence in both files" > "/dev/stderr"; exit 1 }
    printf "paired %d  acc_a %.2f  acc_b %.2f  changed %d  fixed %d  broken %d  label_%s a/b/gold %d/%d/%d\n",
      n, 100 * right_a / n, 100 * right_b / n, changed, fixed, broken, label, label_a, label_b, label_gold
  }' "$1/labels_test.csv" "$2/labels_test.csv"
