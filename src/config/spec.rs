//! Typed experiment specification: what `configs/defaults.toml` and an experiment file describe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::llm::annotator::AnswerMode;
use crate::llm::client::Price;
use crate::llm::demos::DemoChoice;
use crate::llm::openai::Endpoint;
use crate::llm::replay::ReplaySpec;
use crate::llm::spans::AnswerGrammar;
use crate::methods::active_learning::{AlSpec, Oracle};
use crate::methods::freeal::config::FreealSpec;
use crate::slm::encoder::Dropouts;

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
    /// The LLM annotator (used by methods that label with an LLM).
    pub llm: LlmSpec,
    /// Price per model id, US dollars per million tokens (for cost estimates; absent = 0).
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
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
    /// The LLM labels by in-context learning: zero-shot, random or k-NN demonstrations drawn
    /// from a small gold-labelled pool.
    Icl {
        /// How demonstrations are chosen.
        demos: DemoChoice,
        /// Demonstrations per query.
        #[serde(default)]
        k: usize,
        /// Training-pool examples whose gold labels form the demonstration pool (0 = all).
        #[serde(default)]
        demo_pool: usize,
        /// Class-balanced k-NN (k / classes nearest per class).
        #[serde(default)]
        balanced: bool,
        /// Also label the training pool and report the labels' accuracy (transductive).
        #[serde(default)]
        label_pool: bool,
    },
    /// FreeAL: LLM active labeling, robust SLM self-training, demonstration feedback, rounds.
    Freeal(FreealSpec),
    /// Traditional active learning with the gold labels as the oracle.
    ActiveLearning(AlSpec),
}

impl MethodSpec {
    /// The `kind` string as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            MethodSpec::Supervised { .. } => "supervised",
            MethodSpec::Icl { .. } => "icl",
            MethodSpec::Freeal(_) => "freeal",
            MethodSpec::ActiveLearning(_) => "active_learning",
        }
    }

    /// Whether cells of this method call the LLM (and so depend on the `[llm]` settings).
    pub fn uses_llm(&self) -> bool {
        match self {
            MethodSpec::Supervised { .. } => false,
            MethodSpec::ActiveLearning(a) => a.oracle == Oracle::Llm,
            MethodSpec::Icl { .. } | MethodSpec::Freeal(_) => true,
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
    /// What to do with repeated texts (skipped in the cell id when `keep`, so ids from before
    /// the setting existed stay valid).
    #[serde(default, skip_serializing_if = "Duplicates::is_keep")]
    pub duplicates: Duplicates,
}

/// Policy for texts that occur more than once in the training pool, or in both the pool and the
/// test split.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Duplicates {
    /// Keep the data as published (benchmarks' own splits have a few); counted in a warning.
    #[default]
    Keep,
    /// Keep the first occurrence in the pool and drop pool texts that are also test texts.
    Drop,
    /// Refuse to run, naming the first repeated text.
    Error,
}

impl Duplicates {
    fn is_keep(&self) -> bool {
        *self == Duplicates::Keep
    }
}

/// What the gradient-clipping threshold bounds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GradClipScope {
    /// Each parameter tensor's own norm (burn's `GradientClippingConfig::Norm` rule, summed in a
    /// fixed order); the default, and what every result recorded before this option existed
    /// used, so their cell ids stay.
    #[default]
    Tensor,
    /// The norm of all gradients together, one factor for all (PyTorch's `clip_grad_norm_`, as
    /// the official FreeAL and LLMaAA code and Hugging Face's Trainer clip).
    Global,
}

impl GradClipScope {
    fn is_tensor(&self) -> bool {
        *self == GradClipScope::Tensor
    }
}

/// What reads the pooled sentence vector.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Dropout and one linear layer; the default, and what every result recorded before this
    /// option existed used, so their cell ids stay.
    #[default]
    Linear,
    /// RoBERTa's sequence-classification head, which the official FreeAL code trains: dropout,
    /// a hidden-size dense layer, tanh, dropout, the output layer. Embedding mixup mixes what
    /// it reads, so its mixtures pass through a nonlinearity (through a linear head, mixing
    /// two inputs mixes their logits).
    DenseTanh,
}

impl Head {
    fn is_linear(&self) -> bool {
        *self == Head::Linear
    }
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
    /// What one clipping norm covers.
    #[serde(default, skip_serializing_if = "GradClipScope::is_tensor")]
    pub grad_clip_scope: GradClipScope,
    /// Hidden-state dropout during training (attention dropout too unless `attention_dropout`
    /// is set), in [0, 1).
    pub dropout: f64,
    /// Attention-probability dropout when it differs from `dropout` (the official FreeAL script
    /// raises only the hidden dropout, to 0.3), in [0, 1); unset = `dropout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_dropout: Option<f64>,
    /// Sentence pooling for the classification head and embeddings.
    pub pooling: Pooling,
    /// The classification head on the pooled vector.
    #[serde(default, skip_serializing_if = "Head::is_linear")]
    pub head: Head,
}

impl SlmSpec {
    /// The training dropout rates this spec asks for.
    pub fn dropouts(&self) -> Dropouts {
        Dropouts {
            hidden: self.dropout,
            attention: self.attention_dropout.unwrap_or(self.dropout),
        }
    }
}

/// Which annotator labels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LlmBackend {
    /// A GGUF model in-process through llama.cpp (the default: no server, no key).
    Embedded,
    /// Any OpenAI-compatible server (`base_url`).
    Http,
    /// Labels replayed from a file (`[llm.replay]`).
    Replay,
    /// Gold labels through a noise matrix: for fast tests only, never a default.
    Simulated,
}

/// The annotator: everything here can change labels, so it is part of the cell id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmSpec {
    /// Backend.
    pub backend: LlmBackend,
    /// Embedded: a name known to `scripts/fetch-models.sh` or a `.gguf` path; http: the model id.
    pub model: String,
    /// Log-probability scoring of the verbalizers, or free generation and parsing.
    pub mode: AnswerMode,
    /// Generated-token cap in generate mode.
    pub max_tokens: u32,
    /// Embedded: context window in tokens.
    pub n_ctx: u32,
    /// Prompt file; empty = `configs/prompts/<dataset>.toml`; relative paths: to `configs/`.
    pub prompts: String,
    /// Http: server base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Http: `chat` or `completions`.
    pub endpoint: Endpoint,
    /// Http: alternatives per position asked with logprobs.
    pub top_logprobs: u32,
    /// Replay: the file and its columns.
    #[serde(default)]
    pub replay: Option<ReplaySpec>,
    /// Simulated: the noise.
    pub simulated: SimulatedSpec,
    /// NER: how extraction answers are constrained (embedded, llama.cpp server).
    #[serde(default, skip_serializing_if = "AnswerGrammar::is_compact")]
    pub grammar: AnswerGrammar,
    /// Classification: the instruction lists each label with its description from the
    /// dataset's `[labels.descriptions]` (LLMaAA's label verbalisation), not the words alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub label_descriptions: bool,
}

/// Noise of the simulated annotator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimulatedSpec {
    /// Probability of answering the gold label (errors spread evenly) when `noise` is absent.
    pub accuracy: f64,
    /// Full class-conditional matrix: `noise[gold][answer]`, rows summing to 1.
    #[serde(default)]
    pub noise: Option<Vec<Vec<f64>>>,
}

/// LLM execution settings: they never change an answer, so they are not part of cell ids.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmRunSpec {
    /// Cache file; empty = `~/.cache/freeal-bench/llm-cache.sqlite`; `off` disables caching.
    pub cache: String,
    /// Write each cell's new answers to its own shard (`<cache>.shards/<cell id>.sqlite`),
    /// reading the main cache without locks; `report` merges the shards. For array jobs on
    /// many machines sharing the cache over NFS, where SQLite's locking is unsafe.
    pub cache_shards: bool,
    /// Embedded: CPU threads (0 = all cores).
    pub threads: usize,
    /// Http: environment variable holding the API key (unset = no key, fine for local servers).
    pub api_key_env: String,
    /// File whose first line is the API key, read when the environment variable is unset or
    /// empty (keeps the key out of shell history and job scripts); empty = none.
    pub api_key_file: String,
    /// Http: requests in flight.
    pub concurrency: usize,
    /// Http: requests per minute (0 = unlimited).
    pub requests_per_minute: u32,
    /// Http: tokens per minute (0 = unlimited).
    pub tokens_per_minute: u64,
    /// Http: retries per request on 429, 5xx and timeouts.
    pub max_retries: u32,
    /// Http: seconds before a request times out.
    pub timeout_s: f64,
    /// Http: first retry delay in seconds (doubles per retry, with jitter).
    pub backoff_s: f64,
    /// Http: hard cap on requests per cell, retries included (0 = none).
    pub max_requests: u64,
}

/// Where the encoder runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// wgpu when an adapter exists, else the CPU.
    Auto,
    /// burn's flex CPU backend with this crate's fused kernels (linear layers, attention's
    /// products and softmax, layer norm, GELU, dropout, AdamW: `slm::fused`).
    Cpu,
    /// burn's flex CPU backend with burn's own ops only: slower, and the numbers of runs made
    /// before the fused kernels existed.
    #[value(name = "cpu_unfused", alias = "cpu-unfused")]
    CpuUnfused,
    /// burn's wgpu backend (Vulkan, Metal, DX12; lavapipe in software).
    Wgpu,
    /// burn's tch backend on the CPU: libtorch's kernels (needs the `tch` cargo feature).
    Libtorch,
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
    /// Minutes between a long SLM training run's epoch checkpoints, which let a stopped cell go
    /// on after its last saved epoch (FreeAL's self-training on the CPU); 0 = every epoch.
    pub epoch_checkpoint_minutes: f64,
    /// How the LLM is reached (cache, threads, HTTP limits).
    pub llm: LlmRunSpec,
    /// Resources of each array task `plan --emit slurm` writes.
    pub slurm: SlurmSpec,
}

impl RunSpec {
    /// `epoch_checkpoint_minutes` as a duration (validated finite and non-negative).
    pub fn epoch_checkpoint_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.epoch_checkpoint_minutes.max(0.0) * 60.0)
    }
}

/// Slurm resources per cell (one array task per cell).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    /// Partition (`--partition`); empty = the cluster's default.
    pub partition: String,
    /// CPU cores per task (`--cpus-per-task`).
    pub cpus_per_task: usize,
    /// Memory per task (`--mem`, e.g. `16G`).
    pub mem: String,
    /// Wall-clock limit per task (`--time`, e.g. `04:00:00`).
    pub time: String,
    /// GPUs per task (`--gres=gpu:N`); 0 = none.
    pub gpus: usize,
    /// Further `#SBATCH` options, verbatim (e.g. `--account=nlp`).
    pub extra: Vec<String>,
}
