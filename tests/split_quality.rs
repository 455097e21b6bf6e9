//! scripts/split_quality.sh on hand-made labels files with answers worked out by hand: the
//! split's precision and recall, and the loss AUROC (wrong labels' losses against right ones').

mod common;

use std::path::Path;
use std::process::Command;

fn run(dirs: &[&Path]) -> Vec<Vec<String>> {
    let out = Command::new("bash")
        .arg(common::root().join("scripts/split_quality.sh"))
        .args(dirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn split_quality_scores_the_split_and_the_losses_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let experiment = dir.path().join("exp");
    // Wrong labels (label != gold): rows 0 and 1, losses 0.5 and 0.1. Right ones: 0.2, 0.05,
    // 0.1 and 0.3; row 6 is unlabelled and not scored. Wrong above right: 0.5 beats all 4, 0.1
    // beats 0.05 and ties 0.1, so (4 + 1 + 0.5) / 8 = 0.6875. Flagged (clean 0): rows 0, 2, 3,
    // one of them wrong, so 1/3 of the flagged are wrong and 1/2 of the wrong are flagged.
    common::write(
        &experiment,
        "cells/c-s1/labels_round0.csv",
        "index,gold,label,clean,clean_posterior,slm_pred,loss\n\
         0,0,1,0,0.1000,0,5e-1\n\
         1,1,0,1,0.9000,0,1e-1\n\
         2,0,0,0,0.2000,0,2e-1\n\
         3,1,1,0,0.3000,1,5e-2\n\
         4,1,1,1,0.9000,1,1e-1\n\
         5,0,0,1,0.9000,0,3e-1\n\
         6,0,,0,0.0000,1,\n",
    );
    // The same file as written before the loss column: no AUROC to give.
    common::write(
        &experiment,
        "cells/c-s2/labels_round0.csv",
        "index,gold,label,clean,clean_posterior,slm_pred\n\
         0,0,1,0,0.1000,0\n\
         1,1,0,1,0.9000,0\n\
         2,0,0,0,0.2000,0\n",
    );
    let rows = run(&[&experiment]);
    assert_eq!(
        rows,
        vec![
            vec![
                "exp", "c-s1", "0", "6", "2", "3", "0.333", "0.333", "0.500", "0.688"
            ],
            vec![
                "exp", "c-s2", "0", "3", "2", "2", "0.500", "0.667", "0.500", "-"
            ],
        ]
    );
}
