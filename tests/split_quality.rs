//! The scripts that read FreeAL's labels files, on hand-made files with answers worked out by
//! hand: split_quality.sh (the split's precision and recall, and the loss AUROC: wrong labels'
//! losses against right ones') and paired_pool_labels.sh (two cells' labels of the same pool).

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

#[test]
fn paired_pool_labels_scores_both_cells_on_the_examples_b_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let header = "index,gold,label,clean,clean_posterior,slm_pred,loss\n";
    // A labels every example but 1 (which counts as wrong); right on 0, 3 and 4.
    let a = common::write(
        dir.path(),
        "a.csv",
        &format!(
            "{header}0,0,0,1,0.9,0,0.1\n1,1,,0,0.0,0,\n2,0,1,0,0.2,1,0.9\n3,1,1,1,0.9,1,0.1\n4,0,0,1,0.9,0,0.1\n"
        ),
    );
    // B leaves 2 unlabelled (it does not count) and is right on 0, 1 and 4.
    let b = common::write(
        dir.path(),
        "b.csv",
        &format!(
            "{header}0,0,0,1,0.9,0,0.1\n1,1,1,1,0.9,1,0.1\n2,0,,0,0.0,0,\n3,1,0,0,0.1,0,0.8\n4,0,0,1,0.9,0,0.1\n"
        ),
    );
    // B's round 0 labelled 0 and 3: with it, only 1 and 4 count.
    let b0 = common::write(
        dir.path(),
        "b0.csv",
        &format!(
            "{header}0,0,0,1,0.9,0,0.1\n1,1,,0,0.0,0,\n2,0,,0,0.0,0,\n3,1,1,1,0.9,1,0.1\n4,0,,0,0.0,0,\n"
        ),
    );
    let run = |files: &[&Path]| {
        Command::new("bash")
            .arg(common::root().join("scripts/paired_pool_labels.sh"))
            .args(files)
            .output()
            .unwrap()
    };
    let said = |files: &[&Path]| {
        let out = run(files);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(
        said(&[&a, &b]),
        "examples 4  acc_a 75.00  acc_b 75.00  right_only_in_a 1  right_only_in_b 1"
    );
    assert_eq!(
        said(&[&a, &b, &b0]),
        "examples 2  acc_a 50.00  acc_b 100.00  right_only_in_a 0  right_only_in_b 1"
    );
    // Another pool (gold differs at index 1): an error, and no summary to misread.
    let other = common::write(
        dir.path(),
        "other.csv",
        &format!("{header}0,0,0,1,0.9,0,0.1\n1,0,0,1,0.9,0,0.1\n"),
    );
    let out = run(&[&a, &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("index 1: not the same pool"));
}
