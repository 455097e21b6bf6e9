//! Entry points for fuzzing: arbitrary bytes where users give files (an experiment spec, a
//! dataset definition, a data file). The cargo-fuzz targets in `fuzz/` and the bounded run in
//! `tests/fuzz_inputs.rs` call these; any outcome but a panic or a hang is correct.

use std::path::Path;

use crate::config::spec::Duplicates;
use crate::data::{Dataset, DatasetDef};

/// The `[format]` tables of the loader's layouts, one per kind.
pub const FORMATS: [&str; 5] = [
    "kind = \"label_text\"",
    "kind = \"tsv\"\nheader = true\ntext = \"sentence\"\nlabel = \"label\"",
    "kind = \"csv\"\nheader = false\ntext = 1\nlabel = 0",
    "kind = \"jsonl\"\ntext = \"text\"\nlabel = \"label\"",
    "kind = \"conll\"\ntoken_column = 0\ntag_column = 3",
];

/// Writes `bytes` as `dir/spec.toml` and plans it: layering over the defaults, validation,
/// sweep expansion, dataset definitions and prompt files.
pub fn spec(dir: &Path, bytes: &[u8]) {
    let path = dir.join("spec.toml");
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    if let Ok(layered) = crate::config::layer(&path, &[]) {
        let _ = crate::plan::plan(&layered);
    }
}

/// Writes `bytes` as the training file of a dataset read with `FORMATS[format % 5]` and loads
/// it: parsing, labels, the random test cut, the duplicate policy, subsampling.
pub fn data_file(dir: &Path, format: usize, bytes: &[u8]) {
    let format = FORMATS[format % FORMATS.len()];
    let (task, names) = if format.contains("conll") {
        ("ner", "[\"PER\", \"LOC\"]")
    } else {
        ("classification", "[\"negative\", \"positive\"]")
    };
    let definition = format!(
        "name = \"fuzz\"\ntask = \"{task}\"\n[format]\n{format}\n[files]\ntrain = \"rows\"\n\
         [split]\ntest_fraction = 0.25\n[labels]\nnames = {names}\n"
    );
    if std::fs::write(dir.join("rows"), bytes).is_err() {
        return;
    }
    load_definition(dir, definition.as_bytes());
}

/// Writes `bytes` as a dataset definition next to a small valid data file and loads it.
pub fn dataset_definition(dir: &Path, bytes: &[u8]) {
    let rows = "0 a dull film\n1 a fine film\n0 bad\n1 good\n";
    if std::fs::write(dir.join("rows"), rows).is_err() {
        return;
    }
    load_definition(dir, bytes);
}

fn load_definition(dir: &Path, definition: &[u8]) {
    let path = dir.join("dataset.toml");
    if std::fs::write(&path, definition).is_err() {
        return;
    }
    let Ok(def) = DatasetDef::from_file(&path) else {
        return;
    };
    for policy in [Duplicates::Keep, Duplicates::Drop, Duplicates::Error] {
        if let Ok(dataset) = Dataset::load(&def, 7) {
            let train_file = def.path(&def.files.train);
            if let Ok(dataset) = dataset.handle_duplicates(policy, &train_file) {
                let _ = dataset.limit(3, 2, 7);
            }
        }
    }
}
