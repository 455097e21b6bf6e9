//! Typed experiment specification: what `configs/defaults.toml` and an experiment file describe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A fully layered experiment spec (defaults < includes < spec file < env < `--set`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Other TOML files (relative to `configs/`) merged below the spec.
    #[serde(default)]
    pub include: Vec<String>,
    /// Name, description and reference numbers of the experiment.
    pub experiment: ExperimentSpec,
    /// Dataset name (`datasets/NAME/dataset.toml`) or a path to a dataset TOML file.
    pub dataset: String,
    /// Method name: a key of `[methods]`.
    pub method: String,
    /// Seed of every random choice in a cell.
    pub seed: u64,
    /// Lists of values to expand into cells; see [`crate::config::sweep`].
    #[serde(default)]
    pub sweep: BTreeMap<String, figment::value::Value>,
    /// Named method configurations (`[methods.NAME]`, each with a `kind`).
    pub methods: BTreeMap<String, MethodSpec>,
    /// Pool and test subsampling.
    pub data: DataSpec,
    /// The small language model (classifier) and its training.
    pub slm: SlmSpec,
    /// Execution settings that never change a cell's numbers.
    pub run: RunSpec,
}

/// Experiment metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Name; results land in `results/<name>/`.
    pub name: String,
    /// Free text shown in the generated README.
    #[serde(default)]
    pub description: String,
    /// Metric shown in the summary table (a record column, final round).
    pub metric: String,
    /// Published numbers to print beside ours: method name -> dataset -> value.
    #[serde(default)]
    pub paper_reference: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One named method configuration; `kind` selects the implementation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodSpec {
    /// Train the SLM on gold labels (all of them, or a random fraction).
    Supervised {
        /// Fraction of the training pool whose gold labels are used, in (0, 1].
        fraction: f64,
    },
}

impl MethodSpec {
    /// The `kind` string as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            MethodSpec::Supervised { .. } => "supervised",
        }
    }
}

/// How the dataset is cut down for a run (for quick starts and tests).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Keep at most this many training-pool examples (0 = all), chosen with `data.seed`.
    pub train_limit: usize,
    /// Keep at most this many test examples (0 = all), chosen with `data.seed`.
    pub test_limit: usize,
    /// Seed of subsampling and of splitting datasets that ship without a split; fixed across cells
    /// so that every method and seed sees the same pool.
    pub seed: u64,
}

/// Pooling of token states into one sentence vector.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token's state (BERT's `[CLS]`, RoBERTa's `<s>`).
    Cls,
    /// Mean over non-padding tokens (sentence-transformers' choice for MiniLM).
    Mean,
}

/// Architecture of a randomly initialised encoder (tests and ablations; never pretrained).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomInit {
    /// Transformer layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads (must divide `hidden`).
    pub heads: usize,
    /// Feed-forward size.
    pub intermediate: usize,
}

/// The small language model and how it is trained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlmSpec {
    /// A model name known to `scripts/fetch-models.sh` (looked up in the models directory) or a
    /// path to a Hugging Face model directory.
    pub model: String,
    /// When set, the encoder is randomly initialised with this shape (the tokenizer still comes
    /// from `model`).
    #[serde(default)]
    pub random_init: Option<RandomInit>,
    /// Tokens per text after truncation (1..=512).
    pub max_len: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Inference batch size.
    pub eval_batch_size: usize,
    /// Training epochs.
    pub epochs: usize,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Decoupled weight decay of AdamW.
    pub weight_decay: f64,
    /// Fraction of steps spent on linear warm-up, in [0, 1).
    pub warmup_ratio: f64,
    /// Gradient-norm clipping threshold (0 = off).
    pub grad_clip: f64,
    /// Hidden and attention dropout during training, in [0, 1).
    pub dropout: f64,
    /// Sentence pooling for the classification head and embeddings.
    pub pooling: Pooling,
}

/// Where the encoder runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// wgpu when an adapter exists, else the CPU.
    Auto,
    /// burn's flex CPU backend.
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12; lavapipe in software).
    Wgpu,
}

/// Execution settings: they never change a cell's numbers, so they are not part of its id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Root of results (`<results_dir>/<experiment.name>/`), relative to the working directory.
    pub results_dir: String,
    /// Cells run in parallel.
    pub jobs: usize,
    /// Tensor backend.
    pub backend: BackendChoice,
    /// Directory of fetched models; empty = `$HOME/.cache/freeal-bench/models`.
    pub models_dir: String,
}
