//! End to end through the binary: a sweep killed with SIGKILL and started again skips the cells
//! it finished and ends with the same tables as an uninterrupted run; `report` rebuilds them; a
//! cell another process holds is left to it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bench, root};
use freeal_bench::run::lock::{self, Claim};

const SPEC: &str = "tests/fixtures/specs/tiny.toml";

/// The finished cells of the tiny spec's run under `results`.
fn complete_cells(results: &Path) -> Vec<std::path::PathBuf> {
    common::complete_cells(&results.join("tiny/cells"))
}

fn run(results: &Path, extra: &[&str]) -> std::process::Output {
    let set = format!("run.results_dir=\"{}\"", results.display());
    let mut args = vec!["run", SPEC, "--set", &set, "--backend", "cpu"];
    args.extend_from_slice(extra);
    bench(&args)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn killed_sweep_resumes_to_identical_tables() {
    let _ = common::minilm_dir();
    let reference = tempfile::tempdir().unwrap();
    let out = run(reference.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(complete_cells(reference.path()).len(), 6);
    let table = read(&reference.path().join("tiny/summary.md"));
    assert!(
        table.contains("| supervised |") && table.contains("| half |"),
        "{table}"
    );

    let interrupted = tempfile::tempdir().unwrap();
    let set = format!("run.results_dir=\"{}\"", interrupted.path().display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(["run", SPEC, "--set", &set, "--backend", "cpu"])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while complete_cells(interrupted.path()).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "cells never completed"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let finished = complete_cells(interrupted.path());
    assert!(finished.len() < 6, "killed mid-sweep");
    let before: Vec<(std::path::PathBuf, String)> =
        finished.iter().map(|p| (p.clone(), read(p))).collect();

    let out = run(interrupted.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} already complete", finished.len())),
        "completed cells are skipped: {stderr}"
    );
    for (path, text) in before {
        assert_eq!(read(&path), text, "{} was redone", path.display());
    }
    for file in ["summary.md", "summary.csv"] {
        assert_eq!(
            read(&interrupted.path().join("tiny").join(file)),
            read(&reference.path().join("tiny").join(file)),
            "{file} differs from the uninterrupted run"
        );
    }

    // Tables come from records alone: delete them and rebuild.
    let tables = interrupted.path().join("tiny");
    std::fs::remove_file(tables.join("summary.md")).unwrap();
    std::fs::remove_file(tables.join("summary.csv")).unwrap();
    let out = bench(&["report", tables.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&tables.join("summary.md")), table);
    assert!(tables.join("records.parquet").is_file() && tables.join("summary.parquet").is_file());

    // Damaged records (a bad copy, a merge): `report` names the file and refuses to build
    // tables without that cell; a run takes the cell as not run and redoes it.
    let damaged = &complete_cells(interrupted.path())[0];
    let text = read(damaged);
    std::fs::write(damaged, &text[..text.len() / 2]).unwrap();
    let out = bench(&["report", tables.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&damaged.display().to_string()) && stderr.contains("rerunning the spec"),
        "{stderr}"
    );
    let out = run(interrupted.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("5 already complete"), "{stderr}");
    let without_wall_time = |text: &str| {
        let mut records: serde_json::Value = serde_json::from_str(text).unwrap();
        for record in records.as_array_mut().unwrap() {
            record.as_object_mut().unwrap().remove("wall_s");
        }
        records
    };
    assert_eq!(
        without_wall_time(&read(damaged)),
        without_wall_time(&text),
        "the redone cell has the same records"
    );
    assert_eq!(read(&tables.join("summary.md")), table);
}

#[test]
fn parallel_jobs_match_sequential_and_only_selects_cells() {
    let _ = common::minilm_dir();
    let seq = tempfile::tempdir().unwrap();
    let out = run(seq.path(), &["--only", "*-s1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        complete_cells(seq.path()).len(),
        2,
        "--only picked the seed-1 cells"
    );
    let par = tempfile::tempdir().unwrap();
    let out = run(par.path(), &["--only", "*-s1", "--jobs", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read(&par.path().join("tiny/summary.csv")),
        read(&seq.path().join("tiny/summary.csv"))
    );
}

#[test]
fn a_cell_recorded_under_an_earlier_name_is_adopted_not_run_again() {
    let _ = common::minilm_dir();
    let results = tempfile::tempdir().unwrap();
    let out = run(results.path(), &["--only", "*-s1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = read(&results.path().join("tiny/summary.csv"));
    // As an older version would have named it (cells of a path-named dataset were named by
    // the path); the id, the hash of the configuration, is what identifies the cell.
    let id = planned_id(results.path(), "sst2-supervised-s1");
    let cells = results.path().join("tiny/cells");
    let current = cells.join(format!("sst2-supervised-s1-{id}"));
    let earlier = cells.join(format!("datasets_sst2_dataset.toml-supervised-s1-{id}"));
    for jobs in ["1", "2"] {
        std::fs::rename(&current, &earlier).unwrap();
        // `plan` counts it complete already: it is what the next run adopts.
        let set = format!("run.results_dir=\"{}\"", results.path().display());
        let listing = bench(&["plan", SPEC, "--set", &set]);
        let listing = String::from_utf8_lossy(&listing.stdout);
        let line = listing.lines().find(|l| l.starts_with(&id)).unwrap();
        assert!(line.ends_with(" complete"), "{line}");
        let out = run(results.path(), &["--only", "*-s1", "--jobs", jobs]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("0 cells run, 2 already complete"),
            "{stderr}"
        );
        assert!(current.join("records.json").is_file() && !earlier.exists());
        assert_eq!(read(&results.path().join("tiny/summary.csv")), table);
    }
}

/// The id `plan` gives the cell named `name`.
fn planned_id(results: &Path, name: &str) -> String {
    let set = format!("run.results_dir=\"{}\"", results.display());
    let out = bench(&["plan", SPEC, "--set", &set]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&name)).then(|| fields[0].to_string())
        })
        .unwrap_or_else(|| panic!("no {name} in {listing}"))
}

#[test]
fn a_cell_another_process_holds_is_left_to_it() {
    let _ = common::minilm_dir();
    let results = tempfile::tempdir().unwrap();
    let set = format!("run.results_dir=\"{}\"", results.path().display());
    let id = planned_id(results.path(), "sst2-supervised-s1");
    let dir = results
        .path()
        .join("tiny/cells")
        .join(format!("sst2-supervised-s1-{id}"));
    // This test process plays the other runner: it holds the cell as `run_cell` would.
    let Claim::Held(held) = lock::claim(&dir).unwrap() else {
        panic!("a fresh cell is free");
    };
    let holder = format!("pid {} on ", std::process::id());

    for jobs in ["1", "2"] {
        let out = run(results.path(), &["--only", "*-s1", "--jobs", jobs]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "SKIPPED sst2-supervised-s1: another process is running it ({holder}"
            )),
            "{stderr}"
        );
        assert!(stderr.contains("1 running elsewhere, 0 failed"), "{stderr}");
        assert!(!dir.join("records.json").exists());
    }
    assert_eq!(complete_cells(results.path()).len(), 1, "half-s1 ran");
    let readme = read(&results.path().join("tiny/README.md"));
    assert!(
        readme.contains(&format!("| running ({holder}")),
        "the generated README says who runs it: {readme}"
    );
    let listing = bench(&["plan", SPEC, "--set", &set]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = listing.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.ends_with(" running"), "{line}");
    let out = bench(&["run-cell", SPEC, "--cell", &id, "--set", &set]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A `--jobs` child that loses the race to the holder says so by its status alone: its
    // output would land in the holder's log, which it must leave as it is.
    let jobs_child = || {
        bench(&[
            "run-cell",
            SPEC,
            "--cell",
            &id,
            "--jobs-child",
            "--set",
            &set,
        ])
    };
    let holders_log = "the holder's progress\n";
    std::fs::write(dir.join("log.txt"), holders_log).unwrap();
    let out = jobs_child();
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(read(&dir.join("log.txt")), holders_log);

    // Released (as a finished or killed holder's lock is), the cell runs, in a child that
    // starts the log afresh; run again, it is complete and `run-cell` leaves it as it is.
    drop(held);
    let out = run(results.path(), &["--only", "*-s1", "--jobs", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 cells run, 1 already complete, 0 running elsewhere, 0 failed"),
        "{stderr}"
    );
    let log = read(&dir.join("log.txt"));
    assert!(!log.contains("holder") && log.contains("] "), "{log}");
    let records = read(&dir.join("records.json"));
    let out = bench(&["run-cell", SPEC, "--cell", &id, "--set", &set]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("already complete"), "{stderr}");
    // A child that finds the cell complete exits 76, which its parent counts as skipped
    // rather than run, and leaves the log of the run that completed it.
    let out = jobs_child();
    assert_eq!(out.status.code(), Some(76));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(read(&dir.join("log.txt")), log);
    assert_eq!(read(&dir.join("records.json")), records);
}
