//! Tables (and later plots) built from records alone.

pub mod tables;

use std::path::Path;

use crate::error::{Error, Result};
use crate::run::records::{RECORDS_JSON, RoundRecord};

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
        let records: Vec<RoundRecord> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::results(&path, format!("unreadable records: {e}")))?;
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
}
