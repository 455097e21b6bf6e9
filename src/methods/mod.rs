//! Methods: each turns a cell (dataset, config, seed) into per-round outcomes.

pub mod active_learning;
pub mod freeal;
pub mod icl;
pub mod ner;
pub mod reweighted_fit;
pub mod supervised;

use std::path::Path;
use std::time::Duration;

use burn::tensor::Device;

use crate::config::{LlmRunSpec, MethodSpec};
use crate::data::{Dataset, Example, Target, Task};
use crate::error::{Error, Result};
use crate::llm::annotator::{ChatMessage, one_hot};
use crate::llm::demos::normalize_rows;
use crate::llm::prompt::PromptTemplate;
use crate::plan::{Cell, LlmCell};
use crate::progress::Progress;
use crate::run::records::RoundOutcome;
use crate::slm::Slm;

/// What a method gets to run one cell.
pub struct CellContext<'a> {
    /// The cell (config, seed, params).
    pub cell: &'a Cell,
    /// The loaded, subsampled dataset.
    pub dataset: &'a Dataset,
    /// Tensor device for the SLM.
    pub device: &'a Device,
    /// Where fetched models live.
    pub models_dir: &'a Path,
    /// Phase progress bar.
    pub progress: &'a Progress,
    /// How the LLM is reached (cache, threads, HTTP limits).
    pub llm_run: &'a LlmRunSpec,
    /// The cell's results directory, for per-example artifacts (labels, splits).
    pub out_dir: &'a Path,
    /// Training time between epoch checkpoints (`run.epoch_checkpoint_minutes`).
    pub epoch_checkpoint_every: Duration,
}

impl<'a> CellContext<'a> {
    /// The cell's annotator settings; an error naming `who` (the method or setting that needs
    /// them) when the spec has no [llm].
    pub fn llm(&self, who: &str) -> Result<&'a LlmCell> {
        self.cell.config.llm.as_ref().ok_or_else(|| Error::Cell {
            cell: self.cell.name.clone(),
            message: format!("{who} needs [llm] settings"),
        })
    }

    /// The cell's SLM, freshly loaded from its pretrained weights with a new head (one output
    /// per class, or per BIO tag for NER) seeded by the cell's seed.
    pub fn load_slm(&self) -> Result<Slm> {
        let outputs = match self.dataset.task {
            Task::Ner => self.dataset.tags.len(),
            Task::Classification => self.dataset.num_labels(),
        };
        Slm::load(
            &self.cell.config.slm,
            self.models_dir,
            outputs,
            self.device,
            self.cell.config.seed,
        )
    }
}

/// One-hot target rows of `labels`; all zeros for unlabeled examples (they never enter a
/// cross-entropy term: their weight is 0 or they are left out of the batch rows).
pub fn target_rows(labels: &[Option<usize>], num_labels: usize) -> Vec<Vec<f32>> {
    labels
        .iter()
        .map(|l| match l {
            Some(_) => one_hot(*l, num_labels),
            None => vec![0.0; num_labels],
        })
        .collect()
}

/// Records `key` = the share of `members` whose label `right` accepts; nothing when `members`
/// is empty (a precision of no examples is undefined, not 0).
pub fn record_precision(
    metrics: &mut std::collections::BTreeMap<String, f64>,
    key: &str,
    members: &[usize],
    right: impl Fn(usize) -> bool,
) {
    if !members.is_empty() {
        let hits = members.iter().filter(|&&i| right(i)).count();
        metrics.insert(key.into(), hits as f64 / members.len() as f64);
    }
}

/// Cost estimate of a cell for `plan` (a dry run: nothing is executed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    /// LLM requests.
    pub llm_calls: u64,
    /// Prompt tokens sent to the LLM (approximate: characters / 4).
    pub llm_prompt_tokens: u64,
    /// SLM optimiser steps.
    pub slm_steps: u64,
}

/// A labelling or training method behind one interface.
pub trait Method {
    /// Runs the cell and returns one outcome per round.
    fn run(&self, ctx: &CellContext) -> Result<Vec<RoundOutcome>>;

    /// Estimates the cell's cost without running it.
    fn estimate(&self, cell: &Cell, dataset: &Dataset) -> Estimate;

    /// Checks settings that only the loaded data can judge (sizes against the pool), before
    /// anything runs: `Err((key under the method, what is wrong and the fix))`.
    fn check(&self, _cell: &Cell, _dataset: &Dataset) -> std::result::Result<(), (String, String)> {
        Ok(())
    }

    /// The first prompt the cell would send to the LLM (`plan --show-prompt`); `None` for
    /// methods that call no LLM.
    fn first_prompt(&self, _ctx: &CellContext) -> Result<Option<Vec<ChatMessage>>> {
        Ok(None)
    }
}

/// The zero-shot extraction prompt of an NER cell's first `examples` sentence, for
/// `plan --show-prompt`; `None` for classification cells or without [llm].
pub fn ner_first_prompt(ctx: &CellContext, examples: &[Example]) -> Option<Vec<ChatMessage>> {
    let (Some(llm), Some(first)) = (&ctx.cell.config.llm, examples.first()) else {
        return None;
    };
    (ctx.dataset.task == Task::Ner).then(|| {
        ner::Extractor::new(llm, ctx.dataset)
            .request(first, &[])
            .messages
    })
}

/// Fails unless the cell's dataset is a classification task (`method` names who asks).
pub fn require_classification(ctx: &CellContext, method: &str) -> Result<()> {
    let dataset = ctx.dataset;
    if dataset.task == Task::Classification {
        return Ok(());
    }
    Err(Error::Cell {
        cell: ctx.cell.name.clone(),
        message: format!(
            "dataset {} is a {:?} task; {method} supports classification so far",
            dataset.name, dataset.task
        ),
    })
}

/// The gold class of every example; an error naming `who` for non-classification or unlabeled
/// examples.
pub fn gold_classes(examples: &[Example], who: &str) -> Result<Vec<usize>> {
    examples
        .iter()
        .map(|e| {
            e.class().ok_or_else(|| Error::Cell {
                cell: who.to_string(),
                message: match e.target {
                    Target::Unlabeled => "this method needs gold labels on the training pool",
                    _ => "this method needs a classification dataset",
                }
                .into(),
            })
        })
        .collect()
}

/// The pool's gold classes, or `None` for an unlabeled pool (`files.train_unlabeled`), whose
/// label-quality metrics are then not computed.
pub fn pool_gold(dataset: &Dataset, who: &str) -> Result<Option<Vec<usize>>> {
    match dataset.pool_labeled() {
        true => gold_classes(&dataset.train, who).map(Some),
        false => Ok(None),
    }
}

/// `Method::check`'s refusal of an unlabeled pool for a method (or setting, `key`) that reads
/// the pool's gold labels.
pub fn refuse_unlabeled_pool(
    dataset: &Dataset,
    key: &str,
    what: &str,
) -> std::result::Result<(), (String, String)> {
    match dataset.pool_labeled() {
        true => Ok(()),
        false => Err((
            key.into(),
            format!(
                "dataset {}'s training pool is unlabeled (files.train_unlabeled = true) and \
                 {what} reads its gold labels; freeal and zero-shot icl label such a pool",
                dataset.name
            ),
        )),
    }
}

/// The labelled dataset a run hands back: `pool_labels.csv` in the cell directory, one row per
/// pool text with the label given to it (by name; empty where there is none) and `columns`
/// (name, one value per row) after them. Rewritten each round, so it holds the latest labels.
pub fn write_pool_labels(
    ctx: &CellContext,
    labels: &[Option<usize>],
    columns: Vec<(&str, Vec<String>)>,
) -> Result<()> {
    const FILE: &str = "pool_labels.csv";
    let path = ctx.out_dir.join(FILE);
    let io = |e: csv::Error| Error::results(&path, e.to_string());
    let names = &ctx.dataset.label_names;
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = ["text", "label"]
        .into_iter()
        .chain(columns.iter().map(|(name, _)| *name));
    w.write_record(header).map_err(io)?;
    for (i, (example, label)) in ctx.dataset.train.iter().zip(labels).enumerate() {
        let label = label.map_or("", |l| names[l].as_str());
        let row = [example.text.as_str(), label]
            .into_iter()
            .chain(columns.iter().map(|(_, values)| values[i].as_str()));
        w.write_record(row).map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::results(&path, e.to_string()))?;
    crate::run::records::write_atomic(&path, &bytes)
}

/// Sentence embeddings of `texts` from `slm` (pooled, unit length): the space k-NN
/// demonstrations and k-medoids work in.
pub fn embed(slm: &Slm, progress: &Progress, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
    let encoded = slm.tokenize(texts)?;
    let mut rows = slm.infer(&encoded, progress)?.pooled;
    normalize_rows(&mut rows);
    Ok(rows)
}

/// Characters of the prompt that labels `query` with `demos` (`plan`'s token estimate divides
/// by 4); 0 without a query.
pub fn prompt_chars(
    prompt: &PromptTemplate,
    dataset: &Dataset,
    query: Option<&Example>,
    demos: &[&Example],
) -> usize {
    // Only the length counts: an unlabeled stand-in is shown under the first label.
    let shown: Vec<(&str, usize)> = demos
        .iter()
        .filter_map(|e| match e.target {
            Target::Class(c) => Some((e.text.as_str(), c)),
            Target::Unlabeled => Some((e.text.as_str(), 0)),
            Target::Tags(_) => None,
        })
        .collect();
    query.map_or(0, |q| {
        prompt
            .classify(&q.text, &shown, &dataset.verbalizers)
            .messages
            .iter()
            .map(|m| m.content.len() + 8)
            .sum()
    })
}

/// The implementation of a method configuration.
pub fn build(spec: &MethodSpec) -> Box<dyn Method> {
    match spec {
        MethodSpec::Supervised { fraction } => Box::new(supervised::Supervised {
            fraction: *fraction,
        }),
        MethodSpec::Icl {
            demos,
            k,
            demo_pool,
            balanced,
            label_pool,
        } => Box::new(icl::Icl {
            demos: *demos,
            k: *k,
            demo_pool: *demo_pool,
            balanced: *balanced,
            label_pool: *label_pool,
        }),
        MethodSpec::Freeal(spec) => Box::new(freeal::Freeal { spec: spec.clone() }),
        MethodSpec::ActiveLearning(spec) => {
            Box::new(active_learning::ActiveLearning { spec: spec.clone() })
        }
    }
}
