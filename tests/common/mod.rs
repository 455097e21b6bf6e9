//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod llm_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The repository root (cargo runs integration tests there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fetched default encoder, or a panic that says how to fetch it.
pub fn minilm_dir() -> PathBuf {
    fetched_encoder_dir("all-MiniLM-L6-v2")
}

/// A fetched encoder's directory, or a panic that says how to fetch it.
pub fn fetched_encoder_dir(name: &str) -> PathBuf {
    let dir = std::env::var_os("FREEAL_BENCH_RUN__MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(freeal_bench::slm::model::default_models_dir)
        .join(name);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{name} is missing from {}: run scripts/fetch-models.sh {name}",
        dir.display()
    );
    dir
}

/// One padded row of a reference fixture: its ids without padding and the reference model's
/// last hidden states for them.
#[derive(serde::Deserialize)]
pub struct StateRow {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// [tokens][hidden] states from PyTorch + transformers.
    pub last_hidden_state: Vec<Vec<f32>>,
}

/// Largest absolute difference between the hidden states the checkpoint in `dir` gives `rows`,
/// padded together with `pad_id`, and the reference's.
pub fn worst_state_difference(
    dir: &Path,
    rows: &[StateRow],
    pad_id: u32,
    device: &burn::tensor::Device,
) -> f32 {
    use freeal_bench::slm::tokenize::{Encoded, Padding, pad_batch};
    let model = pretrained_classifier(dir, device);
    let encoded: Vec<Encoded> = rows
        .iter()
        .map(|r| Encoded { ids: r.ids.clone() })
        .collect();
    let all: Vec<usize> = (0..rows.len()).collect();
    let host = pad_batch(&encoded, &all, Padding::longest(pad_id));
    let states = model.hidden_states(&model.batch_to_device(&host, device));
    states_difference(states, rows.iter().map(|r| &r.last_hidden_state))
}

/// Largest absolute difference between hidden states [batch, seq, hidden] and each row's
/// reference states ([tokens][hidden], its unpadded tokens only).
pub fn states_difference<'a>(
    states: burn::tensor::Tensor<3>,
    expected: impl IntoIterator<Item = &'a Vec<Vec<f32>>>,
) -> f32 {
    let [_, seq, hidden] = states.dims();
    let flat = states.into_data().try_into_vec::<f32>().unwrap();
    let mut worst = 0.0f32;
    for (b, row) in expected.into_iter().enumerate() {
        for (t, want) in row.iter().enumerate() {
            for (h, w) in want.iter().enumerate() {
                worst = worst.max((flat[(b * seq + t) * hidden + h] - w).abs());
            }
        }
    }
    worst
}

/// The Hugging Face checkpoint in `dir` under a two-label linear head, no dropout: what the
/// parity tests read hidden states from.
pub fn pretrained_classifier(
    dir: &Path,
    device: &burn::tensor::Device,
) -> freeal_bench::slm::classifier::ClassifierModel {
    let config = freeal_bench::slm::model::read_config(dir).unwrap();
    let mut encoder = freeal_bench::slm::encoder::Encoder::new(&config, None, device);
    freeal_bench::slm::weights::load_weights(&mut encoder, dir).unwrap();
    freeal_bench::slm::classifier::ClassifierModel::new(
        encoder,
        config.hidden_size,
        2,
        0.0,
        freeal_bench::config::Pooling::Mean,
        freeal_bench::config::Head::Linear,
        device,
    )
}

/// The wgpu device, or a panic that says how to get an adapter (CI installs lavapipe, so a
/// missing adapter there is a failure, not a skip).
pub fn wgpu_device() -> burn::tensor::Device {
    let Some(adapter) = freeal_bench::slm::device::wgpu_adapter() else {
        panic!(
            "no wgpu adapter: install mesa-vulkan-drivers and libvulkan1 (software Vulkan), as \
             .ci/run does"
        );
    };
    eprintln!("wgpu adapter: {adapter}");
    freeal_bench::slm::device::select(freeal_bench::config::BackendChoice::Wgpu)
        .unwrap()
        .0
}

/// Runs the binary with arguments, from the repository root.
pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// Rewrites the file at `path` through `edit` (one test's tweak of a shared spec).
pub fn edit(path: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, edit(text)).unwrap();
}

/// The values of a JSON-lines file, one per line.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The fetched test LLM (SmolLM2-135M-Instruct GGUF), or a panic that says how to fetch it.
pub fn smollm_path() -> PathBuf {
    let models = std::env::var_os("FREEAL_BENCH_RUN__MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(freeal_bench::slm::model::default_models_dir);
    let path = freeal_bench::llm::gguf_path("smollm2-135m-instruct", &models);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh smollm2-135m-instruct",
        path.display()
    );
    path
}

/// A toy sentiment set (600 lines, `toy/dataset.toml` under `dir`, a third held out for test):
/// four filler words plus two positive or two negative cue words.
pub fn toy_dataset(dir: &Path) -> PathBuf {
    let filler = [
        "the", "movie", "plot", "actor", "scene", "music", "story", "film", "ending", "cast",
        "script", "camera", "was", "and", "very", "quite",
    ];
    let cues = [
        ["awful", "dull", "boring"],
        ["great", "wonderful", "superb"],
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut rows = String::new();
    for _ in 0..600 {
        let label = rng.random_range(0..2usize);
        let mut words: Vec<&str> = (0..4).map(|_| *filler.choose(&mut rng).unwrap()).collect();
        for _ in 0..2 {
            let at = rng.random_range(0..=words.len());
            words.insert(at, cues[label].choose(&mut rng).unwrap());
        }
        rows.push_str(&format!("{label} {}\n", words.join(" ")));
    }
    write(dir, "toy/all.txt", &rows);
    write(
        dir,
        "toy/dataset.toml",
        "name = \"toy\"\ntask = \"classification\"\n[format]\nkind = \"label_text\"\n\
         [files]\ntrain = \"all.txt\"\n[split]\ntest_fraction = 0.3333\n\
         [labels]\nnames = [\"negative\", \"positive\"]\n",
    )
}

/// The tiny randomly initialised encoder (MiniLM's tokenizer) that learns the toy set in seconds.
pub fn tiny_slm_toml() -> String {
    format!(
        "[slm]\nmodel = \"{}\"\nrandom_init = {{ layers = 1, hidden = 32, heads = 2, intermediate = 64 }}\n\
         max_len = 16\nbatch_size = 16\nepochs = 8\nlr = 3e-3\nweight_decay = 0.0\n\
         warmup_ratio = 0.0\ngrad_clip = 0.0\n",
        minilm_dir().display()
    )
}

/// Runs `spec` on the CPU backend and returns what it printed (stderr, where the progress lines
/// go, then stdout); a failure fails the test with the binary's stderr.
pub fn run_spec(spec: &Path) -> String {
    let out = bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr + &String::from_utf8_lossy(&out.stdout)
}

/// The directory of the only cell under an experiment's results directory.
pub fn only_cell(experiment_dir: &Path) -> PathBuf {
    std::fs::read_dir(experiment_dir.join("cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// The records (one per round) of the cell whose directory is `cell`.
pub fn cell_records(cell: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(cell.join("records.json")).unwrap()).unwrap()
}

/// The records (one per round) of the only cell under an experiment's results directory.
pub fn only_cell_records(experiment_dir: &Path) -> serde_json::Value {
    cell_records(&only_cell(experiment_dir))
}

/// The `records.json` of every finished cell under an experiment's `cells` directory (none when
/// the directory does not exist yet).
pub fn complete_cells(cells: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cells) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("records.json"))
        .filter(|p| p.is_file())
        .collect()
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}
