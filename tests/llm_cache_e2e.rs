//! A zero-shot ICL spec run twice (into two results directories, one LLM cache): the second run
//! makes no LLM call and produces the same labels.

mod common;

use std::path::Path;

fn spec(dir: &Path, model: &Path) -> std::path::PathBuf {
    common::write(
        dir,
        "icl.toml",
        &format!(
            r#"
[experiment]
name = "icl_cache"
metric = "test_accuracy"

[data]
test_limit = 6

[llm]
model = "{}"
n_ctx = 1024

[sweep]
dataset = ["sst2"]
method = ["zero_shot"]
seed = [3]
"#,
            model.display()
        ),
    )
}

/// A file of the experiment's only cell.
fn cell_file(results: &Path, name: &str) -> std::path::PathBuf {
    common::only_cell(&results.join("icl_cache")).join(name)
}

fn records(results: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(cell_file(results, "records.json")).unwrap()).unwrap()
}

fn labels(results: &Path) -> String {
    std::fs::read_to_string(cell_file(results, "labels_test.csv")).unwrap()
}

#[test]
fn second_run_is_all_cache_hits_with_identical_labels() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), &common::smollm_path());
    let cache = dir.path().join("llm-cache.sqlite");
    let run = |results: &Path| {
        let out = common::bench(&[
            "run",
            spec.to_str().unwrap(),
            "--set",
            &format!("run.results_dir=\"{}\"", results.display()),
            "--set",
            &format!("run.llm.cache=\"{}\"", cache.display()),
            "--backend",
            "cpu",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (first, second) = (dir.path().join("r1"), dir.path().join("r2"));
    run(&first);
    run(&second);
    let (a, b) = (records(&first), records(&second));
    let (ra, rb) = (&a[0], &b[0]);
    assert_eq!(ra["llm"]["calls"], 6, "{ra}");
    assert_eq!(rb["llm"]["calls"], 0, "{rb}");
    assert_eq!(rb["llm"]["cache_hits"], 6);
    assert_eq!(ra["metrics"], rb["metrics"]);
    assert_eq!(labels(&first), labels(&second));
    assert_eq!(labels(&first).lines().count(), 7);
}
