//! A bounded, seeded mutation fuzzer over what users hand the program as files: experiment
//! specs, dataset definitions and data files in every layout. It runs in the default test suite
//! (FREEAL_FUZZ_SECONDS per test, 10 by default; the data-file test shares it among layouts) on stable Rust, through the same entry points
//! as the cargo-fuzz targets in fuzz/ (longer, coverage-guided runs; see RELIABILITY.md).
//! Every input must end in Ok or a clean error: a panic saves the input and fails the test.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use freeal_bench::fuzzing;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Fragments that tend to matter to TOML and the loaders.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"'",
    b"[",
    b"]",
    b"[[",
    b"=",
    b"\n",
    b"\t",
    b",",
    b" ",
    b"\xff",
    b"\xc3",
    b"0",
    b"-1",
    b"1e309",
    b"nan",
    b"18446744073709551616",
    b"[sweep]\n",
    b"seed = [",
    b"{",
    b"}",
    b"[data]\ntrain_limit = ",
    b"\"\"\"",
    b"true",
    b"-DOCSTART-",
    b"B-PER",
    b"I-LOC",
    b"\r\n",
    b"include = [\"",
    b"dataset = \"",
    b"method = [\"freeal\", \"al20\", \"zero_shot\"]\n",
];

fn seconds() -> Duration {
    let s = std::env::var("FREEAL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(10.0);
    Duration::from_secs_f64(s)
}

fn mutate(input: &[u8], corpus: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..6) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let token = TOKENS.choose(rng).unwrap();
                out.splice(at..at, token.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + rng.random_range(1..64)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                // Repeat a chunk (long lines, many sweep values).
                let start = rng.random_range(0..out.len());
                let end = (start + rng.random_range(1..40)).min(out.len());
                let chunk = out[start..end].repeat(rng.random_range(2..20));
                out.splice(at..at, chunk);
            }
            4 => {
                // Splice in part of another input.
                let other = corpus.choose(rng).unwrap();
                if !other.is_empty() {
                    let start = rng.random_range(0..other.len());
                    let end = (start + rng.random_range(1..200)).min(other.len());
                    out.splice(at..at, other[start..end].iter().copied());
                }
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// Runs `target` on mutations of `corpus` for the time budget; panics (after saving the input)
/// if any input panics or takes more than 10 s.
fn fuzz(name: &str, corpus: Vec<Vec<u8>>, budget: Duration, target: impl Fn(&Path, &[u8])) {
    assert!(!corpus.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0xf022);
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget || runs < corpus.len() as u64 {
        // The corpus as it is first, then mutations of it.
        let input = match corpus.get(runs as usize) {
            Some(seed) => seed.clone(),
            None => mutate(corpus.choose(&mut rng).unwrap(), &corpus, &mut rng),
        };
        let began = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target(dir.path(), &input)));
        let took = began.elapsed();
        if outcome.is_err() || took > Duration::from_secs(10) {
            let saved = std::env::temp_dir().join(format!("freeal-fuzz-{name}-{runs}.bin"));
            std::fs::write(&saved, &input).unwrap();
            panic!(
                "{name}: input {runs} {} (took {took:?}); saved to {}",
                if outcome.is_err() { "panicked" } else { "hung" },
                saved.display()
            );
        }
        runs += 1;
    }
    eprintln!("{name}: {runs} inputs in {:?}, no panic", start.elapsed());
}

/// The first `n` lines of a file.
fn head(path: &Path, n: usize) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let mut lines = 0;
    let end = bytes
        .iter()
        .position(|&b| {
            lines += usize::from(b == b'\n');
            lines == n
        })
        .map_or(bytes.len(), |i| i + 1);
    bytes[..end].to_vec()
}

#[test]
fn specs_never_panic() {
    let root = common::root();
    let toml = |p: &Path| p.extension().is_some_and(|e| e == "toml");
    let mut corpus: Vec<Vec<u8>> = common::files_under(&root.join("experiments"))
        .into_iter()
        .chain(common::files_under(&root.join("tests/fixtures/specs")))
        .filter(|p| toml(p))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    corpus.push(Vec::new());
    fuzz("spec", corpus, seconds(), fuzzing::spec);
}

#[test]
fn dataset_definitions_never_panic() {
    let root = common::root();
    let corpus: Vec<Vec<u8>> = common::files_under(&root.join("datasets"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "dataset.toml"))
        .map(|p| {
            // Their own files are not beside the fuzzing folder; point them at its small one.
            let text = std::fs::read_to_string(p).unwrap();
            let files = text.find("[files]").unwrap_or(text.len());
            let rest = text[files..]
                .find("\n[")
                .map_or(text.len(), |i| files + i + 1);
            format!(
                "{}[files]\ntrain = \"rows\"\n{}",
                &text[..files],
                &text[rest..]
            )
            .into_bytes()
        })
        .collect();
    fuzz(
        "dataset_definition",
        corpus,
        seconds(),
        fuzzing::dataset_definition,
    );
}

#[test]
fn data_files_never_panic_in_any_layout() {
    let root = common::root();
    let seeds: Vec<(usize, Vec<u8>)> = vec![
        (0, head(&root.join("datasets/sst2/raw/stsa_binary/stsa.binary.train"), 30)),
        (1, head(&root.join("datasets/sst2/raw/glue_alps/train.tsv"), 30)),
        (2, b"0,\"a dull, long film\"\n1,\"a \"\"fine\"\" film\"\n0,bad\n1,good\n".to_vec()),
        (
            3,
            b"{\"text\": \"a dull film\", \"label\": \"negative\"}\n{\"text\": \"fine\", \"label\": 1}\n"
                .to_vec(),
        ),
        (4, head(&root.join("datasets/conll03/raw/eng.train"), 60)),
    ];
    // Each format fuzzed on its own seed and on the others' (wrong-layout files).
    let corpus: Vec<Vec<u8>> = seeds.iter().map(|(_, bytes)| bytes.clone()).collect();
    let share = seconds() / seeds.len() as u32;
    for (format, _) in &seeds {
        let format = *format;
        fuzz(
            &format!("data_file[{format}]"),
            corpus.clone(),
            share,
            |dir, bytes| fuzzing::data_file(dir, format, bytes),
        );
    }
}
