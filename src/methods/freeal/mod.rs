//! `freeal`: the LLM labels the training pool, the SLM learns robustly from those noisy labels,
//! and the SLM's clean, diverse examples go back to the LLM as demonstrations to relabel the
//! noisy ones, round after round, with no human label (FreeAL, EMNLP 2023).

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod epoch_checkpoint;
pub mod initial;
pub mod labels;
pub mod self_train;
pub mod split_trace;

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use self::augment::{Augmentation, views};
use self::checkpoint::Checkpoint;
use self::config::{CleanSplit, FreealSpec, InitialLabels};
use self::epoch_checkpoint::EpochCheckpoints;
use self::labels::Labels;
use self::self_train::{Split, Trained, View, self_train};
use self::split_trace::{TracedEpochs, write_split_trace};
use super::{
    CellContext, Estimate, Method, embed, gold_classes, pool_gold, prompt_chars, record_precision,
    require_classification, write_pool_labels,
};
use crate::data::{Dataset, Example, Task};
use crate::error::{Error, Result};
use crate::llm::annotator::ChatMessage;
use crate::llm::annotator::{Annotation, ClassifyRequest};
use crate::llm::client::LlmClient;
use crate::llm::demos::{DemoSet, normalize_rows};
use crate::llm::prompt::{PromptTemplate, default_generation};
use crate::llm::replay::{ReplayTable, read_replay};
use crate::metrics::{accuracy, argmax, macro_f1, per_class_accuracy};
use crate::plan::Cell;
use crate::run::records::{
    RoundOutcome, remove_epoch_checkpoint, write_atomic, write_cell_warnings,
};
use crate::select::demo_pool::{Confidence, demo_pool, top_agreeing};
use crate::slm::Slm;
use crate::slm::model::Inference;
use crate::stream_pos::StreamPos;

/// FreeAL with its settings.
pub struct Freeal {
    /// The method's settings.
    pub spec: FreealSpec,
}

fn answer_labels(answers: &[Annotation]) -> Vec<Option<usize>> {
    answers.iter().map(|a| a.label).collect()
}

impl Freeal {
    fn replay_table(&self, ctx: &CellContext) -> Result<Option<ReplayTable>> {
        let needed = self.spec.initial == InitialLabels::Replay
            || self.spec.augmentation == Augmentation::Replay;
        if !needed {
            return Ok(None);
        }
        let replay = ctx
            .cell
            .config
            .llm
            .as_ref()
            .and_then(|l| l.spec.replay.as_ref())
            .ok_or_else(|| Error::Config {
                location: ctx.cell.name.clone(),
                key: "llm.replay".into(),
                message: "freeal's initial = \"replay\" or augmentation = \"replay\" reads \
                          [llm.replay] (file, label, text, augmentation columns)"
                    .into(),
            })?;
        if self.spec.augmentation == Augmentation::Replay && replay.augmentation.is_none() {
            return Err(Error::Config {
                location: ctx.cell.name.clone(),
                key: "llm.replay.augmentation".into(),
                message: "augmentation = \"replay\" needs the column of the augmented view".into(),
            });
        }
        let path = ctx.cell.dataset_dir.join(&replay.file);
        read_replay(&path, replay, &ctx.cell.config.dataset.raw_labels()).map(Some)
    }

    /// Round 0: labels for `targets` from the configured source; generated demonstrations are
    /// written next to the cell's records.
    #[allow(clippy::too_many_arguments)]
    fn initial_labels(
        &self,
        ctx: &CellContext,
        client: &mut LlmClient,
        prompt: &PromptTemplate,
        base: &Slm,
        replay: Option<&ReplayTable>,
        targets: &[usize],
        rng: &mut ChaCha8Rng,
        metrics: &mut BTreeMap<String, f64>,
    ) -> Result<Vec<Option<usize>>> {
        let dataset = ctx.dataset;
        match self.spec.initial {
            InitialLabels::Replay => {
                let table = replay.ok_or_else(|| Error::model("freeal", "replay table missing"))?;
                Ok(targets
                    .iter()
                    .map(|&i| {
                        table
                            .labels
                            .get(dataset.train[i].text.trim())
                            .copied()
                            .flatten()
                    })
                    .collect())
            }
            InitialLabels::ZeroShot => {
                let requests: Vec<ClassifyRequest> = targets
                    .iter()
                    .map(|&i| prompt.classify(&dataset.train[i].text, &[], &dataset.verbalizers))
                    .collect();
                self.ask(ctx, client, &requests, "LLM labels pool (zero-shot)")
            }
            InitialLabels::Generated => {
                let requests = initial::generation_requests(
                    &self.spec,
                    prompt,
                    dataset,
                    ctx.cell.config.seed,
                    rng,
                );
                ctx.progress
                    .phase("LLM writes demonstrations", requests.len() as u64);
                let bodies: Vec<_> = requests.iter().map(|r| r.1.clone()).collect();
                let written = client.generate(&bodies, &|n| ctx.progress.inc(n))?;
                let demos: Vec<(String, usize)> = requests
                    .iter()
                    .zip(&written)
                    .filter_map(|((label, _), g)| {
                        initial::clean_generation(&g.text).map(|t| (t, *label))
                    })
                    .collect();
                write_demos(ctx, &demos)?;
                metrics.insert("generated_demos".into(), demos.len() as f64);
                if demos.is_empty() {
                    return Err(Error::Cell {
                        cell: ctx.cell.name.clone(),
                        message: "the LLM wrote no usable demonstration (all answers empty); \
                                  check the generation prompt"
                            .into(),
                    });
                }
                let demo_texts: Vec<&str> = demos.iter().map(|d| d.0.as_str()).collect();
                let demo_embeddings = embed(base, ctx.progress, &demo_texts)?;
                let texts: Vec<&str> = dataset.train.iter().map(|e| e.text.as_str()).collect();
                let pool_embeddings = embed(base, ctx.progress, &texts)?;
                let requests = initial::knn_requests(
                    &self.spec,
                    prompt,
                    dataset,
                    targets,
                    &pool_embeddings,
                    &demos,
                    &demo_embeddings,
                );
                self.ask(ctx, client, &requests, "LLM labels pool (generated demos)")
            }
        }
    }

    fn ask(
        &self,
        ctx: &CellContext,
        client: &mut LlmClient,
        requests: &[ClassifyRequest],
        phase: &str,
    ) -> Result<Vec<Option<usize>>> {
        ctx.progress.phase(phase, requests.len() as u64);
        let answers = client.classify(requests, &|n| ctx.progress.inc(n))?;
        Ok(answer_labels(&answers))
    }

    /// FreeAL's demonstration pool from a trained SLM: per class, the top R% of examples whose
    /// label the SLM agrees with, then k-medoids on the SLM's embeddings.
    fn demo_pool(
        &self,
        previous: &Inference,
        labels: &[Option<usize>],
        gold: Option<&[usize]>,
        rng: &mut ChaCha8Rng,
        metrics: &mut BTreeMap<String, f64>,
    ) -> DemoPool {
        let num_labels = previous.probs.first().map_or(0, Vec::len);
        let scores = match self.spec.confidence {
            Confidence::Probability => &previous.probs,
            Confidence::Logit => &previous.logits,
        };
        let candidates = top_agreeing(labels, scores, num_labels, self.spec.r_percent / 100.0);
        let mut embeddings = previous.pooled.clone();
        normalize_rows(&mut embeddings);
        let members = demo_pool(&candidates, &embeddings, self.spec.medoids_per_class, rng);
        let member_labels: Vec<usize> = members.iter().map(|&i| labels[i].unwrap_or(0)).collect();
        let member_embeddings: Vec<Vec<f32>> =
            members.iter().map(|&i| embeddings[i].clone()).collect();
        metrics.insert("demo_pool_size".into(), members.len() as f64);
        if let Some(gold) = gold {
            record_precision(metrics, "demo_pool_precision", &members, |i| {
                labels[i] == Some(gold[i])
            });
        }
        DemoPool {
            set: DemoSet {
                members,
                labels: member_labels,
                embeddings: member_embeddings,
            },
            embeddings,
            per_class: self.spec.demos_per_class,
        }
    }

    /// FreeAL's LLM side on unseen text: the LLM's answers for the test split, each asked with
    /// class-balanced nearest demonstrations from the final demonstration pool.
    fn llm_on_test(
        &self,
        ctx: &CellContext,
        client: &mut LlmClient,
        prompt: &PromptTemplate,
        pool: &DemoPool,
        test_pooled: &[Vec<f32>],
    ) -> Result<Vec<Option<usize>>> {
        let mut embeddings = test_pooled.to_vec();
        normalize_rows(&mut embeddings);
        let requests: Vec<ClassifyRequest> = ctx
            .dataset
            .test
            .iter()
            .zip(&embeddings)
            .map(|(example, e)| pool.request(ctx, prompt, &example.text, e, None))
            .collect();
        self.ask(ctx, client, &requests, "LLM labels test (pool demos)")
    }

    /// The label refinery: builds the demonstration pool from the previous round's SLM, then
    /// relabels the noisy examples (and `fresh` unseen ones) with class-balanced nearest pool
    /// demonstrations. Clean examples keep their labels.
    #[allow(clippy::too_many_arguments)]
    fn refine(
        &self,
        ctx: &CellContext,
        client: &mut LlmClient,
        prompt: &PromptTemplate,
        previous: &(Inference, Split),
        state: &mut Labels<usize>,
        fresh: &[usize],
        gold: Option<&[usize]>,
        rng: &mut ChaCha8Rng,
        metrics: &mut BTreeMap<String, f64>,
    ) -> Result<()> {
        let dataset = ctx.dataset;
        let (previous_pool, previous_split) = previous;
        let pool = self.demo_pool(previous_pool, &state.labels, gold, rng, metrics);
        let mut targets: Vec<usize> = (0..state.labels.len())
            .filter(|&i| state.queried[i] && !previous_split.clean[i])
            .chain(fresh.iter().copied())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        let requests: Vec<ClassifyRequest> = targets
            .iter()
            .map(|&i| {
                let own = pool.set.members.binary_search(&i).ok();
                pool.request(
                    ctx,
                    prompt,
                    &dataset.train[i].text,
                    &pool.embeddings[i],
                    own,
                )
            })
            .collect();
        let before: Vec<(bool, Option<usize>)> = targets
            .iter()
            .map(|&i| (state.queried[i], state.labels[i]))
            .collect();
        // `fresh` holds examples never asked, the others were asked before: the two are apart.
        let phase = match (fresh.is_empty(), targets.len() > fresh.len()) {
            (true, _) => "LLM relabels noisy (pool demos)",
            (false, true) => "LLM labels the new share, relabels noisy (pool demos)",
            (false, false) => "LLM labels the new share (pool demos)",
        };
        let answers = self.ask(ctx, client, &requests, phase)?;
        state.set(&targets, &answers);
        let (mut changed, mut fixed, mut broken) = (0, 0, 0);
        for ((&i, (seen, old)), new) in targets.iter().zip(&before).zip(&answers) {
            if !seen || old == new {
                continue;
            }
            changed += 1;
            if let Some(gold) = gold {
                fixed += usize::from(*new == Some(gold[i]));
                broken += usize::from(*old == Some(gold[i]));
            }
        }
        metrics.insert("relabeled".into(), targets.len() as f64);
        metrics.insert("relabel_changed".into(), changed as f64);
        if gold.is_some() {
            metrics.insert("relabel_fixed".into(), fixed as f64);
            metrics.insert("relabel_broken".into(), broken as f64);
        }
        Ok(())
    }
}

/// A round's demonstration pool and the embeddings its k-NN retrieval uses.
struct DemoPool {
    /// The members with their LLM labels and embeddings.
    set: DemoSet,
    /// Normalised embeddings of the whole training pool.
    embeddings: Vec<Vec<f32>>,
    /// Demonstrations shown per class.
    per_class: usize,
}

impl DemoPool {
    /// A classification request for `text` (embedding `embedding`) with its class-balanced
    /// nearest members as demonstrations; `own` (a member's position) is never shown to itself.
    fn request(
        &self,
        ctx: &CellContext,
        prompt: &PromptTemplate,
        text: &str,
        embedding: &[f32],
        own: Option<usize>,
    ) -> ClassifyRequest {
        let dataset = ctx.dataset;
        let k = self.per_class * dataset.num_labels();
        let shown = self.set.nearest(&dataset.train, embedding, k, true, own);
        prompt.classify(text, &shown, &dataset.verbalizers)
    }
}

/// Paraphrases of every pool text by the LLM (an empty answer keeps the text, not counted).
fn paraphrases(
    ctx: &CellContext,
    client: &mut LlmClient,
    prompt: &PromptTemplate,
    texts: &[&str],
) -> Result<(Vec<String>, usize)> {
    let seed = ctx.cell.config.seed;
    let requests: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| prompt.paraphrase(t, seed.wrapping_mul(1_000_003).wrapping_add(i as u64)))
        .collect();
    ctx.progress
        .phase("LLM paraphrases pool", requests.len() as u64);
    let written = client.generate(&requests, &|n| ctx.progress.inc(n))?;
    let mut found = 0;
    let out = texts
        .iter()
        .zip(&written)
        .map(|(t, g)| match initial::clean_generation(&g.text) {
            Some(p) => {
                found += 1;
                p
            }
            None => t.to_string(),
        })
        .collect();
    Ok((out, found))
}

fn write_demos(ctx: &CellContext, demos: &[(String, usize)]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Error::model("generated_demos.csv", e.to_string());
    w.write_record(["label", "text"]).map_err(io)?;
    for (text, label) in demos {
        w.write_record([label.to_string().as_str(), text.as_str()])
            .map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::model("generated_demos.csv", e.to_string()))?;
    write_atomic(&ctx.out_dir.join("generated_demos.csv"), &bytes)
}

/// One row per pool example: gold (empty for an unlabeled pool), LLM label (empty = none),
/// clean flag, GMM posterior, SLM prediction, and the loss the split saw (empty = unlabeled),
/// so a split can be checked against the losses behind it.
fn write_round_labels(
    ctx: &CellContext,
    round: usize,
    labels: &[Option<usize>],
    gold: Option<&[usize]>,
    trained: &Trained,
) -> Result<()> {
    let mut out = String::from("index,gold,label,clean,clean_posterior,slm_pred,loss\n");
    for i in 0..labels.len() {
        let label = labels[i].map_or_else(String::new, |l| l.to_string());
        // Every digit, in scientific notation: after long training the losses that decide the
        // split are ~1e-7 apart, and the split must be recomputable from this column.
        let loss = trained.losses[i].map_or_else(String::new, |l| format!("{l:e}"));
        out.push_str(&format!(
            "{i},{},{label},{},{:.4},{},{loss}\n",
            gold.map_or_else(String::new, |g| g[i].to_string()),
            u8::from(trained.split.clean[i]),
            trained.split.posterior[i],
            argmax(&trained.pool.probs[i])
        ));
    }
    write_atomic(
        &ctx.out_dir.join(format!("labels_round{round}.csv")),
        out.as_bytes(),
    )
}

/// Transductive label quality (where the pool has gold) and SLM quality of a round.
fn score_round(
    metrics: &mut BTreeMap<String, f64>,
    labels: &[Option<usize>],
    gold: Option<&[usize]>,
    trained: &Trained,
    test_probs: &[Vec<f32>],
    test_gold: &[usize],
    label_names: &[String],
) {
    let num_labels = label_names.len();
    let n = labels.len().max(1) as f64;
    if let Some(gold) = gold {
        metrics.insert("pool_label_accuracy".into(), accuracy(labels, gold));
        metrics.insert(
            "pool_label_macro_f1".into(),
            macro_f1(labels, gold, num_labels),
        );
        // Per class, so a report can show where the refinery removed (or added) noise.
        for (name, value) in label_names
            .iter()
            .zip(per_class_accuracy(labels, gold, num_labels))
        {
            if let Some(value) = value {
                metrics.insert(format!("pool_label_accuracy[{name}]"), value);
            }
        }
    }
    let labeled = labels.iter().filter(|l| l.is_some()).count();
    metrics.insert("pool_label_coverage".into(), labeled as f64 / n);
    let clean: Vec<usize> = (0..labels.len())
        .filter(|&i| trained.split.clean[i])
        .collect();
    metrics.insert("clean_count".into(), clean.len() as f64);
    // Per LLM label, so a report shows when the split starves one class (it did on MR).
    for (name, count) in label_names
        .iter()
        .zip(count_per_label(&clean, labels, num_labels))
    {
        metrics.insert(format!("clean_count[{name}]"), count as f64);
    }
    if let Some(gold) = gold {
        record_precision(metrics, "clean_precision", &clean, |i| {
            labels[i] == Some(gold[i])
        });
        let slm_pool: Vec<Option<usize>> =
            trained.pool.probs.iter().map(|p| Some(argmax(p))).collect();
        metrics.insert("slm_pool_accuracy".into(), accuracy(&slm_pool, gold));
    }
    let predicted: Vec<Option<usize>> = test_probs.iter().map(|p| Some(argmax(p))).collect();
    metrics.insert("test_accuracy".into(), accuracy(&predicted, test_gold));
    metrics.insert(
        "test_macro_f1".into(),
        macro_f1(&predicted, test_gold, num_labels),
    );
    metrics.insert("gold_labels_used".into(), 0.0);
}

/// How many of the examples at `indices` carry each LLM label.
fn count_per_label(indices: &[usize], labels: &[Option<usize>], num_labels: usize) -> Vec<usize> {
    let mut counts = vec![0; num_labels];
    for label in indices.iter().filter_map(|&i| labels[i]) {
        counts[label] += 1;
    }
    counts
}

/// A label the clean set keeps less than half as large a share of as the best-kept label:
/// `(starved, its share, favoured, its share)` by LLM label.
fn starved_label(
    clean: &[bool],
    labels: &[Option<usize>],
    num_labels: usize,
) -> Option<(usize, f64, usize, f64)> {
    let all: Vec<usize> = (0..labels.len()).collect();
    let chosen: Vec<usize> = all.iter().copied().filter(|&i| clean[i]).collect();
    let total = count_per_label(&all, labels, num_labels);
    let kept = count_per_label(&chosen, labels, num_labels);
    let shares: Vec<(usize, f64)> = (0..num_labels)
        .filter(|&l| total[l] > 0)
        .map(|l| (l, kept[l] as f64 / total[l] as f64))
        .collect();
    let low = shares.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
    let high = shares.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    (low.1 < high.1 / 2.0).then_some((low.0, low.1, high.0, high.1))
}

/// The warning for a split that starves a label: the SLM then learns that label mostly through
/// the consistency term and leans to the others, which no gold-free metric shows as plainly.
fn starvation_warning(
    ctx: &CellContext,
    round: usize,
    clean: &[bool],
    labels: &[Option<usize>],
) -> Option<String> {
    let names = &ctx.dataset.label_names;
    let (low, low_share, high, high_share) = starved_label(clean, labels, names.len())?;
    Some(format!(
        "warning: {} round {round}: the clean set keeps {:.0}% of the '{}' labels but {:.0}% of \
         the '{}' ones, so the SLM will lean away from '{}' (clean_split = \"per_class\" fits \
         one split per label)",
        ctx.cell.name,
        100.0 * low_share,
        names[low],
        100.0 * high_share,
        names[high],
        names[low],
    ))
}

impl Method for Freeal {
    fn run(&self, ctx: &CellContext) -> Result<Vec<RoundOutcome>> {
        if ctx.dataset.task == Task::Ner {
            return super::ner::freeal::run(ctx, &self.spec);
        }
        require_classification(ctx, "freeal")?;
        let dataset = ctx.dataset;
        let seed = ctx.cell.config.seed;
        let llm = ctx.llm("freeal")?;
        let prompt = &llm.prompt;
        let mut client = crate::llm::build_client(ctx.cell, dataset, ctx.llm_run, ctx.models_dir)?;
        let gold = pool_gold(dataset, &ctx.cell.name)?;
        let gold = gold.as_deref();
        let test_gold = gold_classes(&dataset.test, &ctx.cell.name)?;
        let replay = self.replay_table(ctx)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf3ee_a100);

        let base = ctx.load_slm()?;
        let texts: Vec<&str> = dataset.train.iter().map(|e| e.text.as_str()).collect();
        let encoded = base.tokenize(&texts)?;
        let test_texts: Vec<&str> = dataset.test.iter().map(|e| e.text.as_str()).collect();
        let test_encoded = base.tokenize(&test_texts)?;
        let augmented = match self.spec.augmentation {
            Augmentation::LlmParaphrase => Some(paraphrases(ctx, &mut client, prompt, &texts)?),
            kind => {
                let stored = replay
                    .as_ref()
                    .map(|r| r.augmentations.clone())
                    .unwrap_or_default();
                views(kind, &texts, &stored, seed)
            }
        };
        let augmented_encoded = match &augmented {
            Some((views, _)) => {
                let refs: Vec<&str> = views.iter().map(String::as_str).collect();
                Some(base.tokenize(&refs)?)
            }
            None => None,
        };
        let view = View::new(self.spec.augmentation, augmented_encoded.as_deref());

        let mut state = Labels::new(texts.len());
        let mut outcomes = Vec::new();
        let mut warnings = Vec::new();
        let mut previous: Option<(Inference, Split)> = None;
        let rounds = self.spec.rounds;
        let resumed = checkpoint::resume(ctx, rounds, &mut rng, |dir| {
            checkpoint::load(dir, &ctx.cell.id, texts.len(), rounds)
        })?;
        if let Some(resumed) = resumed {
            state = Labels {
                labels: resumed.labels,
                queried: resumed.queried,
            };
            outcomes = resumed.outcomes;
            warnings = resumed.warnings;
            if !warnings.is_empty() {
                write_cell_warnings(ctx.out_dir, &warnings)?;
            }
            previous = Some((resumed.pool, resumed.split));
            // Round 0's restored record already counts the calls made before it (LLM
            // paraphrases); asked again now, they must not land in the next round's.
            client.take_usage();
        }
        for round in outcomes.len()..=self.spec.rounds {
            let start = Instant::now();
            let mut metrics = BTreeMap::new();
            let fresh = state.fresh(self.spec.label_fraction, seed, round);
            if self.spec.label_fraction < 1.0 {
                metrics.insert("newly_labeled".into(), fresh.len() as f64);
            }
            match &previous {
                None => {
                    let answers = self.initial_labels(
                        ctx,
                        &mut client,
                        prompt,
                        &base,
                        replay.as_ref(),
                        &fresh,
                        &mut rng,
                        &mut metrics,
                    )?;
                    state.set(&fresh, &answers);
                }
                Some(previous) => self.refine(
                    ctx,
                    &mut client,
                    prompt,
                    previous,
                    &mut state,
                    &fresh,
                    gold,
                    &mut rng,
                    &mut metrics,
                )?,
            }
            if let Some((_, found)) = &augmented {
                metrics.insert(
                    "augmentation_coverage".into(),
                    *found as f64 / texts.len().max(1) as f64,
                );
            }
            let mut epochs = TracedEpochs {
                checkpoints: EpochCheckpoints::new(
                    ctx.out_dir,
                    &ctx.cell.id,
                    &ctx.cell.name,
                    round,
                    ctx.epoch_checkpoint_every,
                    ctx.progress,
                ),
                dir: ctx.out_dir,
                round,
                gold,
                label_names: &dataset.label_names,
            };
            let trained = self_train(
                ctx.load_slm()?,
                &encoded,
                &state.labels,
                &view,
                &self.spec,
                seed.wrapping_add(round as u64),
                ctx.progress,
                Some(&mut epochs),
            )?;
            let test_out = trained.slm.infer(&test_encoded, ctx.progress)?;
            score_round(
                &mut metrics,
                &state.labels,
                gold,
                &trained,
                &test_out.probs,
                &test_gold,
                &dataset.label_names,
            );
            if self.spec.llm_test && round == self.spec.rounds {
                // The final pool's own statistics stay apart from the refinery's (built from
                // the previous round's SLM) under the same round.
                let mut scratch = BTreeMap::new();
                let pool =
                    self.demo_pool(&trained.pool, &state.labels, gold, &mut rng, &mut scratch);
                if let Some(size) = scratch.get("demo_pool_size") {
                    metrics.insert("llm_test_demo_pool_size".into(), *size);
                }
                let answers =
                    self.llm_on_test(ctx, &mut client, prompt, &pool, &test_out.pooled)?;
                metrics.insert("llm_test_accuracy".into(), accuracy(&answers, &test_gold));
                metrics.insert(
                    "llm_test_macro_f1".into(),
                    macro_f1(&answers, &test_gold, dataset.num_labels()),
                );
            }
            let starved = (!trained.epoch_splits.is_empty())
                .then(|| starvation_warning(ctx, round, &trained.split.clean, &state.labels))
                .flatten();
            if let Some(warning) = starved {
                ctx.progress.println(&warning);
                warnings.push(warning);
                write_cell_warnings(ctx.out_dir, &warnings)?;
            }
            write_round_labels(ctx, round, &state.labels, gold, &trained)?;
            write_pool_labels(
                ctx,
                &state.labels,
                vec![
                    (
                        "clean",
                        trained
                            .split
                            .clean
                            .iter()
                            .map(|&c| u8::from(c).to_string())
                            .collect(),
                    ),
                    (
                        "slm_label",
                        trained
                            .pool
                            .probs
                            .iter()
                            .map(|p| dataset.label_names[argmax(p)].clone())
                            .collect(),
                    ),
                ],
            )?;
            write_split_trace(
                ctx.out_dir,
                round,
                &state.labels,
                gold,
                &trained.epoch_splits,
                &trained.epoch_losses,
                &dataset.label_names,
            )?;
            outcomes.push(RoundOutcome {
                round: round as u32,
                metrics,
                llm: client.take_usage(),
                slm_steps: trained.steps,
                wall_s: start.elapsed().as_secs_f64() + trained.earlier_wall_s,
            });
            let finished = (trained.pool, trained.split);
            if round < self.spec.rounds {
                checkpoint::save(
                    ctx.out_dir,
                    &Checkpoint {
                        cell_id: ctx.cell.id.clone(),
                        outcomes: outcomes.clone(),
                        warnings: warnings.clone(),
                        labels: state.labels.clone(),
                        queried: state.queried.clone(),
                        pool: finished.0.clone(),
                        split: finished.1.clone(),
                        rng_word_pos: StreamPos::of(&rng),
                    },
                )?;
                // The round checkpoint holds what the round's training produced.
                remove_epoch_checkpoint(ctx.out_dir);
            }
            previous = Some(finished);
        }
        Ok(outcomes)
    }

    fn first_prompt(&self, ctx: &CellContext) -> Result<Option<Vec<ChatMessage>>> {
        if ctx.dataset.task == Task::Ner {
            return Ok(super::ner_first_prompt(ctx, &ctx.dataset.train));
        }
        let (Some(llm), Some(first)) = (&ctx.cell.config.llm, ctx.dataset.train.first()) else {
            return Ok(None);
        };
        // Round 0's demonstrations are written by the LLM at run time; the query and
        // instruction are what every round shares.
        Ok(Some(
            llm.prompt
                .classify(&first.text, &[], &ctx.dataset.verbalizers)
                .messages,
        ))
    }

    fn check(&self, cell: &Cell, dataset: &Dataset) -> std::result::Result<(), (String, String)> {
        if !self.spec.unlabeled_consistency && self.spec.label_fraction < 1.0 {
            return Err((
                "unlabeled_consistency".into(),
                "false would leave label_fraction's unlabeled rest with no loss term at all: \
                 keep it true, or set label_fraction = 1.0"
                    .into(),
            ));
        }
        if dataset.task != Task::Ner {
            return Ok(());
        }
        let unsupported = [
            (
                self.spec.initial == InitialLabels::Replay,
                "initial",
                "round 0 on NER extracts with written demonstrations or none: set initial = \
                 \"generated\" or \"zero_shot\"",
            ),
            (
                self.spec.initial == InitialLabels::Generated
                    && cell
                        .config
                        .llm
                        .as_ref()
                        .is_some_and(|llm| llm.prompt.generation == default_generation()),
                "initial",
                "written demonstrations need a [generation] table in the prompt file that asks \
                 for one JSON object {\"sentence\", \"entities\"} (configs/prompts/conll03.toml \
                 has one); the default one writes classification inputs",
            ),
            (
                self.spec.clean_split != CleanSplit::Global,
                "clean_split",
                "a NER label is a whole tag sequence, not a class: set clean_split = \"global\"",
            ),
            (
                !matches!(
                    self.spec.augmentation,
                    Augmentation::Dropout | Augmentation::None
                ),
                "augmentation",
                "NER's consistency view is a second dropout pass: set augmentation = \"dropout\"",
            ),
            (
                self.spec.llm_test,
                "llm_test",
                "llm_test is not implemented for NER: set llm_test = false",
            ),
        ];
        match unsupported.into_iter().find(|(bad, _, _)| *bad) {
            Some((_, key, message)) => Err((
                key.into(),
                format!("{} is an NER dataset; {message}", dataset.name),
            )),
            None => Ok(()),
        }
    }

    fn estimate(&self, cell: &Cell, dataset: &Dataset) -> Estimate {
        let Some(llm) = &cell.config.llm else {
            return Estimate::default();
        };
        let n = dataset.train.len();
        let slm = &cell.config.slm;
        let slm_steps = ((self.spec.rounds + 1) * slm.epochs * n.div_ceil(slm.batch_size)) as u64;
        if dataset.task == Task::Ner {
            // Round 0 extracts `label_fraction` of the sentences (after writing demonstrations,
            // each prompt about as long as an extraction showing `imitate` pool sentences); each
            // refinery round at most every sentence.
            let (written, round0_demos) = match self.spec.initial {
                InitialLabels::Generated => (
                    self.spec.generated_per_class * dataset.num_labels(),
                    self.spec.knn,
                ),
                InitialLabels::ZeroShot | InitialLabels::Replay => (0, 0),
            };
            let writing =
                super::ner::estimate_extraction(cell, dataset, written, self.spec.imitate);
            let first = ((n as f64) * self.spec.label_fraction).round() as usize;
            let round0 = super::ner::estimate_extraction(cell, dataset, first, round0_demos);
            let k = self.spec.demos_per_class * dataset.num_labels();
            let refinery = super::ner::estimate_extraction(cell, dataset, n, k);
            let rounds = self.spec.rounds as u64;
            return Estimate {
                llm_calls: writing.llm_calls + round0.llm_calls + rounds * refinery.llm_calls,
                llm_prompt_tokens: writing.llm_prompt_tokens
                    + round0.llm_prompt_tokens
                    + rounds * refinery.llm_prompt_tokens,
                slm_steps,
            };
        }
        let num_labels = dataset.num_labels();
        let generated = match self.spec.initial {
            InitialLabels::Generated => self.spec.generated_per_class * num_labels,
            _ => 0,
        };
        let round0 = match self.spec.initial {
            InitialLabels::Replay => 0,
            _ => ((n as f64) * self.spec.label_fraction).round() as usize,
        };
        // Upper bound: every example relabeled each round (FreeAL relabels the noisy share).
        let test = if self.spec.llm_test {
            dataset.test.len()
        } else {
            0
        };
        let refinery = self.spec.rounds * n + test;
        // Each phase's prompt length at its own demonstration count: round 0 shows `knn`
        // generated demonstrations (none zero-shot), the refinery and the test side
        // `demos_per_class` per class. Writing a demonstration costs about a zero-shot prompt.
        let chars = |k: usize| {
            let demos: Vec<&Example> = dataset.train.iter().take(k).collect();
            prompt_chars(&llm.prompt, dataset, dataset.train.first(), &demos)
        };
        let round0_demos = match self.spec.initial {
            InitialLabels::Generated => self.spec.knn,
            _ => 0,
        };
        let chars_total = generated * chars(0)
            + round0 * chars(round0_demos)
            + refinery * chars(self.spec.demos_per_class * num_labels);
        Estimate {
            llm_calls: (generated + round0 + refinery) as u64,
            llm_prompt_tokens: (chars_total / 4) as u64,
            slm_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_kept_at_under_half_the_best_share_is_starved() {
        // Label 0: 9 of 10 kept (90%); label 1: 4 of 10 (40%); one unlabeled, never counted.
        let mut labels = vec![Some(0); 10];
        labels.extend(vec![Some(1); 10]);
        labels.push(None);
        let mut clean = vec![true; 9];
        clean.push(false);
        clean.extend([true; 4]);
        clean.extend([false; 7]);
        let (low, low_share, high, high_share) = starved_label(&clean, &labels, 2).unwrap();
        assert_eq!((low, high), (1, 0));
        assert!((low_share - 0.4).abs() < 1e-12 && (high_share - 0.9).abs() < 1e-12);
        // 5 of 10 kept (50%) is more than half of 90%: no warning.
        clean[14] = true;
        assert_eq!(starved_label(&clean, &labels, 2), None);
        // A label with no example at all is not starved.
        assert_eq!(starved_label(&clean, &labels, 3), None);
    }
}
