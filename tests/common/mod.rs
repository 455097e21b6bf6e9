//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (cargo runs integration tests there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fetched default encoder, or a panic that says how to fetch it.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("FREEAL_BENCH_RUN__MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(freeal_bench::slm::model::default_models_dir)
        .join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is missing from {}: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// Runs the binary with arguments, from the repository root.
pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// The fetched test LLM (SmolLM2-135M-Instruct GGUF), or a panic that says how to fetch it.
pub fn smollm_path() -> PathBuf {
    let models = std::env::var_os("FREEAL_BENCH_RUN__MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(freeal_bench::slm::model::default_models_dir);
    let path = freeal_bench::llm::gguf_path("smollm2-135m-instruct", &models);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh smollm2-135m-instruct",
        path.display()
    );
    path
}
