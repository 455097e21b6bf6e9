//! SLM training with learning-to-reweight (Ren et al. 2018) against a gold meta set, as LLMaAA
//! trains on LLM labels: every batch, each example's weight is the clamped, normalised
//! meta-gradient of its loss, computed exactly for the classifier's output layer (closed form,
//! see `select::reweight`). The encoder's parameters, and `dense_tanh`'s dense layer, are left
//! out of the meta-gradient: it weighs examples by how their output-layer gradients align with
//! the meta set's. A tagger's sentences are weighed the same way, their gradient the mean of
//! their labelled words'.

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::select::reweight::{HeadExample, TaggedExample, example_weights};
use crate::slm::losses::soft_cross_entropy;
use crate::slm::model::Step;
use crate::slm::tagging::{gather, ids_of, labelled_positions, tag_targets};
use crate::slm::tokenize::{Encoded, WordEncoded};
use crate::slm::{FitReport, Slm};

fn rows_of(t: Tensor<2>) -> Result<Vec<Vec<f64>>> {
    let [rows, cols] = t.dims();
    let flat = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::model("reweight", format!("{e:?}")))?;
    Ok((0..rows)
        .map(|r| {
            flat[r * cols..(r + 1) * cols]
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        })
        .collect())
}

fn head_examples(
    read: Tensor<2>,
    logits: Tensor<2>,
    targets: Tensor<2>,
) -> Result<Vec<HeadExample>> {
    let features = rows_of(read.detach())?;
    let errors = rows_of(softmax(logits.detach(), 1) - targets)?;
    Ok(features
        .into_iter()
        .zip(errors)
        .map(|(features, error)| HeadExample { features, error })
        .collect())
}

/// What the learned weights did over one fit: how often they zeroed examples or whole batches,
/// and how much of the weight went to examples whose label is wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WeightStats {
    /// Example-steps weighed.
    pub examples: u64,
    /// Example-steps given weight 0.
    pub zeroed: u64,
    /// Batches weighed.
    pub batches: u64,
    /// Batches whose weights were all 0 (no update at all).
    pub dead_batches: u64,
    /// Example-steps whose training label is wrong.
    pub wrong: u64,
    /// Sum of all weights (1 per live batch).
    pub weight: f64,
    /// Sum of the weights of examples whose training label is wrong.
    pub weight_on_wrong: f64,
}

impl WeightStats {
    /// Counts one batch: its rows' learned `weights` and whether their labels are wrong.
    fn add_batch(&mut self, rows: &[usize], weights: &[f32], label_wrong: &[bool]) {
        self.batches += 1;
        self.dead_batches += u64::from(weights.iter().all(|&w| w == 0.0));
        for (&row, &w) in rows.iter().zip(weights) {
            self.examples += 1;
            self.zeroed += u64::from(w == 0.0);
            self.weight += f64::from(w);
            if label_wrong[row] {
                self.wrong += 1;
                self.weight_on_wrong += f64::from(w);
            }
        }
    }

    /// The statistics as record metrics (`reweight_*`): the share of example-steps zeroed, of
    /// dead batches, of weight on wrong labels, and the share of wrong labels it compares with.
    pub fn metrics(&self) -> [(&'static str, f64); 4] {
        let share = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        [
            (
                "reweight_zeroed_fraction",
                share(self.zeroed as f64, self.examples as f64),
            ),
            (
                "reweight_dead_batch_fraction",
                share(self.dead_batches as f64, self.batches as f64),
            ),
            (
                "reweight_weight_on_wrong",
                share(self.weight_on_wrong, self.weight),
            ),
            (
                "reweight_wrong_label_fraction",
                share(self.wrong as f64, self.examples as f64),
            ),
        ]
    }
}

/// Fine-tunes on the `usable` rows of `encoded` with per-batch learned weights; `meta` rows of
/// `meta_encoded` with their gold `meta_targets` are the meta set (a batch-size sample per step).
/// `label_wrong[row]` (from gold, for the statistics only) says whether a row's label is wrong.
#[allow(clippy::too_many_arguments)]
pub fn fit_reweighted(
    slm: &mut Slm,
    encoded: &[Encoded],
    targets: &[Vec<f32>],
    usable: &[usize],
    label_wrong: &[bool],
    meta_encoded: &[Encoded],
    meta_targets: &[Vec<f32>],
    batch_size: usize,
    rng: &mut ChaCha8Rng,
    progress: &Progress,
) -> Result<(FitReport, WeightStats)> {
    let mut stats = WeightStats::default();
    let num_labels = slm.num_labels();
    let report = slm.train_epochs(encoded, usable, "reweighted", progress, |step| {
        let target = step.rows_tensor(targets);
        let (read, logits) = step.model.output_inputs_logits(&step.batch);
        let meta_rows: Vec<usize> =
            sample(rng, meta_encoded.len(), batch_size.min(meta_encoded.len())).into_vec();
        let meta_batch = step.batch_of(meta_encoded, &meta_rows);
        let (meta_read, meta_logits) = step.model.output_inputs_logits(&meta_batch);
        let flat: Vec<f32> = meta_rows
            .iter()
            .flat_map(|&r| meta_targets[r].iter().copied())
            .collect();
        let meta_target = Tensor::<2>::from_data(
            TensorData::new(flat, [meta_rows.len(), num_labels]),
            step.device(),
        );
        let train = head_examples(read, logits.clone(), target.clone())?;
        let meta = head_examples(meta_read, meta_logits, meta_target)?;
        // The virtual step's learning rate only scales the meta-gradient; normalised
        // weights do not depend on it.
        let weights: Vec<f32> = example_weights(&train, &meta, 1.0)
            .into_iter()
            .map(|w| w as f32)
            .collect();
        stats.add_batch(step.rows, &weights, label_wrong);
        let w = Tensor::<1>::from_data(TensorData::new(weights, [step.rows.len()]), step.device());
        Ok((soft_cross_entropy(logits, target) * w).sum())
    })?;
    Ok((report, stats))
}

/// Per batch row, the output layer's view of its labelled words: what it reads at them and
/// their `softmax - one-hot` errors (`positions` index the flattened `[rows, seq]` tokens).
fn tagged_examples(
    read: Tensor<3>,
    logits: Tensor<3>,
    positions: &[i64],
    tags: &[usize],
    rows: usize,
    step: &Step,
) -> Result<Vec<TaggedExample>> {
    let mut out = vec![TaggedExample::default(); rows];
    if positions.is_empty() {
        return Ok(out);
    }
    let seq = logits.dims()[1];
    let features = rows_of(gather(read.detach(), positions, step))?;
    let probs = rows_of(softmax(gather(logits.detach(), positions, step), 1))?;
    for ((&pos, &tag), (features, mut error)) in positions
        .iter()
        .zip(tags)
        .zip(features.into_iter().zip(probs))
    {
        error[tag] -= 1.0;
        out[pos as usize / seq]
            .words
            .push(HeadExample { features, error });
    }
    Ok(out)
}

/// The tagger's counterpart of [`fit_reweighted`]: each batch's sentences are weighed by the
/// meta-gradient of their mean word loss against a batch-size sample of the gold `meta_tags`
/// sentences, and each sentence's words share its weight.
#[allow(clippy::too_many_arguments)]
pub fn fit_tags_reweighted(
    slm: &mut Slm,
    words: &[WordEncoded],
    labels: &[Option<Vec<usize>>],
    label_wrong: &[bool],
    meta_words: &[WordEncoded],
    meta_tags: &[Option<Vec<usize>>],
    batch_size: usize,
    rng: &mut ChaCha8Rng,
    progress: &Progress,
) -> Result<(FitReport, WeightStats)> {
    let usable: Vec<usize> = (0..words.len()).filter(|&i| labels[i].is_some()).collect();
    if usable.is_empty() || meta_words.is_empty() {
        return Err(Error::model(
            "tagger",
            "reweighting needs labelled training sentences and a meta set",
        ));
    }
    let meta_ids = ids_of(meta_words);
    let mut stats = WeightStats::default();
    let report = slm.train_epochs(&ids_of(words), &usable, "reweighted", progress, |step| {
        let (read, logits) = step.model.token_output_inputs_logits(&step.batch);
        let seq = logits.dims()[1];
        let (positions, tags) = labelled_positions(words, labels, step.rows, seq, |_| true);
        if positions.is_empty() {
            // Every word of the batch was cut off by truncation: nothing to learn.
            return Ok(logits.sum() * 0.0);
        }
        let meta_rows: Vec<usize> =
            sample(rng, meta_ids.len(), batch_size.min(meta_ids.len())).into_vec();
        let (meta_read, meta_logits) = step
            .model
            .token_output_inputs_logits(&step.batch_of(&meta_ids, &meta_rows));
        let meta_seq = meta_logits.dims()[1];
        let (meta_positions, meta_truth) =
            labelled_positions(meta_words, meta_tags, &meta_rows, meta_seq, |_| true);
        let train = tagged_examples(
            read,
            logits.clone(),
            &positions,
            &tags,
            step.rows.len(),
            step,
        )?;
        let meta = tagged_examples(
            meta_read,
            meta_logits,
            &meta_positions,
            &meta_truth,
            meta_rows.len(),
            step,
        )?;
        let weights: Vec<f32> = example_weights(&train, &meta, 1.0)
            .into_iter()
            .map(|w| w as f32)
            .collect();
        stats.add_batch(step.rows, &weights, label_wrong);
        let word_weights: Vec<f32> = positions
            .iter()
            .map(|&p| {
                let j = p as usize / seq;
                weights[j] / train[j].words.len() as f32
            })
            .collect();
        let n_tags = logits.dims()[2];
        let w = Tensor::<1>::from_data(
            TensorData::new(word_weights, [positions.len()]),
            step.device(),
        );
        let ce = soft_cross_entropy(
            gather(logits, &positions, step),
            tag_targets(&tags, n_tags, step),
        );
        Ok((ce * w).sum())
    })?;
    Ok((report, stats))
}
