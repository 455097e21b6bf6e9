//! Arbitrary bytes as an experiment spec, planned against the checkout's defaults and datasets.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        // The project root (configs/defaults.toml) is found from the working directory.
        std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap();
        tempfile::tempdir().unwrap()
    });
    freeal_bench::fuzzing::spec(dir.path(), data);
});
