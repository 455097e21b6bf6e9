//! Arbitrary bytes as a data file; the first byte picks the layout (label_text, tsv, csv,
//! jsonl, conll).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&format, bytes)) = data.split_first() else {
        return;
    };
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    freeal_bench::fuzzing::data_file(dir.path(), usize::from(format), bytes);
});
