//! Export to MLflow's file-store layout (`mlruns/`), which `mlflow ui --backend-store-uri` and
//! MLflow's importers read: one run per cell, its rounds as metric steps, its configuration as
//! parameters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{Loaded, cell_params};
use crate::error::Result;
use crate::plan::safe_name;
use crate::run::executor::absolute;
use crate::run::records::{RoundRecord, write_atomic};

/// MLflow keeps names of metrics and parameters to letters, digits and `_-. /`; anything else
/// (e.g. the brackets of `pool_label_accuracy[positive]`) becomes `.`, and `/` is avoided too
/// because the file store turns it into directories.
fn mlflow_key(key: &str) -> String {
    safe_name(key, "_-.", '.').trim_end_matches('.').to_string()
}

fn hex_id(text: &str, len: usize) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..len]
        .to_string()
}

/// Writes `<dir>/mlruns/<experiment id>/<run id>/` for every complete cell; returns the
/// `mlruns` directory. Ids are hashes of the experiment name and cell id, so exporting again
/// overwrites the same runs instead of adding copies.
pub fn export(loaded: &Loaded) -> Result<PathBuf> {
    let root = loaded.dir.join("mlruns");
    // The file store wants a numeric-looking experiment id; 12 decimal digits from the hash.
    let exp_id = u64::from_str_radix(&hex_id(&loaded.experiment.name, 10), 16)
        .map_or(1, |v| v % 1_000_000_000_000)
        .to_string();
    let exp_dir = root.join(&exp_id);
    let abs = absolute(&exp_dir)?;
    write_atomic(
        &exp_dir.join("meta.yaml"),
        format!(
            "artifact_location: file://{}\nexperiment_id: '{exp_id}'\nlifecycle_stage: active\n\
             name: {}\n",
            abs.display(),
            loaded.experiment.name
        )
        .as_bytes(),
    )?;
    for cell in &loaded.plan {
        let rounds: Vec<&RoundRecord> = loaded
            .records
            .iter()
            .filter(|r| r.cell_id == cell.id)
            .collect();
        let Some(first) = rounds.first() else {
            continue;
        };
        let cell_dir = loaded.dir.join("cells").join(&cell.dir);
        let run_id = hex_id(&cell.id, 32);
        let run_dir = exp_dir.join(&run_id);
        // Timestamps: the records file's time marks the end; rounds are laid back from it by
        // their wall times, so the metric history keeps its real spacing.
        let end_ms = std::fs::metadata(cell_dir.join(crate::run::records::RECORDS_JSON))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let total_ms: u64 = rounds.iter().map(|r| (r.outcome.wall_s * 1e3) as u64).sum();
        let start_ms = end_ms.saturating_sub(total_ms);
        write_atomic(
            &run_dir.join("meta.yaml"),
            format!(
                "artifact_uri: file://{}/{run_id}/artifacts\nend_time: {end_ms}\n\
                 entry_point_name: ''\nexperiment_id: '{exp_id}'\nlifecycle_stage: active\n\
                 run_id: {run_id}\nrun_name: {}\nrun_uuid: {run_id}\nsource_name: ''\n\
                 source_type: 4\nsource_version: ''\nstart_time: {start_ms}\nstatus: 3\n\
                 tags: []\nuser_id: freeal-bench\n",
                abs.display(),
                cell.name
            )
            .as_bytes(),
        )?;
        let mut metrics: BTreeMap<String, String> = BTreeMap::new();
        let mut t = start_ms;
        for r in &rounds {
            t += (r.outcome.wall_s * 1e3) as u64;
            let step = r.outcome.round;
            let usage = [
                ("llm_calls", r.outcome.llm.calls as f64),
                ("llm_prompt_tokens", r.outcome.llm.prompt_tokens as f64),
                ("slm_steps", r.outcome.slm_steps as f64),
                ("wall_s", r.outcome.wall_s),
            ];
            let all = r
                .outcome
                .metrics
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .chain(usage);
            for (key, value) in all {
                metrics
                    .entry(mlflow_key(key))
                    .or_default()
                    .push_str(&format!("{t} {value} {step}\n"));
            }
        }
        for (key, lines) in metrics {
            write_atomic(&run_dir.join("metrics").join(key), lines.as_bytes())?;
        }
        let mut params = cell_params(&cell_dir)?;
        params.insert("cell_id".into(), cell.id.clone());
        params.insert("method".into(), first.method.clone());
        params.insert("dataset".into(), first.dataset.clone());
        params.insert("seed".into(), first.seed.to_string());
        for (key, value) in params {
            write_atomic(
                &run_dir.join("params").join(mlflow_key(&key)),
                value.as_bytes(),
            )?;
        }
        let tags = [
            ("mlflow.runName", cell.name.as_str()),
            ("mlflow.user", "freeal-bench"),
            ("freeal_bench.params", first.params.as_str()),
        ];
        for (key, value) in tags {
            write_atomic(&run_dir.join("tags").join(key), value.as_bytes())?;
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_safe_for_the_file_store() {
        assert_eq!(
            mlflow_key("pool_label_accuracy[positive]"),
            "pool_label_accuracy.positive"
        );
        assert_eq!(mlflow_key("a/b c"), "a.b.c");
    }
}
