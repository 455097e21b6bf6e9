//! Tables, plots and the experiment's README, built from records alone.

pub mod diff;
pub mod mlflow;
pub mod plots;
pub mod tables;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::spec::ExperimentSpec;
use crate::error::{Error, Result};
use crate::llm::cache::LlmCache;
use crate::run::lock;
use crate::run::records::{
    CHECKPOINT_JSON, EPOCH_CHECKPOINT_JSON, ERROR_TXT, RECORDS_JSON, RoundRecord, WARNINGS_TXT,
    write_atomic,
};

/// The experiment's metadata as `run` resolved it (includes and defaults applied).
pub const EXPERIMENT_JSON: &str = "experiment.json";

/// With `run.llm.cache_shards`, the main LLM cache whose per-cell shards `regenerate` merges.
pub const SHARDED_CACHE_TXT: &str = "sharded_cache.txt";

/// The command that reruns one cell of this directory, less its `--cell ID`.
pub const RERUN_TXT: &str = "rerun.txt";

/// A planned cell without records, and how to get them.
#[derive(Debug, Clone, PartialEq)]
pub struct Incomplete {
    /// Cell name.
    pub name: String,
    /// `running (<who>)`, `failed: <first line of error.txt>`, `interrupted` or `not run`,
    /// and whether a rerun resumes from a round checkpoint.
    pub status: String,
    /// The command that runs just this cell.
    pub rerun: String,
    /// Its log from Slurm array tasks (`slurm/logs/<cell id>.log`), when one ran it.
    pub slurm_log: Option<String>,
}

/// Every planned cell without records, in plan order.
pub fn incomplete(loaded: &Loaded) -> Vec<Incomplete> {
    let rerun = std::fs::read_to_string(loaded.dir.join(RERUN_TXT))
        .unwrap_or_else(|_| "freeal-bench run-cell SPEC.toml".into());
    loaded
        .plan
        .iter()
        .filter(|c| !loaded.records.iter().any(|r| r.cell_id == c.id))
        .map(|cell| {
            let cell_dir = loaded.dir.join("cells").join(&cell.dir);
            // A saved epoch is later than the last finished round: say that one.
            let resumes = if cell_dir.join(EPOCH_CHECKPOINT_JSON).exists() {
                Some("its last saved epoch (epoch_checkpoint.json)")
            } else if cell_dir.join(CHECKPOINT_JSON).exists() {
                Some("its last finished round (checkpoint.json)")
            } else {
                None
            };
            // A running cell's error.txt and checkpoints are from before this attempt.
            let status = if let Some(who) = lock::holder(&cell_dir) {
                format!("running ({who})")
            } else {
                let status = match std::fs::read_to_string(cell_dir.join(ERROR_TXT)) {
                    Ok(text) => format!("failed: {}", text.lines().next().unwrap_or("")),
                    Err(_) if resumes.is_some() => "interrupted".to_string(),
                    Err(_) => "not run".to_string(),
                };
                match resumes {
                    Some(point) => format!("{status}; resumes after {point}"),
                    None => status,
                }
            };
            let log = loaded
                .dir
                .join("slurm")
                .join("logs")
                .join(format!("{}.log", cell.id));
            let slurm_log = log.exists().then(|| log.display().to_string());
            Incomplete {
                name: cell.name.clone(),
                status,
                rerun: format!("{} --cell {}", rerun.trim(), cell.id),
                slurm_log,
            }
        })
        .collect()
}

/// A plan entry as `plan.json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct PlannedCell {
    /// Cell id.
    pub id: String,
    /// Cell name.
    pub name: String,
    /// Directory under `cells/`.
    pub dir: String,
}

/// An experiment directory read back: its metadata, plan and complete cells' records.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `results/<experiment>`.
    pub dir: PathBuf,
    /// Metadata written by `run`.
    pub experiment: ExperimentSpec,
    /// The current plan, in sweep order.
    pub plan: Vec<PlannedCell>,
    /// Records of the plan's complete cells, in plan order.
    pub records: Vec<RoundRecord>,
}

/// Reads an experiment directory written by `run`.
pub fn load(dir: &Path) -> Result<Loaded> {
    let meta = dir.join(EXPERIMENT_JSON);
    let bytes = std::fs::read(&meta).map_err(|e| {
        Error::results(
            &meta,
            format!(
                "not an experiment directory ({e}); `freeal-bench SPEC.toml` writes it \
                 (rerunning a spec keeps its complete cells)"
            ),
        )
    })?;
    let experiment: ExperimentSpec = serde_json::from_slice(&bytes)
        .map_err(|e| Error::results(&meta, format!("unreadable: {e}")))?;
    let plan_path = dir.join("plan.json");
    let plan: Vec<PlannedCell> = std::fs::read(&plan_path)
        .map_err(|e| Error::io(&plan_path, e))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| Error::results(&plan_path, format!("unreadable: {e}")))
        })?;
    let order: Vec<String> = plan.iter().map(|c| c.id.clone()).collect();
    let records = collect(dir, &order)?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        experiment,
        plan,
        records,
    })
}

/// What `regenerate` wrote.
pub struct Regenerated {
    /// The summary table.
    pub summary: tables::Summary,
    /// Plot files (SVG and PNG).
    pub plots: Vec<PathBuf>,
    /// Planned cells without records.
    pub missing: Vec<Incomplete>,
    /// The directory as read.
    pub loaded: Loaded,
}

/// Rewrites tables, plots and README.md of an experiment directory from its records; `metric`
/// overrides the experiment's.
pub fn regenerate(dir: &Path, metric: Option<&str>) -> Result<Regenerated> {
    let loaded = load(dir)?;
    if loaded.records.is_empty() {
        return Err(Error::results(
            dir,
            "no complete cell of the current plan under cells/",
        ));
    }
    if let Ok(main) = std::fs::read_to_string(dir.join(SHARDED_CACHE_TXT)) {
        let done = |id: &str| loaded.records.iter().any(|r| r.cell_id == id);
        LlmCache::merge_shards(Path::new(main.trim()), &done)?;
    }
    let metric = metric.unwrap_or(&loaded.experiment.metric);
    let summary = tables::summarize(
        &loaded.records,
        metric,
        &loaded.experiment.paper_reference,
        None,
    )?;
    tables::write_tables(dir, &loaded.records, &summary)?;
    let plot_dir = dir.join("plots");
    let mut plots = Vec::new();
    let figures = plots::figures(&loaded.records, metric);
    for figure in &figures {
        let (svg, png) = plots::render(figure, &plot_dir)?;
        plots.push(svg);
        plots.push(png);
    }
    let missing = incomplete(&loaded);
    write_atomic(
        &dir.join("README.md"),
        readme(&loaded, &summary, &figures, &missing).as_bytes(),
    )?;
    Ok(Regenerated {
        summary,
        plots,
        missing,
        loaded,
    })
}

/// The experiment's generated README: summary table, plots, and every planned cell's status.
fn readme(
    loaded: &Loaded,
    summary: &tables::Summary,
    figures: &[plots::Figure],
    missing: &[Incomplete],
) -> String {
    let exp = &loaded.experiment;
    let mut out = format!("# {}\n\n", exp.name);
    if !exp.description.is_empty() {
        let _ = writeln!(out, "{}\n", exp.description);
    }
    let _ = writeln!(
        out,
        "Generated by `freeal-bench report {}` from the records under `cells/`; edits are \
         overwritten.\n\n## Summary\n\n{}",
        loaded.dir.display(),
        summary.markdown()
    );
    if !figures.is_empty() {
        out.push_str("## Plots\n\n");
        for f in figures {
            let _ = writeln!(
                out,
                "### {}\n\n![{}](plots/{}.svg)\n\n(PNG: `plots/{}.png`)\n",
                f.title, f.stem, f.stem, f.stem
            );
        }
    }
    out.push_str("## Cells\n\n| cell | id | rounds | status |\n|---|---|---|---|\n");
    for cell in &loaded.plan {
        let rounds = loaded
            .records
            .iter()
            .filter(|r| r.cell_id == cell.id)
            .count();
        let warnings =
            std::fs::read_to_string(loaded.dir.join("cells").join(&cell.dir).join(WARNINGS_TXT))
                .map_or(0, |text| {
                    text.lines().filter(|l| !l.trim().is_empty()).count()
                });
        let status = match missing.iter().find(|m| m.name == cell.name) {
            Some(m) => m.status.replace('|', "/"),
            None if warnings > 0 => format!(
                "complete; {warnings} warning(s) in `cells/{}/{WARNINGS_TXT}`",
                cell.dir
            ),
            None => "complete".to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            cell.name, cell.id, rounds, status
        );
    }
    if !missing.is_empty() {
        out.push_str("\nTo complete the table, rerun each missing cell from the checkout root (or the whole spec):\n\n");
        for m in missing {
            let log = m
                .slurm_log
                .as_ref()
                .map(|l| format!(" (Slurm log: `{l}`)"))
                .unwrap_or_default();
            let _ = writeln!(out, "- {}{log}: `{}`", m.name, m.rerun);
        }
    }
    out.push_str(
        "\nFiles: `summary.{md,csv,parquet}` (this table), `records.{csv,parquet,jsonl}` \
         (every cell's every round), `plots/`, `cells/<cell>/` (config, records, labels, logs).\n",
    );
    out
}

/// Flattens a JSON value into dotted keys (arrays by index).
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// A cell's resolved configuration (`cells/<cell>/config.json`) as dotted key -> value.
pub fn cell_params(cell_dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = cell_dir.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::results(&path, format!("unreadable: {e}")))?;
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    Ok(out)
}

/// Reads every complete cell's records under `<dir>/cells/`, ordered as `order` lists cell ids.
/// With a non-empty `order` (the experiment's current plan), cells outside it are left out: they
/// were run under an older spec or older defaults and would otherwise count twice.
pub fn collect(dir: &Path, order: &[String]) -> Result<Vec<RoundRecord>> {
    let cells = dir.join("cells");
    let entries = std::fs::read_dir(&cells).map_err(|e| Error::io(&cells, e))?;
    let mut per_cell: Vec<(usize, String, Vec<RoundRecord>)> = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path().join(RECORDS_JSON);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let records: Vec<RoundRecord> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::results(
                &path,
                format!(
                    "unreadable records: {e}; rerunning the spec runs this cell again (a run \
                         takes unreadable records for a cell not yet run)"
                ),
            )
        })?;
        let Some(first) = records.first() else {
            continue;
        };
        let rank = order
            .iter()
            .position(|id| *id == first.cell_id)
            .unwrap_or(usize::MAX);
        if rank == usize::MAX && !order.is_empty() {
            continue;
        }
        per_cell.push((
            rank,
            entry.file_name().to_string_lossy().into_owned(),
            records,
        ));
    }
    per_cell.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(per_cell.into_iter().flat_map(|(_, _, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cell(dir: &Path, name: &str, id: &str) {
        let cell = dir.join("cells").join(name);
        std::fs::create_dir_all(&cell).unwrap();
        let record = serde_json::json!([{
            "cell_id": id, "cell": name, "method": "m", "dataset": "d", "seed": 1, "params": "",
            "round": 0, "metrics": {"test_accuracy": 0.5},
            "llm": {"calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0},
            "slm_steps": 0, "wall_s": 1.0
        }]);
        std::fs::write(cell.join(RECORDS_JSON), record.to_string()).unwrap();
    }

    #[test]
    fn cells_outside_the_current_plan_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        write_cell(dir.path(), "a-old", "aaa");
        write_cell(dir.path(), "a-new", "bbb");
        let current = collect(dir.path(), &["bbb".to_string()]).unwrap();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].cell_id, "bbb");
        // Without a plan every complete cell counts.
        assert_eq!(collect(dir.path(), &[]).unwrap().len(), 2);
    }

    #[test]
    fn nested_config_flattens_to_dotted_keys() {
        let value = serde_json::json!({"slm": {"epochs": 3, "model": "m"}, "seeds": [1, 2]});
        let mut out = BTreeMap::new();
        flatten("", &value, &mut out);
        assert_eq!(out["slm.epochs"], "3");
        assert_eq!(out["slm.model"], "m");
        assert_eq!(out["seeds.1"], "2");
    }
}
