//! Tables (and later plots) built from records alone.

pub mod tables;

use std::path::Path;

use crate::error::{Error, Result};
use crate::run::records::{RECORDS_JSON, RoundRecord};

/// Reads every complete cell's records under `<dir>/cells/`, ordered as `order` lists cell ids
/// (cells not in `order` follow by directory name).
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
        per_cell.push((
            rank,
            entry.file_name().to_string_lossy().into_owned(),
            records,
        ));
    }
    per_cell.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok(per_cell.into_iter().flat_map(|(_, _, r)| r).collect())
}
