//! Crash safety through the binary: a sweep that calls an LLM (a loopback server), trains SLMs
//! and writes records is killed with SIGKILL at seeded random moments again and again, then run
//! to the end; its tables equal an uninterrupted run's, and the LLM cache passes SQLite's
//! integrity check with every entry matching its checksum.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::llm_server::{Reply, serve, toy_sentiment};
use freeal_bench::llm::cache::LlmCache;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How many times the run is killed before it may finish.
const KILLS: usize = 8;

/// Cells in the sweep: three methods, two seeds.
const CELLS: usize = 6;

fn spec(dir: &Path, name: &str, url: &str) -> PathBuf {
    let dataset = common::toy_dataset(dir);
    common::write(
        dir,
        &format!("{name}.toml"),
        &format!(
            r#"
dataset = "{dataset}"
[experiment]
name = "{name}"
[data]
test_limit = 60

[methods.freeal_http]
kind = "freeal"
initial = "zero_shot"
rounds = 1
warmup_epochs = 2
rampup_epochs = 2.0
medoids_per_class = 5
demos_per_class = 1

[llm]
backend = "http"
model = "test-model"
base_url = "{url}"
prompts = "{prompts}"

{slm}
[run]
results_dir = "{results}"
[run.llm]
cache = "{cache}"
concurrency = 2

[sweep]
method = ["zero_shot", "supervised", "freeal_http"]
seed = [1, 2]
"#,
            dataset = dataset.display(),
            prompts = common::root().join("configs/prompts/sst2.toml").display(),
            slm = common::tiny_slm_toml(),
            results = dir.join("results").display(),
            cache = dir.join("cache.sqlite").display(),
        ),
    )
}

fn start(spec: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(["run", spec.to_str().unwrap(), "--backend", "cpu"])
        .current_dir(common::root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Starts the sweep of `spec` up to `KILLS` times, each killed (SIGKILL) after a seeded share
/// of `full` if still going; returns how many were killed.
fn kill_repeatedly(spec: &Path, cells: &Path, full: Duration, rng: &mut ChaCha8Rng) -> usize {
    let mut killed = 0;
    for _ in 0..KILLS {
        // Later runs skip finished cells, so the delay is drawn from what is left of the sweep
        // (its share of unfinished cells), not from a whole run: drawn from a whole run, on a
        // loaded machine the later runs all finished before their kill.
        let left = 1.0 - common::complete_cells(cells).len() as f64 / CELLS as f64;
        if left == 0.0 {
            break;
        }
        let mut child = start(spec);
        let delay = full.mul_f64(left * rng.random_range(0.05..0.9));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    killed
}

#[test]
fn killed_again_and_again_then_finished_equals_an_uninterrupted_run() {
    let _ = common::minilm_dir();
    // A few milliseconds per answer, so kills land inside annotation as well as training.
    let server = serve(Arc::new(|body: &serde_json::Value, _| {
        Reply::Slow(Duration::from_millis(3), toy_sentiment(body))
    }));

    let reference = tempfile::tempdir().unwrap();
    let began = Instant::now();
    common::run_spec(&spec(reference.path(), "crash", &server.url));
    let full = began.elapsed();
    assert_eq!(
        common::complete_cells(&reference.path().join("results/crash/cells")).len(),
        CELLS
    );

    // A loaded machine can run the interrupted sweep so much faster than the reference run
    // that it finishes before its kills land. Such a try tests nothing: it starts again in a
    // fresh directory with the delays halved (at most three tries).
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut tries = Vec::new();
    let (crashed, spec) = loop {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "crash", &server.url);
        let cells = dir.path().join("results/crash/cells");
        let scale = 0.5f64.powi(tries.len() as i32);
        let killed = kill_repeatedly(&spec, &cells, full.mul_f64(scale), &mut rng);
        tries.push(killed);
        if killed >= KILLS / 2 {
            break (dir, spec);
        }
        assert!(
            tries.len() < 3,
            "runs still going when killed, of {KILLS} per try: {tries:?}"
        );
    };
    common::run_spec(&spec);

    let (a, b) = (reference.path(), crashed.path());
    for file in ["summary.csv", "summary.md"] {
        assert_eq!(
            read(&b.join("results/crash").join(file)),
            read(&a.join("results/crash").join(file)),
            "{file} differs from the uninterrupted run"
        );
    }
    for dir in [a, b] {
        let cache = LlmCache::open(&dir.join("cache.sqlite")).unwrap();
        let audit = cache.audit().unwrap();
        assert_eq!(audit.integrity, "ok", "{}", dir.display());
        assert_eq!((audit.bad, audit.unchecked), (0, 0), "{audit:?}");
    }
    let entries = |dir: &Path| {
        LlmCache::open(&dir.join("cache.sqlite"))
            .unwrap()
            .audit()
            .unwrap()
            .entries
    };
    assert_eq!(entries(b), entries(a), "the same answers, each stored once");
    // No temporary file from an interrupted write is left looking like a result.
    let stray: Vec<PathBuf> = common::files_under(&b.join("results"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with('.') && name.contains(".tmp")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}
