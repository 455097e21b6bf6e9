//! FreeAL on NER: the LLM extracts the pool's entities (all of them, or the P% variant's
//! `label_fraction` share per round), zero-shot or with its nearest sentences among those the
//! LLM wrote itself (`written.rs`); the tagger self-trains robustly on them (warm-up on every
//! sentence, then each epoch a GMM on sentence losses splits clean from noisy: cross-entropy on
//! the clean sentences' words, dropout-view consistency (symmetric KL) on the noisy and the
//! untagged ones; no mixup: mixing two sentences' tokens has no word alignment); the
//! demonstration pool is, per entity type (and for entity-free sentences), the top R% of
//! sentences whose SLM tags agree with the LLM's, reduced to k-medoids on sentence embeddings;
//! only noisy (and not yet extracted) sentences are extracted again with their nearest pool
//! demonstrations.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{self as ner_checkpoint, NerCheckpoint};
use super::{
    Extracted, Extractor, pool_gold_tags, score_spans, score_test, sentence_words, test_tags,
    unit_embeddings,
};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::llm::demos::knn;
use crate::methods::freeal::augment::Augmentation;
use crate::methods::freeal::checkpoint;
use crate::methods::freeal::config::{FreealSpec, InitialLabels, SelfTraining};
use crate::methods::freeal::labels::Labels;
use crate::methods::freeal::self_train::{Split, rampup, split_losses};
use crate::methods::{CellContext, record_precision};
use crate::progress::Progress;
use crate::run::records::RoundOutcome;
use crate::select::demo_pool::{demo_pool, top_agreeing_sets};
use crate::slm::Slm;
use crate::slm::losses::symmetric_kl;
use crate::slm::tagging::{
    TagInference, gather, ids_of, infer_tags, labelled_positions, tag_cross_entropy, word_positions,
};
use crate::slm::tokenize::WordEncoded;
use crate::stream_pos::StreamPos;

/// What one round of tagger self-training leaves behind.
pub struct TrainedTagger {
    /// The trained tagger.
    pub slm: Slm,
    /// Its outputs on the pool.
    pub pool: TagInference,
    /// Clean/noisy split of the pool's labelled sentences.
    pub split: Split,
    /// Optimiser steps taken.
    pub steps: u64,
}

/// Robust (or, as the ablation, plain) self-training of a tagger on `labels`.
pub fn self_train_tagger(
    mut slm: Slm,
    words: &[WordEncoded],
    labels: &[Option<Vec<usize>>],
    spec: &FreealSpec,
    progress: &Progress,
) -> Result<TrainedTagger> {
    if labels.iter().all(Option::is_none) {
        return Err(Error::model(
            "tagger",
            "the LLM tagged no sentence of the pool",
        ));
    }
    let ids = ids_of(words);
    let epochs = slm.epochs();
    let robust = spec.self_training == SelfTraining::Robust;
    // NER's only second view is another dropout pass; `augmentation = "none"` drops the
    // consistency term, and robust training then learns from the clean sentences alone.
    let consistency = robust && spec.augmentation != Augmentation::None;
    // Sentences with no tags (not asked yet under `label_fraction`, or no usable answer) train
    // through the consistency term alone, as classification's unlabeled examples do.
    let unlabelled_consistent = consistency && spec.unlabeled_consistency;
    let rows: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].is_some() || unlabelled_consistent)
        .collect();
    if robust && spec.warmup_epochs >= epochs {
        return Err(Error::Config {
            location: "[methods.*] kind = \"freeal\"".into(),
            key: "warmup_epochs".into(),
            message: format!(
                "the warm-up ({} epochs) fills the whole schedule ({epochs} epochs), so no \
                 clean/noisy split would ever happen: lower it or raise slm.epochs",
                spec.warmup_epochs
            ),
        });
    }
    let mut trainer = slm.trainer(slm.steps_per_epoch(rows.len()) * epochs as u64);
    let mut clean = vec![true; labels.len()];
    let mut steps = 0;
    let mut have_split = false;
    for epoch in 0..epochs {
        if robust && epoch >= spec.warmup_epochs && spec.split_schedule.resplits(have_split) {
            have_split = true;
            let inference = infer_tags(&slm, words, progress)?;
            clean = split_losses(
                &inference.sentence_losses(labels, spec.sentence_loss),
                spec.clean_threshold,
            )
            .clean;
        }
        let epoch_rows: Vec<usize> = match consistency {
            true => rows.clone(),
            false => rows.iter().copied().filter(|&r| clean[r]).collect(),
        };
        if epoch_rows.is_empty() {
            continue;
        }
        let label = format!("self-train epoch {}/{epochs}", epoch + 1);
        let report =
            slm.train_epoch(&mut trainer, &ids, &epoch_rows, &label, progress, |step| {
                let (_, logits) = step.model.token_logits(&step.batch);
                let seq = logits.dims()[1];
                let (clean_pos, clean_tags) =
                    labelled_positions(words, labels, step.rows, seq, |r| clean[r]);
                // Every row of a consistency epoch that is not clean: the noisy labelled ones and
                // the unlabelled ones; none when there is no second view.
                let noisy_pos = match consistency {
                    true => {
                        word_positions(words, step.rows, seq, |r| labels[r].is_none() || !clean[r])
                    }
                    false => Vec::new(),
                };
                let mut terms: Vec<Tensor<1>> = Vec::new();
                if !clean_pos.is_empty() {
                    let gathered = gather(logits.clone(), &clean_pos, step);
                    terms.push(tag_cross_entropy(gathered, &clean_tags, step));
                }
                if !noisy_pos.is_empty() {
                    // A second pass draws a fresh dropout mask: the consistency view.
                    let (_, second) = step.model.token_logits(&step.batch);
                    let w = rampup(step.epoch_pos, spec.rampup_epochs);
                    let kl = symmetric_kl(
                        gather(logits.clone(), &noisy_pos, step),
                        gather(second, &noisy_pos, step),
                        spec.temperature as f32,
                    );
                    // The classification code sums KL over examples; per word, a mean keeps the
                    // term on the scale of the cross-entropy whatever the sentence lengths.
                    terms.push(kl * (w / noisy_pos.len() as f32));
                }
                Ok(terms
                    .into_iter()
                    .reduce(|a, b| a + b)
                    .unwrap_or_else(|| logits.sum() * 0.0))
            })?;
        steps += report.steps;
    }
    let pool = infer_tags(&slm, words, progress)?;
    let split = split_losses(
        &pool.sentence_losses(labels, spec.sentence_loss),
        spec.clean_threshold,
    );
    Ok(TrainedTagger {
        slm,
        pool,
        split,
        steps,
    })
}

/// The demonstration pool: per entity type, then for entity-free sentences, the top R% of
/// sentences whose SLM tags equal the LLM's (by mean top tag probability), k-medoids on the
/// unit sentence embeddings `embeddings`; merged without repeats.
pub fn tag_demo_pool(
    predicted: &[Vec<usize>],
    confidence: &[f32],
    labels: &[Option<Vec<usize>>],
    num_types: usize,
    embeddings: &[Vec<f32>],
    spec: &FreealSpec,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let agree: Vec<bool> = labels
        .iter()
        .zip(predicted)
        .map(|(l, p)| l.as_ref() == Some(p))
        .collect();
    // Group g < num_types: sentences holding an entity of type g; group num_types: none at all.
    let groups: Vec<Vec<usize>> = labels
        .iter()
        .map(|l| {
            let Some(tags) = l else { return Vec::new() };
            let mut present: Vec<usize> = tags
                .iter()
                .filter(|&&t| t > 0 && t % 2 == 1)
                .map(|t| (t - 1) / 2)
                .collect();
            present.sort_unstable();
            present.dedup();
            if present.is_empty() {
                vec![num_types]
            } else {
                present
            }
        })
        .collect();
    let mut candidates = top_agreeing_sets(
        &agree,
        &groups,
        confidence,
        num_types + 1,
        spec.r_percent / 100.0,
    );
    let free = candidates.pop().unwrap_or_default();
    let mut pool = demo_pool(&candidates, embeddings, spec.medoids_per_class, rng);
    pool.dedup();
    // Entity-free demonstrations never outnumber those of the best-covered type: a tagger that
    // learned little agrees with the LLM only on empty answers, and a pool of `[]` alone
    // teaches the LLM to answer `[]` (CoNLL, 0.5B model: pool label F1 11.7 -> 0.0 in one
    // round before this cap). No type in the pool: no demonstrations at all.
    let largest_type = candidates
        .iter()
        .map(|c| c.len().min(spec.medoids_per_class))
        .max()
        .unwrap_or(0);
    if largest_type > 0 {
        let free_medoids = demo_pool(&[free], embeddings, largest_type, rng);
        pool.extend(free_medoids);
        pool.sort_unstable();
        pool.dedup();
    }
    pool
}

/// Runs FreeAL on an NER cell.
pub fn run(ctx: &CellContext, spec: &FreealSpec) -> Result<Vec<RoundOutcome>> {
    let dataset = ctx.dataset;
    let llm = ctx.llm("freeal")?;
    let mut client = crate::llm::build_client(ctx.cell, dataset, ctx.llm_run, ctx.models_dir)?;
    let extractor = Extractor::new(llm, dataset);
    // `None` for an unlabeled pool: gold only scores, it never decides.
    let gold = pool_gold_tags(dataset, &ctx.cell.name)?;
    let seed = ctx.cell.config.seed;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xf3ee_a1e4);
    let base = ctx.load_slm()?;
    let words = base.tokenize_words(&sentence_words(&dataset.train))?;
    let pool_examples: Vec<&Example> = dataset.train.iter().collect();
    let mut state: Labels<Vec<usize>> = Labels::new(pool_examples.len());
    let mut previous: Option<Finished> = None;
    let mut outcomes = Vec::new();
    let resumed = checkpoint::resume(ctx, spec.rounds, &mut rng, |dir| {
        ner_checkpoint::load(
            dir,
            &ctx.cell.id,
            pool_examples.len(),
            dataset.test.len(),
            spec.rounds,
        )
    })?;
    if let Some(resumed) = resumed {
        state = Labels {
            labels: resumed.labels,
            queried: resumed.queried,
        };
        outcomes = resumed.outcomes;
        previous = Some(Finished::new(
            resumed.pool,
            resumed.split,
            resumed.test_tags,
        ));
    }
    for round in outcomes.len()..=spec.rounds {
        let start = Instant::now();
        let mut metrics = BTreeMap::new();
        let before = state.labels.clone();
        // The P% variant's share of sentences the LLM sees for the first time this round.
        let fresh = state.fresh(spec.label_fraction, seed, round);
        if spec.label_fraction < 1.0 {
            metrics.insert("newly_labeled".into(), fresh.len() as f64);
        }
        match &previous {
            None => {
                let requests: Vec<_> = match spec.initial {
                    InitialLabels::Generated => super::written::generated_requests(
                        ctx,
                        &mut client,
                        &extractor,
                        &base,
                        &words,
                        &fresh,
                        spec,
                        &mut rng,
                        &mut metrics,
                    )?,
                    InitialLabels::ZeroShot | InitialLabels::Replay => fresh
                        .iter()
                        .map(|&i| extractor.request(pool_examples[i], &[]))
                        .collect(),
                };
                let sentences: Vec<&Example> = fresh.iter().map(|&i| pool_examples[i]).collect();
                let got = extractor.run(
                    ctx,
                    &mut client,
                    &sentences,
                    &requests,
                    "LLM extracts pool (round 0)",
                )?;
                got.record(&mut metrics, "pool_label");
                got.write_answers(&ctx.out_dir.join("answers_round0.jsonl"), &fresh)?;
                state.set(&fresh, &got.tags);
            }
            Some(finished) => {
                let got = refine(
                    ctx,
                    &extractor,
                    &mut client,
                    finished,
                    &mut state,
                    &fresh,
                    gold.as_deref(),
                    spec,
                    &mut rng,
                    &mut metrics,
                )?;
                got.record(&mut metrics, "relabel");
            }
        }
        let labels = &state.labels;
        let (finished, steps) = match previous.take() {
            // Retraining on unchanged labels from the same seed gives the same tagger again
            // (minutes per round on a CPU): keep its outputs, with no optimiser step to record.
            Some(kept) if *labels == before => (kept, 0),
            _ => {
                let trained =
                    self_train_tagger(ctx.load_slm()?, &words, labels, spec, ctx.progress)?;
                let tags = test_tags(&trained.slm, dataset, ctx)?;
                (
                    Finished::new(trained.pool, trained.split, tags),
                    trained.steps,
                )
            }
        };
        let masked = labels.iter().filter(|l| l.is_none()).count();
        metrics.insert(
            "pool_label_coverage".into(),
            1.0 - masked as f64 / labels.len().max(1) as f64,
        );
        let clean: Vec<usize> = (0..labels.len())
            .filter(|&i| finished.split.clean[i])
            .collect();
        metrics.insert("clean_count".into(), clean.len() as f64);
        if let Some(gold) = &gold {
            score_spans(&mut metrics, "pool_label", dataset, labels, gold);
            let exact = |i: usize| labels[i].as_ref() == Some(&gold[i]);
            record_precision(&mut metrics, "clean_precision", &clean, exact);
            let all: Vec<usize> = (0..labels.len()).collect();
            record_precision(&mut metrics, "pool_label_sentence_accuracy", &all, exact);
            let slm_pool: Vec<Option<Vec<usize>>> =
                finished.pool.tags().into_iter().map(Some).collect();
            score_spans(&mut metrics, "slm_pool", dataset, &slm_pool, gold);
        }
        score_test(&finished.test_tags, dataset, ctx, &mut metrics)?;
        metrics.insert("gold_labels_used".into(), 0.0);
        super::write_tags(
            &ctx.out_dir.join(format!("labels_round{round}.csv")),
            dataset,
            labels,
            gold.as_deref(),
            Some(&finished.split.clean),
        )?;
        super::write_pool_conll(ctx.out_dir, dataset, labels)?;
        outcomes.push(RoundOutcome {
            round: round as u32,
            metrics,
            llm: client.take_usage(),
            slm_steps: steps,
            wall_s: start.elapsed().as_secs_f64(),
        });
        if round < spec.rounds {
            checkpoint::save(
                ctx.out_dir,
                &NerCheckpoint {
                    cell_id: ctx.cell.id.clone(),
                    outcomes: outcomes.clone(),
                    labels: state.labels.clone(),
                    queried: state.queried.clone(),
                    pool: finished.pool.clone(),
                    split: finished.split.clone(),
                    test_tags: finished.test_tags.clone(),
                    rng_word_pos: StreamPos::of(&rng),
                },
            )?;
        }
        previous = Some(finished);
    }
    Ok(outcomes)
}

/// What a round leaves the next: its tagger's outputs (the tagger itself is not needed again).
struct Finished {
    /// The tagger's outputs on the pool.
    pool: TagInference,
    /// Clean/noisy split of the pool's labelled sentences.
    split: Split,
    /// The tagger's tags on the test split.
    test_tags: Vec<Vec<usize>>,
    /// The pool's sentence embeddings, unit length (the refinery's k-NN space).
    embeddings: Vec<Vec<f32>>,
}

impl Finished {
    fn new(pool: TagInference, split: Split, test_tags: Vec<Vec<usize>>) -> Self {
        let embeddings = unit_embeddings(pool.pooled.clone());
        Finished {
            pool,
            split,
            test_tags,
            embeddings,
        }
    }
}

/// One refinery round: the previous tagger's demonstration pool, then the LLM re-extracts
/// every noisy or masked sentence it has seen, and extracts the `fresh` ones it has not, with
/// their `demos_per_class * types` nearest pool sentences. With an empty pool only the fresh
/// sentences are asked, with no demonstration: re-asking the others so would repeat round 0's
/// prompts (and answers).
#[allow(clippy::too_many_arguments)]
fn refine(
    ctx: &CellContext,
    extractor: &Extractor,
    client: &mut crate::llm::client::LlmClient,
    finished: &Finished,
    state: &mut Labels<Vec<usize>>,
    fresh: &[usize],
    gold: Option<&[Vec<usize>]>,
    spec: &FreealSpec,
    rng: &mut ChaCha8Rng,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<Extracted> {
    let dataset = ctx.dataset;
    let num_types = dataset.num_labels();
    let embeddings = &finished.embeddings;
    let labels = &state.labels;
    let pool = tag_demo_pool(
        &finished.pool.tags(),
        &finished.pool.confidence(),
        labels,
        num_types,
        embeddings,
        spec,
        rng,
    );
    metrics.insert("demo_pool_size".into(), pool.len() as f64);
    if let Some(gold) = gold {
        record_precision(metrics, "demo_pool_precision", &pool, |i| {
            labels[i].as_ref() == Some(&gold[i])
        });
    }
    if pool.is_empty() && fresh.is_empty() {
        metrics.insert("relabeled".into(), 0.0);
        return Ok(Extracted::default());
    }
    let mut targets: Vec<usize> = match pool.is_empty() {
        true => Vec::new(),
        false => (0..labels.len())
            .filter(|&i| state.queried[i] && !finished.split.clean[i])
            .collect(),
    };
    targets.extend_from_slice(fresh);
    targets.sort_unstable();
    let pool_rows: Vec<Vec<f32>> = pool.iter().map(|&i| embeddings[i].clone()).collect();
    let k = spec.demos_per_class * num_types;
    let zeros = vec![0usize; pool.len()];
    let requests: Vec<_> = targets
        .iter()
        .map(|&i| {
            let exclude = pool.iter().position(|&p| p == i);
            let chosen = match pool.is_empty() {
                true => Vec::new(),
                false => knn(&embeddings[i], &pool_rows, &zeros, k, false, exclude),
            };
            let demos: Vec<(&Example, &[usize])> = chosen
                .iter()
                .filter_map(|&j| {
                    let p = pool[j];
                    Some((&dataset.train[p], labels[p].as_deref()?))
                })
                .collect();
            extractor.request(&dataset.train[i], &demos)
        })
        .collect();
    let sentences: Vec<&Example> = targets.iter().map(|&i| &dataset.train[i]).collect();
    // `fresh` holds sentences never asked, the others were asked before: the two are apart.
    let phase = match (fresh.is_empty(), targets.len() > fresh.len()) {
        (true, _) => "LLM re-extracts noisy",
        (false, true) => "LLM extracts the new share, re-extracts noisy",
        (false, false) => "LLM extracts the new share",
    };
    let got = extractor.run(ctx, client, &sentences, &requests, phase)?;
    let (mut fixed, mut broken) = (0usize, 0usize);
    for (&i, new) in targets.iter().zip(&got.tags) {
        // An unparsable new answer keeps the old tags: it says nothing against them, so it
        // neither fixes nor breaks them either.
        let kept = new.clone().or_else(|| state.labels[i].clone());
        if let Some(gold) = gold
            && state.queried[i]
        {
            let was = state.labels[i].as_ref() == Some(&gold[i]);
            let now = kept.as_ref() == Some(&gold[i]);
            fixed += usize::from(!was && now);
            broken += usize::from(was && !now);
        }
        state.labels[i] = kept;
        state.queried[i] = true;
    }
    metrics.insert("relabeled".into(), targets.len() as f64);
    if gold.is_some() {
        metrics.insert("relabel_fixed".into(), fixed as f64);
        metrics.insert("relabel_broken".into(), broken as f64);
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_of(labels: &[Option<Vec<usize>>], predicted: &[Vec<usize>]) -> Vec<usize> {
        let n = labels.len();
        let embeddings: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let a = i as f32;
                vec![a.cos(), a.sin()]
            })
            .collect();
        let spec = FreealSpec {
            r_percent: 100.0,
            medoids_per_class: 5,
            ..FreealSpec::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        tag_demo_pool(
            predicted,
            &vec![0.9; n],
            labels,
            2,
            &embeddings,
            &spec,
            &mut rng,
        )
    }

    #[test]
    fn entity_free_demonstrations_never_outnumber_the_best_covered_type() {
        // Tags: O = 0, B-PER = 1, I-PER = 2, B-LOC = 3, I-LOC = 4.
        let empty = vec![0, 0, 0];
        let per = vec![1, 2, 0];
        // 8 agreeing entity-free sentences, 2 agreeing PER sentences, 1 disagreeing LOC one.
        let mut labels: Vec<Option<Vec<usize>>> = vec![Some(empty.clone()); 8];
        labels.extend([Some(per.clone()), Some(per.clone()), Some(vec![3, 0, 0])]);
        let mut predicted = vec![empty.clone(); 8];
        predicted.extend([per.clone(), per.clone(), empty.clone()]);
        let pool = pool_of(&labels, &predicted);
        let free = pool.iter().filter(|&&i| i < 8).count();
        assert!(pool.contains(&8) && pool.contains(&9), "{pool:?}");
        assert_eq!(free, 2, "{pool:?}");
        assert!(!pool.contains(&10), "disagreeing sentences never enter");
        // Only entity-free sentences agree: no pool, rather than a pool of `[]` answers.
        let pool = pool_of(&labels[..8], &predicted[..8]);
        assert!(pool.is_empty(), "{pool:?}");
    }
}
