//! Per-round records: what every method reports, written atomically as JSON, CSV and Parquet.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// LLM usage of one round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmUsage {
    /// Requests sent (cache misses).
    pub calls: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
    /// Prompt tokens processed.
    pub prompt_tokens: u64,
    /// Completion tokens generated.
    pub completion_tokens: u64,
    /// Answers that named no label (masked, never guessed).
    #[serde(default)]
    pub unparsable: u64,
    /// Estimated money spent on calls, from the model's price (0 for local models).
    #[serde(default)]
    pub cost_usd: f64,
}

impl LlmUsage {
    /// Adds another round's usage.
    pub fn add(&mut self, other: &LlmUsage) {
        self.calls += other.calls;
        self.cache_hits += other.cache_hits;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.unparsable += other.unparsable;
        self.cost_usd += other.cost_usd;
    }
}

/// What a method reports for one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundOutcome {
    /// Round number (0 for single-round methods).
    pub round: u32,
    /// Metric name -> value (e.g. `test_accuracy`, `test_macro_f1`, `gold_labels_used`).
    pub metrics: BTreeMap<String, f64>,
    /// LLM usage.
    pub llm: LlmUsage,
    /// SLM optimiser steps.
    pub slm_steps: u64,
    /// Wall-clock seconds of the round.
    pub wall_s: f64,
}

/// One row of the results: a cell's round, with the cell's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Cell id.
    pub cell_id: String,
    /// Cell name.
    pub cell: String,
    /// Method configuration name.
    pub method: String,
    /// Dataset name.
    pub dataset: String,
    /// Seed.
    pub seed: u64,
    /// Swept parameters (`k=v,...`; empty when none).
    pub params: String,
    /// Round and its measurements.
    #[serde(flatten)]
    pub outcome: RoundOutcome,
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees a
/// half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Deletes the temporary files `write_atomic` (and the plot writer) left in `dir` when their
/// process was killed mid-write; those of processes still alive are left to finish.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((_, tail)) = name
            .to_str()
            .and_then(|n| n.strip_prefix('.'))
            .and_then(|n| n.rsplit_once(".tmp"))
        else {
            continue;
        };
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(pid) = digits.parse::<i32>()
            && !process_alive(pid)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // Signal 0 only asks whether the process exists; EPERM means it does, under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The columns of [`records_frame`] that say which record a row is, not what it measured.
pub const IDENTITY_COLUMNS: [&str; 7] = [
    "cell_id", "cell", "method", "dataset", "seed", "params", "round",
];

/// Records as a Polars frame: fixed identity and usage columns, then one column per metric
/// (null where a record lacks it), metrics sorted by name.
pub fn records_frame(records: &[RoundRecord]) -> Result<DataFrame> {
    let metric_names: BTreeSet<&String> = records
        .iter()
        .flat_map(|r| r.outcome.metrics.keys())
        .collect();
    let strings =
        |f: &dyn Fn(&RoundRecord) -> String| -> Vec<String> { records.iter().map(f).collect() };
    let ints = |f: &dyn Fn(&RoundRecord) -> u64| -> Vec<u64> { records.iter().map(f).collect() };
    let [cell_id, cell, method, dataset, seed, params, round] = IDENTITY_COLUMNS;
    let mut columns = vec![
        Column::new(cell_id.into(), strings(&|r| r.cell_id.clone())),
        Column::new(cell.into(), strings(&|r| r.cell.clone())),
        Column::new(method.into(), strings(&|r| r.method.clone())),
        Column::new(dataset.into(), strings(&|r| r.dataset.clone())),
        Column::new(seed.into(), ints(&|r| r.seed)),
        Column::new(params.into(), strings(&|r| r.params.clone())),
        Column::new(round.into(), ints(&|r| u64::from(r.outcome.round))),
    ];
    for name in metric_names {
        let values: Vec<Option<f64>> = records
            .iter()
            .map(|r| r.outcome.metrics.get(name).copied())
            .collect();
        columns.push(Column::new(name.as_str().into(), values));
    }
    columns.extend([
        Column::new("llm_calls".into(), ints(&|r| r.outcome.llm.calls)),
        Column::new("llm_cache_hits".into(), ints(&|r| r.outcome.llm.cache_hits)),
        Column::new(
            "llm_prompt_tokens".into(),
            ints(&|r| r.outcome.llm.prompt_tokens),
        ),
        Column::new(
            "llm_completion_tokens".into(),
            ints(&|r| r.outcome.llm.completion_tokens),
        ),
        Column::new("llm_unparsable".into(), ints(&|r| r.outcome.llm.unparsable)),
        Column::new(
            "llm_cost_usd".into(),
            records
                .iter()
                .map(|r| r.outcome.llm.cost_usd)
                .collect::<Vec<f64>>(),
        ),
        Column::new("slm_steps".into(), ints(&|r| r.outcome.slm_steps)),
        Column::new(
            "wall_s".into(),
            records
                .iter()
                .map(|r| r.outcome.wall_s)
                .collect::<Vec<f64>>(),
        ),
    ]);
    DataFrame::new(records.len(), columns).map_err(|e| Error::results("records", e.to_string()))
}

/// Writes a frame as CSV, atomically.
pub fn write_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    let mut buffer = Vec::new();
    CsvWriter::new(&mut buffer)
        .include_header(true)
        .finish(df)
        .map_err(|e| Error::results(path, e.to_string()))?;
    write_atomic(path, &buffer)
}

/// Writes a frame as Parquet, atomically.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let mut buffer = Vec::new();
    ParquetWriter::new(&mut buffer)
        .finish(df)
        .map_err(|e| Error::results(path, e.to_string()))?;
    write_atomic(path, &buffer)
}

/// File that marks a cell complete: its records, written last.
pub const RECORDS_JSON: &str = "records.json";

/// Writes a cell's records: CSV and Parquet first, then the JSON that marks completion.
pub fn write_cell_records(dir: &Path, records: &[RoundRecord]) -> Result<()> {
    let mut df = records_frame(records)?;
    write_csv(&mut df, &dir.join("records.csv"))?;
    write_parquet(&mut df, &dir.join("records.parquet"))?;
    let json =
        serde_json::to_vec_pretty(records).map_err(|e| Error::results(dir, e.to_string()))?;
    write_atomic(&dir.join(RECORDS_JSON), &json)
}

/// A failed cell's error (its first line is what `report` shows), removed when the cell
/// succeeds.
pub const ERROR_TXT: &str = "error.txt";

/// A method's mid-cell checkpoint (FreeAL: the state after each finished round); removed once
/// the cell's records are written.
pub const CHECKPOINT_JSON: &str = "checkpoint.json";

/// A long training run's checkpoint between two epochs (FreeAL's self-training); it names
/// the `epoch_*.bpk` files holding the weights and optimiser state.
pub const EPOCH_CHECKPOINT_JSON: &str = "epoch_checkpoint.json";

/// The weight and optimiser files of epoch checkpoints in the cell directory `dir`.
fn epoch_checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("epoch_") && n.ends_with(".bpk"))
        })
        .collect()
}

/// Deletes the epoch checkpoint in the cell directory `dir` (superseded once the round it
/// belongs to is saved).
pub fn remove_epoch_checkpoint(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(EPOCH_CHECKPOINT_JSON));
    remove_epoch_checkpoint_files_except(dir, &[]);
}

/// Deletes the epoch checkpoints' weight and optimiser files in `dir` not named in `keep`.
pub fn remove_epoch_checkpoint_files_except(dir: &Path, keep: &[String]) {
    for path in epoch_checkpoint_files(dir) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !keep.iter().any(|k| k == name) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A cell's warnings about its own results (one per line), kept for `report` after the run's
/// terminal output is gone.
pub const WARNINGS_TXT: &str = "warnings.txt";

/// Writes every warning a cell has raised so far (the whole list, so a rerun replaces it).
pub fn write_cell_warnings(dir: &Path, warnings: &[String]) -> Result<()> {
    let mut text = warnings.join("\n");
    text.push('\n');
    write_atomic(&dir.join(WARNINGS_TXT), text.as_bytes())
}

/// Reads a cell's records; `None` when the cell is not complete (missing or unreadable file, or
/// records of another cell id).
pub fn read_cell_records(dir: &Path, cell_id: &str) -> Option<Vec<RoundRecord>> {
    let bytes = std::fs::read(dir.join(RECORDS_JSON)).ok()?;
    let records: Vec<RoundRecord> = serde_json::from_slice(&bytes).ok()?;
    (!records.is_empty() && records.iter().all(|r| r.cell_id == cell_id)).then_some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // No process has this id (above Linux's pid_max).
        let dead = dir.path().join(".records.json.tmp2147483000");
        let dead_png = dir.path().join(".rounds_mr.tmp2147483000.png");
        let alive = dir
            .path()
            .join(format!(".summary.csv.tmp{}", std::process::id()));
        let result = dir.path().join("records.json");
        for path in [&dead, &dead_png, &alive, &result] {
            std::fs::write(path, b"x").unwrap();
        }
        remove_stale_temporaries(dir.path());
        assert!(!dead.exists() && !dead_png.exists());
        assert!(alive.exists() && result.exists());
    }
}
