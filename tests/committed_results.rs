//! The committed results stay resumable: every cell's stored configuration, read back by the
//! current code, hashes to the id the cell was recorded under. A new setting that changed the
//! serialised configuration at its default value would re-key every existing cell, so `run`
//! would redo work users already have; this catches it on the runs in `results/`.

mod common;

use freeal_bench::plan::{CellConfig, cell_id};

#[test]
fn every_committed_cell_keeps_its_id() {
    let mut checked = 0;
    let results = common::root().join("results");
    for experiment in std::fs::read_dir(&results).unwrap().filter_map(|e| e.ok()) {
        let Ok(cells) = std::fs::read_dir(experiment.path().join("cells")) else {
            continue;
        };
        for cell in cells.filter_map(|e| e.ok()) {
            let path = cell.path().join("config.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
            let config: CellConfig = serde_json::from_value(stored["config"].clone())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                cell_id(&config),
                stored["id"].as_str().unwrap(),
                "{}: the current code gives this configuration another id",
                path.display()
            );
            checked += 1;
        }
    }
    // results/baselines alone holds 42 cells; an empty walk would prove nothing.
    assert!(checked >= 42, "only {checked} committed cells found");
}
