//! Arbitrary bytes as a dataset definition (dataset.toml) next to a small valid data file.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    freeal_bench::fuzzing::dataset_definition(dir.path(), data);
});
