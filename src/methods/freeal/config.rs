//! FreeAL's settings as a spec names them (`kind = "freeal"` under `[methods.<name>]`).

use serde::{Deserialize, Serialize};

use super::augment::Augmentation;
use crate::select::demo_pool::Confidence;
use crate::slm::tagging::SentenceLoss;

/// Where round 0's labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitialLabels {
    /// The paper's active labeling: the LLM writes labeled examples imitating random unlabeled
    /// ones, then labels every example with its `knn` most similar generated examples as demos.
    #[default]
    Generated,
    /// The LLM labels every example with no demonstrations.
    ZeroShot,
    /// Labels replayed from `[llm.replay]` (e.g. the paper's own GPT-3.5 labels for MR).
    Replay,
}

/// How the SLM learns from the LLM's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelfTraining {
    /// FreeAL's robust self-training (GMM split, mixup, consistency).
    #[default]
    Robust,
    /// Plain cross-entropy on every label: the ablation FreeAL's robustness is measured against.
    Plain,
}

/// Which losses one GMM sees when it splits clean from noisy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CleanSplit {
    /// One GMM over every labeled example's loss (the official code).
    #[default]
    Global,
    /// One GMM per label class over that class's losses, so a class the SLM leans against
    /// cannot drop out of the clean set altogether (not in the paper; see BENCHMARKS.md, MR).
    PerClass,
}

/// When the clean/noisy split is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SplitSchedule {
    /// Afresh at the start of every epoch after the warm-up (the official code).
    #[default]
    EveryEpoch,
    /// Once, at the end of the warm-up, and kept for the rest of the schedule (not in the
    /// paper): a flagged example gets no label signal, so with an SLM that generalises little
    /// its loss only grows and later splits flag right labels at the base rate of wrong ones
    /// (BENCHMARKS.md, MR).
    AfterWarmup,
}

impl SplitSchedule {
    /// Whether an epoch past the warm-up computes a new split, given whether one exists.
    pub fn resplits(self, have_split: bool) -> bool {
        self == SplitSchedule::EveryEpoch || !have_split
    }
}

/// FreeAL's knobs; defaults are the paper's and its official code's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreealSpec {
    /// Label-refinery rounds after round 0 (each round: relabel noisy examples, retrain the SLM).
    pub rounds: usize,
    /// Source of round 0's labels.
    pub initial: InitialLabels,
    /// Round 0 (`generated`): LLM-written demonstrations per class.
    pub generated_per_class: usize,
    /// Round 0 (`generated`): random unlabeled examples shown in each generation prompt.
    pub imitate: usize,
    /// Round 0 (`generated`): nearest generated demonstrations per example (m).
    pub knn: usize,
    /// Robust self-training, or plain cross-entropy (ablation).
    pub self_training: SelfTraining,
    /// Epochs (of `slm.epochs`) trained on all labels before the clean/noisy split starts.
    pub warmup_epochs: usize,
    /// Optimiser steps on all labels before the split starts (0: epochs alone decide). Epochs
    /// mean little on small pools (an epoch of 200 examples is 13 steps, after which the SLM is
    /// still near chance and its losses split nothing); the split starts at the first epoch
    /// boundary with both `warmup_epochs` and `warmup_steps` behind it.
    #[serde(skip_serializing_if = "is_zero")]
    pub warmup_steps: u64,
    /// GMM posterior of the low-loss component above which a label counts as clean.
    pub clean_threshold: f64,
    /// One GMM over all labels, or one per label class.
    #[serde(skip_serializing_if = "is_global")]
    pub clean_split: CleanSplit,
    /// Split every epoch after the warm-up, or once at its end.
    #[serde(skip_serializing_if = "is_every_epoch")]
    pub split_schedule: SplitSchedule,
    /// Beta(alpha, alpha) of the mixup weight.
    pub mixup_alpha: f64,
    /// Temperature of the noisy-set consistency (symmetric KL).
    pub temperature: f64,
    /// Epochs over which the mixup and consistency weights ramp linearly from 0 to 1.
    pub rampup_epochs: f64,
    /// Second view for the consistency loss.
    pub augmentation: Augmentation,
    /// Share (percent) of each class's agreeing examples kept for the demonstration pool.
    pub r_percent: f64,
    /// Ranking of agreeing examples: probability, or raw logit as the official code does.
    pub confidence: Confidence,
    /// k-medoids per class in the demonstration pool.
    pub medoids_per_class: usize,
    /// Refinery: nearest pool demonstrations per class for each relabeled example.
    pub demos_per_class: usize,
    /// Share of the pool the LLM labels in round 0 (and newly each refinery round), for large
    /// pools (the paper's P%); the unlabeled rest joins the consistency loss.
    pub label_fraction: f64,
    /// Robust self-training: examples with no usable label train through the noisy side's
    /// consistency term (true), or get no loss term, as the official code treats its `-1`
    /// labels (false).
    #[serde(skip_serializing_if = "is_true")]
    pub unlabeled_consistency: bool,
    /// After the last round, the LLM also labels the test split with k-NN demonstrations from
    /// the final demonstration pool (FreeAL's LLM side on unseen text: `llm_test_accuracy`);
    /// one LLM call per test example.
    #[serde(skip_serializing_if = "is_false")]
    pub llm_test: bool,
    /// NER: how a sentence's token losses reduce to the loss the GMM splits on.
    #[serde(skip_serializing_if = "is_mean")]
    pub sentence_loss: SentenceLoss,
}

impl Default for FreealSpec {
    fn default() -> Self {
        FreealSpec {
            rounds: 1,
            initial: InitialLabels::Generated,
            generated_per_class: 10,
            imitate: 3,
            knn: 10,
            self_training: SelfTraining::Robust,
            warmup_epochs: 1,
            warmup_steps: 0,
            clean_threshold: 0.7,
            clean_split: CleanSplit::Global,
            split_schedule: SplitSchedule::EveryEpoch,
            mixup_alpha: 4.0,
            temperature: 0.85,
            rampup_epochs: 10.0,
            augmentation: Augmentation::Dropout,
            r_percent: 20.0,
            confidence: Confidence::Probability,
            medoids_per_class: 50,
            demos_per_class: 5,
            label_fraction: 1.0,
            unlabeled_consistency: true,
            llm_test: false,
            sentence_loss: SentenceLoss::Mean,
        }
    }
}

/// Leaves a zero `warmup_steps` out of the serialised spec, so cells that predate it keep their
/// ids (the id hashes the cell's configuration).
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Leaves the official global split out of the serialised spec, so cells that predate it keep
/// their ids.
fn is_global(s: &CleanSplit) -> bool {
    *s == CleanSplit::Global
}

/// Leaves the official every-epoch split out of the serialised spec, so cells that predate it
/// keep their ids.
fn is_every_epoch(s: &SplitSchedule) -> bool {
    *s == SplitSchedule::EveryEpoch
}

/// Leaves the default sentence loss out of the serialised spec, so cells that predate it keep
/// their ids.
fn is_mean(s: &SentenceLoss) -> bool {
    *s == SentenceLoss::Mean
}

/// Leaves `unlabeled_consistency = true` out of the serialised spec, so cells that predate it
/// keep their ids.
fn is_true(b: &bool) -> bool {
    *b
}

/// Leaves `llm_test = false` out of the serialised spec, so cells that predate it keep their ids.
fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_every_epoch_schedule_replaces_an_existing_split() {
        assert!(SplitSchedule::EveryEpoch.resplits(false));
        assert!(SplitSchedule::EveryEpoch.resplits(true));
        assert!(SplitSchedule::AfterWarmup.resplits(false));
        assert!(!SplitSchedule::AfterWarmup.resplits(true));
    }

    #[test]
    fn default_schedule_leaves_the_serialised_spec_unchanged() {
        let spec = FreealSpec::default();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(!json.contains("split_schedule"), "{json}");
        let after = FreealSpec {
            split_schedule: SplitSchedule::AfterWarmup,
            ..spec
        };
        let json = serde_json::to_string(&after).unwrap();
        assert!(
            json.contains(r#""split_schedule":"after_warmup""#),
            "{json}"
        );
    }
}
