//! FreeAL's robust self-training of the SLM on noisy LLM labels: warm-up on every label, then
//! each epoch a two-component GMM on the normalised per-example losses splits clean from noisy;
//! cross-entropy and embedding mixup on the clean set, consistency with a second view (CE on
//! clean, symmetric KL on the rest), both ramped up linearly.

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::augment::Augmentation;
use super::config::{CleanSplit, FreealSpec, SelfTraining};
use crate::error::{Error, Result};
use crate::llm::annotator::one_hot;
use crate::methods::target_rows;
use crate::progress::Progress;
use crate::select::gmm::{Gmm2, GmmOptions, min_max_normalize};
use crate::slm::Slm;
use crate::slm::losses::{mix, mixup_draw, soft_cross_entropy, symmetric_kl};
use crate::slm::model::{Inference, Step, Trainer, per_example_loss, weighted_cross_entropy};
use crate::slm::tokenize::Encoded;
use crate::stream_pos::StreamPos;

/// The clean/noisy split of one set of labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    /// True for labeled examples the GMM puts in the low-loss component with posterior above
    /// the threshold.
    pub clean: Vec<bool>,
    /// Posterior of the low-loss component (0 for unlabeled examples).
    pub posterior: Vec<f64>,
}

/// Splits labeled examples by their losses (from [`label_losses`]): [`split_losses`] over all
/// labels at once or per label class.
pub fn split_clean(
    losses: &[Option<f64>],
    labels: &[Option<usize>],
    threshold: f64,
    mode: CleanSplit,
) -> Split {
    let n = labels.iter().flatten().max().map_or(0, |&c| c + 1);
    match mode {
        CleanSplit::Global => split_losses(losses, threshold),
        CleanSplit::PerClass => {
            let mut split = Split {
                clean: vec![false; labels.len()],
                posterior: vec![0.0; labels.len()],
            };
            for class in 0..n {
                let part = split_losses(&losses_of_class(losses, labels, class), threshold);
                for i in (0..labels.len()).filter(|&i| labels[i] == Some(class)) {
                    split.clean[i] = part.clean[i];
                    split.posterior[i] = part.posterior[i];
                }
            }
            split
        }
    }
}

/// The losses of the examples labeled `class`, `None` for the rest: what a per-class split
/// fits.
pub fn losses_of_class(
    losses: &[Option<f64>],
    labels: &[Option<usize>],
    class: usize,
) -> Vec<Option<f64>> {
    losses
        .iter()
        .zip(labels)
        .map(|(loss, l)| loss.filter(|_| *l == Some(class)))
        .collect()
}

/// Each example's cross-entropy against its label under `probs` (`None` when unlabeled): what
/// the split sees.
pub fn label_losses(probs: &[Vec<f32>], labels: &[Option<usize>]) -> Vec<Option<f64>> {
    let n = probs.first().map_or(0, Vec::len);
    probs
        .iter()
        .zip(labels)
        .map(|(p, l)| {
            let target = one_hot(*l, n);
            let loss = per_example_loss(std::slice::from_ref(p), &[target])[0];
            l.map(|_| f64::from(loss))
        })
        .collect()
}

/// Splits labeled examples (`Some` loss) by their loss: min-max normalised, two-component GMM,
/// clean when the low-loss posterior exceeds `threshold`. With fewer than two distinct losses
/// (no mixture to fit, nothing to tell apart) every labeled example is clean.
pub fn split_losses(losses: &[Option<f64>], threshold: f64) -> Split {
    let labeled: Vec<usize> = (0..losses.len()).filter(|&i| losses[i].is_some()).collect();
    let values: Vec<f64> = labeled.iter().filter_map(|&i| losses[i]).collect();
    let normalised = min_max_normalize(&values);
    let mut clean = vec![false; losses.len()];
    let mut posterior = vec![0.0; losses.len()];
    match Gmm2::fit(&normalised, GmmOptions::default()) {
        Some(gmm) => {
            for (&i, p) in labeled.iter().zip(gmm.low_posterior(&normalised)) {
                posterior[i] = p;
                clean[i] = p > threshold;
            }
        }
        None => {
            for &i in &labeled {
                posterior[i] = 1.0;
                clean[i] = true;
            }
        }
    }
    Split { clean, posterior }
}

/// Linear ramp from 0 to 1 over `length` epochs (FreeAL's `linear_rampup`).
pub fn rampup(epoch_pos: f64, length: f64) -> f32 {
    if length <= 0.0 || epoch_pos >= length {
        1.0
    } else {
        (epoch_pos / length) as f32
    }
}

/// The second view the consistency loss uses, tokenised.
pub enum View<'a> {
    /// No consistency loss.
    None,
    /// The same tokens again (a fresh dropout mask).
    Dropout,
    /// Other texts (token edits, replayed back-translations).
    Texts(&'a [Encoded]),
}

impl<'a> View<'a> {
    /// The view for an augmentation kind; `texts` holds the tokenised views of the kinds that
    /// have texts.
    pub fn new(kind: Augmentation, texts: Option<&'a [Encoded]>) -> Self {
        match (kind, texts) {
            (Augmentation::None, _) => View::None,
            (_, Some(texts)) => View::Texts(texts),
            (_, None) => View::Dropout,
        }
    }
}

/// What one round of self-training leaves behind.
pub struct Trained {
    /// The trained SLM.
    pub slm: Slm,
    /// Its outputs on the training pool (probabilities, logits, pooled embeddings).
    pub pool: Inference,
    /// The clean/noisy split under the trained model.
    pub split: Split,
    /// The label losses under the trained model that `split` was fitted on (`None` when
    /// unlabeled).
    pub losses: Vec<Option<f64>>,
    /// Optimiser steps taken.
    pub steps: u64,
    /// The clean flags each robust epoch trained with, by 1-based epoch (empty for plain CE):
    /// shows when and how the split drifts.
    pub epoch_splits: Vec<(usize, Vec<bool>)>,
    /// The label losses each fresh split was fitted on, by 1-based epoch (see
    /// [`Position::epoch_losses`]).
    pub epoch_losses: Vec<(usize, Vec<Option<f64>>)>,
    /// Seconds earlier processes spent on this training before an epoch checkpoint.
    pub earlier_wall_s: f64,
}

fn index(positions: &[usize], step: &Step) -> Tensor<1, Int> {
    let v: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(v, [positions.len()]), step.device())
}

/// FreeAL's loss on one batch.
fn robust_loss(
    step: &Step,
    clean: &[bool],
    consistent: &[bool],
    targets: &[Vec<f32>],
    view: &View,
    spec: &FreealSpec,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor<1>> {
    let (pooled, logits) = step.model.forward(&step.batch);
    let c: Vec<usize> = (0..step.rows.len())
        .filter(|&p| clean[step.rows[p]])
        .collect();
    let u: Vec<usize> = (0..step.rows.len())
        .filter(|&p| !clean[step.rows[p]] && consistent[step.rows[p]])
        .collect();
    let w = rampup(step.epoch_pos, spec.rampup_epochs);
    let mut terms: Vec<Tensor<1>> = Vec::new();
    let mut target_c = None;
    if !c.is_empty() {
        let ci = index(&c, step);
        let target = step.rows_tensor(targets).select(0, ci.clone());
        terms.push(soft_cross_entropy(logits.clone().select(0, ci.clone()), target.clone()).mean());
        let (partner, lambda) = mixup_draw(c.len(), spec.mixup_alpha, rng);
        let pi = index(&partner, step);
        let own = pooled.select(0, ci.clone());
        let mixed = step
            .model
            .head(mix(own.clone(), own.select(0, pi.clone()), lambda));
        let mixed_target = mix(target.clone(), target.clone().select(0, pi), lambda);
        terms.push(soft_cross_entropy(mixed, mixed_target).mean() * w);
        target_c = Some((ci, target));
    }
    let second = match view {
        View::None => None,
        View::Dropout => Some(step.batch.clone()),
        View::Texts(texts) => Some(step.view(texts)),
    };
    if let Some(second) = second {
        let (_, logits_v) = step.model.forward(&second);
        if let Some((ci, target)) = target_c {
            terms.push(soft_cross_entropy(logits_v.clone().select(0, ci), target).mean() * w);
        }
        if !u.is_empty() {
            let ui = index(&u, step);
            terms.push(
                symmetric_kl(
                    logits.clone().select(0, ui.clone()),
                    logits_v.select(0, ui),
                    spec.temperature as f32,
                ) * w,
            );
        }
    }
    // A batch of unlabeled rows alone has no term when they are kept out of the consistency
    // term (`unlabeled_consistency = false`): a zero loss, so no gradient from its rows; the
    // optimiser's step still counts (schedule, AdamW's moments and weight decay), whatever
    // the rows' texts.
    Ok(terms
        .into_iter()
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| logits.sum() * 0.0))
}

/// Where a self-training run stands after a whole number of epochs: with the SLM's own
/// [`TrainingState`](crate::slm::snapshot::TrainingState), what an epoch checkpoint holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub steps: u64,
    /// The clean flags the last epoch trained with.
    pub clean: Vec<bool>,
    /// The clean flags of each robust epoch so far (see [`Trained::epoch_splits`]).
    pub epoch_splits: Vec<(usize, Vec<bool>)>,
    /// The label losses each fresh split was fitted on, by 1-based epoch: one entry per split
    /// the schedule fitted (a split-once schedule has one), so that a trace can say how well
    /// the loss told wrong labels apart as training went on. Checkpoints written before this
    /// field read as none.
    #[serde(default)]
    pub epoch_losses: Vec<(usize, Vec<Option<f64>>)>,
    /// Where the mixup stream stands.
    pub mixup_word_pos: StreamPos,
    /// Seconds spent training before this process (earlier, interrupted runs).
    pub wall_s: f64,
}

/// Saves and restores a self-training run between epochs (an epoch checkpoint).
pub trait EpochStore {
    /// The saved run of these `labels`, put back into `slm` and `trainer`, or `None` to start
    /// from the first epoch (with the trainer unchanged).
    fn resume(
        &mut self,
        slm: &mut Slm,
        trainer: Trainer,
        labels: &[Option<usize>],
        epochs: usize,
    ) -> Result<(Trainer, Option<Position>)>;

    /// Called after every finished epoch but the last; saves when it is time to.
    fn epoch_done(
        &mut self,
        slm: &Slm,
        trainer: &Trainer,
        labels: &[Option<usize>],
        epochs: usize,
        position: &Position,
    ) -> Result<()>;
}

/// Trains `slm` on `labels` (one per pool example; `None` = unlabeled) for its `slm.epochs`,
/// going on from `store`'s epoch checkpoint when it has one.
#[allow(clippy::too_many_arguments)]
pub fn self_train(
    mut slm: Slm,
    encoded: &[Encoded],
    labels: &[Option<usize>],
    view: &View,
    spec: &FreealSpec,
    seed: u64,
    progress: &Progress,
    store: Option<&mut dyn EpochStore>,
) -> Result<Trained> {
    let started = Instant::now();
    let epochs = slm.epochs();
    let num_labels = slm.num_labels();
    let targets = target_rows(labels, num_labels);
    let robust = spec.self_training != SelfTraining::Plain;
    // Plain CE trains on every label; without a second view an unlabeled or noisy example
    // contributes nothing to the robust loss either: leave them out.
    let rows: Vec<usize> = match view {
        View::Texts(_) | View::Dropout if robust => (0..labels.len()).collect(),
        _ => (0..labels.len()).filter(|&i| labels[i].is_some()).collect(),
    };
    if rows.is_empty() {
        return Err(Error::model("freeal", "no training example has a label"));
    }
    let per_epoch = slm.steps_per_epoch(rows.len());
    if robust {
        check_warmup(spec, per_epoch, epochs, rows.len())?;
    }
    let mut trainer = slm.trainer(per_epoch * epochs as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x3172_a11d);
    let mut at = Position {
        epochs_done: 0,
        steps: 0,
        clean: labels.iter().map(Option::is_some).collect(),
        epoch_splits: Vec::new(),
        epoch_losses: Vec::new(),
        mixup_word_pos: StreamPos::default(),
        wall_s: 0.0,
    };
    let mut store = store;
    if let Some(store) = store.as_deref_mut() {
        let (restored, position) = store.resume(&mut slm, trainer, labels, epochs)?;
        trainer = restored;
        if let Some(position) = position {
            position.mixup_word_pos.apply(&mut rng);
            at = position;
        }
    }
    let weights: Vec<f32> = labels
        .iter()
        .map(|l| f32::from(u8::from(l.is_some())))
        .collect();
    // Unlabeled rows stay in the batches either way (as in the official code, whose batches
    // hold its -1 examples); this only decides whether they add a consistency term.
    let consistent: Vec<bool> = labels
        .iter()
        .map(|l| l.is_some() || spec.unlabeled_consistency)
        .collect();
    let earlier_wall_s = at.wall_s;
    for epoch in at.epochs_done..epochs {
        if robust && epoch >= spec.warmup_epochs && at.steps >= spec.warmup_steps {
            if spec.split_schedule.resplits(!at.epoch_splits.is_empty()) {
                let losses = label_losses(&slm.infer(encoded, progress)?.probs, labels);
                at.clean =
                    split_clean(&losses, labels, spec.clean_threshold, spec.clean_split).clean;
                at.epoch_losses.push((epoch + 1, losses));
            }
            at.epoch_splits.push((epoch + 1, at.clean.clone()));
        }
        let epoch_rows: Vec<usize> = match view {
            View::None if robust => rows.iter().copied().filter(|&i| at.clean[i]).collect(),
            _ => rows.clone(),
        };
        if !epoch_rows.is_empty() {
            let report = if robust {
                let label = format!("self-train epoch {}/{epochs}", epoch + 1);
                let clean = &at.clean;
                slm.train_epoch(&mut trainer, encoded, &epoch_rows, &label, progress, |s| {
                    robust_loss(s, clean, &consistent, &targets, view, spec, &mut rng)
                })?
            } else {
                let label = format!("train epoch {}/{epochs}", epoch + 1);
                slm.train_epoch(&mut trainer, encoded, &epoch_rows, &label, progress, |s| {
                    Ok(weighted_cross_entropy(s, &targets, &weights))
                })?
            };
            at.steps += report.steps;
        }
        at.epochs_done = epoch + 1;
        if let Some(store) = store.as_deref_mut()
            && at.epochs_done < epochs
        {
            at.mixup_word_pos = StreamPos::of(&rng);
            at.wall_s = earlier_wall_s + started.elapsed().as_secs_f64();
            store.epoch_done(&slm, &trainer, labels, epochs, &at)?;
        }
    }
    let pool = slm.infer(encoded, progress)?;
    let losses = label_losses(&pool.probs, labels);
    let split = split_clean(&losses, labels, spec.clean_threshold, spec.clean_split);
    Ok(Trained {
        slm,
        pool,
        split,
        losses,
        steps: at.steps,
        epoch_splits: at.epoch_splits,
        epoch_losses: at.epoch_losses,
        earlier_wall_s,
    })
}

/// The split needs an epoch boundary after the warm-up; past the schedule it would silently
/// turn robust self-training into plain training with a view.
fn check_warmup(spec: &FreealSpec, per_epoch: u64, epochs: usize, rows: usize) -> Result<()> {
    let warm_epochs = (spec.warmup_epochs as u64).max(spec.warmup_steps.div_ceil(per_epoch.max(1)));
    if warm_epochs < epochs as u64 {
        return Ok(());
    }
    Err(Error::Config {
        location: "[methods.*] kind = \"freeal\"".into(),
        key: "warmup_epochs / warmup_steps".into(),
        message: format!(
            "the warm-up ({} epochs, {} steps) fills the whole schedule ({epochs} epochs of \
             {per_epoch} steps on {rows} examples), so no clean/noisy split would ever happen: \
             lower them or raise slm.epochs",
            spec.warmup_epochs, spec.warmup_steps,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_marks_low_loss_labels_clean_and_never_unlabeled_ones() {
        // Ten confident agreements, four confident disagreements, one unlabeled.
        let mut probs = vec![vec![0.95f32, 0.05]; 10];
        probs.extend(vec![vec![0.9f32, 0.1]; 4]);
        probs.push(vec![0.5, 0.5]);
        let mut labels = vec![Some(0); 10];
        labels.extend(vec![Some(1); 4]);
        labels.push(None);
        let split = split_clean(
            &label_losses(&probs, &labels),
            &labels,
            0.7,
            CleanSplit::Global,
        );
        assert_eq!(&split.clean[..10], &[true; 10]);
        assert_eq!(&split.clean[10..], &[false; 5]);
        assert!(split.posterior[..10].iter().all(|p| *p > 0.99));
        assert_eq!(split.posterior[14], 0.0);
    }

    #[test]
    fn per_class_split_keeps_a_class_the_model_leans_against() {
        // The model leans towards class 0: every class-1 label has a higher loss than every
        // class-0 label, so one global GMM calls all of class 1 noisy; per class, each class's
        // own low-loss labels stay clean and only its two outliers go.
        let mut probs = vec![vec![0.97f32, 0.03]; 8];
        probs.extend(vec![vec![0.8f32, 0.2]; 8]);
        probs.extend(vec![vec![0.6f32, 0.4]; 2]);
        probs.extend(vec![vec![0.9f32, 0.1]; 2]);
        let mut labels = vec![Some(0); 8];
        labels.extend(vec![Some(1); 8]);
        labels.extend(vec![Some(0); 2]);
        labels.extend(vec![Some(1); 2]);
        let losses = label_losses(&probs, &labels);
        let global = split_clean(&losses, &labels, 0.7, CleanSplit::Global);
        assert_eq!(&global.clean[8..16], &[false; 8]);
        let per_class = split_clean(&losses, &labels, 0.7, CleanSplit::PerClass);
        assert_eq!(&per_class.clean[..16], &[true; 16]);
        assert_eq!(&per_class.clean[16..], &[false; 4]);
    }

    #[test]
    fn rampup_is_linear_then_flat() {
        assert_eq!(rampup(0.0, 10.0), 0.0);
        assert!((rampup(2.5, 10.0) - 0.25).abs() < 1e-7);
        assert_eq!(rampup(12.0, 10.0), 1.0);
        assert_eq!(rampup(0.0, 0.0), 1.0);
    }
}
