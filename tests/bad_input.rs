//! Bad input through the binary: every case stops `run` with exit code 2 before anything is
//! written, and the message names the place (file, line or key) and what to do.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A two-class dataset whose training file is `rows` (bytes, so non-UTF-8 can be written).
fn dataset(dir: &Path, rows: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/rows.txt"), rows).unwrap();
    common::write(
        dir,
        "data/dataset.toml",
        "name = \"mini\"\ntask = \"classification\"\n[format]\nkind = \"label_text\"\n\
         [files]\ntrain = \"rows.txt\"\n[split]\ntest_fraction = 0.25\n\
         [labels]\nnames = [\"negative\", \"positive\"]\n",
    )
}

/// 40 distinct rows, labels 0/1.
fn good_rows() -> Vec<u8> {
    (0..40)
        .map(|i| format!("{} sentence number {i} about a film\n", i % 2))
        .collect::<String>()
        .into_bytes()
}

/// Writes a spec over `data` with `extra` TOML appended, runs it, and checks the outcome:
/// exit 2, every `expect` fragment in stderr, and no results directory.
fn refused(dir: &Path, data: &Path, extra: &str, expect: &[&str]) {
    let results = dir.join("results");
    let spec = common::write(
        dir,
        "spec.toml",
        &format!(
            "dataset = \"{}\"\n[run]\nresults_dir = \"{}\"\n[experiment]\nname = \"bad\"\n{extra}\n",
            data.display(),
            results.display()
        ),
    );
    let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{extra}\n{stderr}");
    for fragment in expect {
        assert!(
            stderr.contains(fragment),
            "missing {fragment:?} in: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !results.join("bad").exists(),
        "nothing is written for bad input ({extra})"
    );
}

#[test]
fn malformed_specs_are_refused_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), &good_rows());
    let cases: &[(&str, &[&str])] = &[
        ("[slm\nepochs = 2", &["spec.toml:6", "expected `]`"]),
        (
            "[slm]\nmax_lenn = 3",
            &["spec.toml:7", "max_lenn", "max_len"],
        ),
        ("[slm]\nepochs = \"three\"", &["spec.toml:7", "slm.epochs"]),
        ("[slm]\nmax_len = 0", &["slm.max_len", "1..=512"]),
        (
            "[methods.f]\nkind = \"freeal\"\nr_percent = 0.0\n[sweep]\nmethod = [\"f\"]",
            &["spec.toml:8", "methods.f.r_percent", "(0, 100]"],
        ),
        (
            "[sweep]\nmethod = [\"nope\"]",
            &["`nope` is not defined", "defined methods"],
        ),
        (
            "[data]\ntrain_limit = -5",
            &["spec.toml:7", "data.train_limit"],
        ),
    ];
    for (extra, expect) in cases {
        refused(dir.path(), &data, extra, expect);
    }
    // 400 seeds x 300 learning rates: refused before expanding, not after an hour.
    let seeds: Vec<String> = (0..400).map(|i| i.to_string()).collect();
    let rates: Vec<String> = (1..=300).map(|i| format!("{i}e-6")).collect();
    let huge = format!(
        "[sweep]\nseed = [{}]\n\"slm.lr\" = [{}]",
        seeds.join(", "),
        rates.join(", ")
    );
    refused(
        dir.path(),
        &data,
        &huge,
        &["more than 100000 cells", "seed (400) x slm.lr (300)"],
    );
}

#[test]
fn bad_data_is_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<u8>, &str, Vec<&str>)> = vec![
        (Vec::new(), "", vec!["rows.txt", "no rows"]),
        (
            [good_rows(), b"maybe an unsure sentence\n".to_vec()].concat(),
            "",
            vec!["rows.txt:41", "label `maybe`", "[\"0\", \"1\"]"],
        ),
        (
            [good_rows(), b"1 caf\xe9 au lait\n".to_vec()].concat(),
            "",
            vec!["rows.txt:41", "UTF-8"],
        ),
        (
            [good_rows(), b"1 sentence number 3 about a film\n".to_vec()].concat(),
            "[data]\nduplicates = \"error\"",
            vec![
                "rows.txt",
                "sentence number 3 about a film",
                "data.duplicates",
            ],
        ),
    ];
    for (rows, extra, expect) in &cases {
        let data = dataset(dir.path(), rows);
        refused(dir.path(), &data, extra, expect);
    }
    // A dataset file that is not there.
    let missing = dir.path().join("nowhere/dataset.toml");
    refused(dir.path(), &missing, "", &["nowhere/dataset.toml"]);
    // The definition points at a training file that is not there.
    let data = dataset(dir.path(), &good_rows());
    std::fs::remove_file(dir.path().join("data/rows.txt")).unwrap();
    refused(dir.path(), &data, "", &["rows.txt"]);
}

#[test]
fn sizes_only_the_data_can_judge_are_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), &good_rows());
    // 40 rows, a quarter cut for test: 30 in the pool.
    refused(
        dir.path(),
        &data,
        "[methods.al]\nkind = \"active_learning\"\nbudget = 500.0\ninitial = 5.0\n\
         [sweep]\nmethod = [\"al\"]",
        &["methods.al.budget", "only 30 pool examples", "fraction"],
    );
    let llmaaa = format!(
        "[methods.aa]\nkind = \"active_learning\"\noracle = \"llm\"\nbudget = 10.0\n\
         initial = 5.0\ndemo_pool = 20\nreweight = true\nmeta_set = 20\n[llm]\nprompts = \"{}\"\n\
         [sweep]\nmethod = [\"aa\"]",
        common::root().join("configs/prompts/sst2.toml").display()
    );
    refused(
        dir.path(),
        &data,
        &llmaaa,
        &["methods.aa.demo_pool", "take all 30 pool examples"],
    );
}

#[test]
fn duplicates_are_kept_with_a_warning_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [good_rows(), b"0 sentence number 3 about a film\n".to_vec()].concat();
    let data = dataset(dir.path(), &rows);
    for (policy, expect) in [
        (
            "keep",
            "1 repeated text(s) in the training pool (1 with a different label)",
        ),
        ("drop", "dropped: pool"),
    ] {
        let spec = common::write(
            dir.path(),
            "spec.toml",
            &format!(
                "dataset = \"{}\"\n[experiment]\nname = \"dups\"\n[data]\nduplicates = \"{policy}\"\n",
                data.display()
            ),
        );
        let out = common::bench(&["plan", spec.to_str().unwrap()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        if policy == "keep" {
            assert!(text.contains(expect), "{text}");
        } else {
            assert!(
                !text.contains("warning"),
                "dropping leaves nothing to warn of: {text}"
            );
        }
    }
}

#[test]
fn a_reader_that_goes_away_ends_plan_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(["plan", "experiments/sst2.toml", "--show-prompt"])
        .current_dir(common::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head -0`: the pipe closes before the first line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_missing_spec_is_named_once_with_the_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("no_such_spec.toml");
    let out = common::bench(&["plan", spec.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("no_such_spec.toml").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}
