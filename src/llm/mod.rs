//! The LLM side: the [`Annotator`](annotator::Annotator) seam and its backends (embedded
//! llama.cpp, OpenAI-compatible HTTP, replay, simulated), prompts, demonstration retrieval and
//! the cached, metered client methods use.

pub mod annotator;
pub mod cache;
pub mod client;
pub mod demos;
pub mod embedded;
pub mod openai;
pub mod prompt;
pub mod replay;
pub mod simulated;
pub mod spans;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{LlmBackend, LlmRunSpec};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::plan::{Cell, LlmCell};
use annotator::Annotator;
use cache::LlmCache;
use client::LlmClient;

/// GGUF models `scripts/fetch-models.sh` knows: name -> file inside `<models_dir>/<name>/`.
pub const FETCHABLE_GGUF: &[(&str, &str)] = &[
    (
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    ("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    (
        "qwen2.5-coder-1.5b-instruct",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
];

/// Resolves `llm.model` for the embedded backend: a `.gguf` path, or a fetched model's file.
pub fn gguf_path(model: &str, models_dir: &Path) -> PathBuf {
    if model.ends_with(".gguf") {
        return PathBuf::from(model);
    }
    match FETCHABLE_GGUF.iter().find(|(name, _)| *name == model) {
        Some((name, file)) => models_dir.join(name).join(file),
        None => models_dir.join(model).join(format!("{model}.gguf")),
    }
}

/// Makes sure the embedded model exists, fetching a known one on first use.
pub fn ensure_gguf(model: &str, models_dir: &Path, project_root: &Path) -> Result<()> {
    let path = gguf_path(model, models_dir);
    if path.is_file() {
        return Ok(());
    }
    if FETCHABLE_GGUF.iter().any(|(name, _)| *name == model) {
        crate::fetch::fetch_with_script(model, models_dir, project_root)?;
        if path.is_file() {
            return Ok(());
        }
    }
    Err(Error::model(
        model,
        format!(
            "{} not found; set llm.model to a .gguf file or one of: {}",
            path.display(),
            FETCHABLE_GGUF
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Default cache file.
pub fn default_cache_path() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/freeal-bench/llm-cache.sqlite")
}

/// The annotator a cell's config names.
pub fn build_annotator(
    llm: &LlmCell,
    cell: &Cell,
    dataset: &Dataset,
    run: &LlmRunSpec,
    models_dir: &Path,
) -> Result<Box<dyn Annotator>> {
    let spec = &llm.spec;
    Ok(match spec.backend {
        LlmBackend::Embedded => Box::new(embedded::EmbeddedLlm::new(embedded::EmbeddedOptions {
            path: gguf_path(&spec.model, models_dir),
            name: spec.model.clone(),
            mode: spec.mode,
            max_tokens: spec.max_tokens,
            n_ctx: spec.n_ctx,
            threads: run.threads,
            prefix_reuse: true,
        })?),
        LlmBackend::Http => Box::new(openai::HttpLlm::new(openai::HttpOptions {
            base_url: spec.base_url.clone(),
            api_key: api_key(run)?,
            model: spec.model.clone(),
            endpoint: spec.endpoint,
            mode: spec.mode,
            max_tokens: spec.max_tokens,
            top_logprobs: spec.top_logprobs,
            concurrency: run.concurrency,
            requests_per_minute: run.requests_per_minute,
            tokens_per_minute: run.tokens_per_minute,
            max_retries: run.max_retries,
            timeout: Duration::from_secs_f64(run.timeout_s),
            backoff: Duration::from_secs_f64(run.backoff_s),
            max_requests: run.max_requests,
            rate_window: Duration::from_secs(60),
        })?),
        LlmBackend::Replay => {
            let replay = spec.replay.as_ref().ok_or_else(|| Error::Config {
                location: "spec".into(),
                key: "llm.replay".into(),
                message: "backend = \"replay\" needs [llm.replay]".into(),
            })?;
            let path = cell.dataset_dir.join(&replay.file);
            let table = replay::read_replay(&path, replay, &cell.config.dataset.raw_labels())?;
            Box::new(replay::ReplayAnnotator::new(table, path))
        }
        LlmBackend::Simulated => {
            let n = dataset.num_labels();
            let noise = spec
                .simulated
                .noise
                .clone()
                .unwrap_or_else(|| simulated::symmetric_noise(n, spec.simulated.accuracy));
            let gold: HashMap<String, usize> = dataset
                .train
                .iter()
                .chain(&dataset.dev)
                .chain(&dataset.test)
                .filter_map(|e| Some((e.text.clone(), e.class()?)))
                .collect();
            let entities = dataset
                .train
                .iter()
                .chain(&dataset.dev)
                .chain(&dataset.test)
                .filter_map(|e| Some((e.text.clone(), dataset.entities(e)?)))
                .collect();
            Box::new(
                simulated::SimulatedAnnotator::new(gold, noise, cell.config.seed)?
                    .with_entities(entities, dataset.label_names.clone()),
            )
        }
    })
}

/// The HTTP API key: `run.llm.api_key_env`'s variable, else the first line of
/// `run.llm.api_key_file`; `None` when neither is set (local servers need none). The key lives
/// only in the request header: cells, records, logs and cache keys never see it.
pub fn api_key(run: &LlmRunSpec) -> Result<Option<String>> {
    if let Some(key) = std::env::var(&run.api_key_env)
        .ok()
        .filter(|k| !k.trim().is_empty())
    {
        return Ok(Some(key.trim().to_string()));
    }
    if run.api_key_file.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| Error::Config {
        location: "run settings".into(),
        key: "run.llm.api_key_file".into(),
        message,
    };
    let text = std::fs::read_to_string(&run.api_key_file)
        .map_err(|e| bad(format!("cannot read {}: {e}", run.api_key_file)))?;
    match text.lines().next().map(str::trim) {
        Some(key) if !key.is_empty() => Ok(Some(key.to_string())),
        _ => Err(bad(format!(
            "{} is empty; its first line must be the API key",
            run.api_key_file
        ))),
    }
}

/// The cache file `run.llm.cache` names (`None`: caching is off).
pub fn cache_path(run: &LlmRunSpec) -> Option<PathBuf> {
    match run.cache.trim() {
        "off" => None,
        "" => Some(default_cache_path()),
        path => Some(PathBuf::from(path)),
    }
}

/// The cached, metered client of a cell.
pub fn build_client(
    cell: &Cell,
    dataset: &Dataset,
    run: &LlmRunSpec,
    models_dir: &Path,
) -> Result<LlmClient> {
    let llm = cell.config.llm.as_ref().ok_or_else(|| Error::Cell {
        cell: cell.name.clone(),
        message: "this method needs the [llm] settings but the plan carries none".into(),
    })?;
    let annotator = build_annotator(llm, cell, dataset, run, models_dir)?;
    let cache = match cache_path(run) {
        None => None,
        Some(path) if run.cache_shards => Some(LlmCache::open_shard(&path, &cell.id)?),
        Some(path) => Some(LlmCache::open(&path)?),
    };
    Ok(LlmClient::new(annotator, cache, llm.price))
}
