//! `active_learning` on NER: classification's AL loop with a tagger. Uncertainty is per word
//! and reduced to one score per sentence (`token_reduction`, as LLMaAA does); diversity works on
//! sentence embeddings. The LLM oracle (LLMaAA) extracts spans with the `k` gold demo-pool
//! sentences nearest to the query as demonstrations; with `reweight`, the tagger trains with
//! learned sentence weights against the gold meta set.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{
    Extracted, Extractor, evaluate_tagger, gold_tags, score_spans, sentence_words, unit_embeddings,
};
use crate::data::Example;
use crate::error::Result;
use crate::llm::client::LlmClient;
use crate::llm::demos::knn;
use crate::methods::CellContext;
use crate::methods::active_learning::{ActiveLearning, Oracle, al_rng};
use crate::methods::reweighted_fit::fit_tags_reweighted;
use crate::run::records::RoundOutcome;
use crate::select::acquisition::PoolProbs;
use crate::slm::tagging::{fit_tags, infer_tags};
use crate::slm::tokenize::WordEncoded;

/// The LLM as the loop's annotator, with its gold demonstrations.
struct LlmOracle<'a> {
    client: LlmClient,
    extractor: Extractor<'a>,
    /// Gold demo-pool sentences and their unit embeddings (pretrained encoder).
    demos: Vec<usize>,
    demo_rows: Vec<Vec<f32>>,
    /// Unit embeddings of every pool sentence (empty when `k` is 0).
    embeddings: Vec<Vec<f32>>,
    k: usize,
}

impl LlmOracle<'_> {
    fn label(
        &mut self,
        ctx: &CellContext,
        indices: &[usize],
        gold: &[Vec<usize>],
    ) -> Result<Extracted> {
        let train = &ctx.dataset.train;
        let no_classes = vec![0usize; self.demos.len()];
        let requests: Vec<_> = indices
            .iter()
            .map(|&i| {
                let shown: Vec<(&Example, &[usize])> = if self.k == 0 {
                    Vec::new()
                } else {
                    knn(
                        &self.embeddings[i],
                        &self.demo_rows,
                        &no_classes,
                        self.k,
                        false,
                        None,
                    )
                    .into_iter()
                    .map(|j| {
                        let d = self.demos[j];
                        (&train[d], gold[d].as_slice())
                    })
                    .collect()
                };
                self.extractor.request(&train[i], &shown)
            })
            .collect();
        let sentences: Vec<&Example> = indices.iter().map(|&i| &train[i]).collect();
        self.extractor.run(
            ctx,
            &mut self.client,
            &sentences,
            &requests,
            "LLM labels acquired",
        )
    }
}

/// Runs active learning (gold or LLM oracle) on an NER cell.
pub fn run(al: &ActiveLearning, ctx: &CellContext) -> Result<Vec<RoundOutcome>> {
    let spec = &al.spec;
    let dataset = ctx.dataset;
    let gold = gold_tags(&dataset.train, &ctx.cell.name)?;
    let mut rng = al_rng(ctx);
    let start = al.seed_set(gold.len(), &mut rng);
    let mut acquired = start.acquired.clone();
    let base = ctx.load_slm()?;
    let words: Vec<WordEncoded> = base.tokenize_words(&sentence_words(&dataset.train))?;
    let mut oracle = match spec.oracle {
        Oracle::Gold => None,
        Oracle::Llm => {
            let llm = ctx.llm("oracle = \"llm\"")?;
            // Demonstrations are retrieved in the pretrained encoder's space, as for
            // classification: the acquired tagger changes every round, the demo pool does not.
            let embeddings = if spec.k > 0 {
                unit_embeddings(infer_tags(&base, &words, ctx.progress)?.pooled)
            } else {
                Vec::new()
            };
            let demos = start.reserved.demos.clone();
            let demo_rows = if spec.k > 0 {
                demos.iter().map(|&i| embeddings[i].clone()).collect()
            } else {
                Vec::new()
            };
            Some(LlmOracle {
                client: crate::llm::build_client(ctx.cell, dataset, ctx.llm_run, ctx.models_dir)?,
                extractor: Extractor::new(llm, dataset),
                demos,
                demo_rows,
                embeddings,
                k: spec.k,
            })
        }
    };
    drop(base);
    let mut labels: Vec<Option<Vec<usize>>> = vec![None; gold.len()];
    let mut newly = acquired.clone();
    let mut outcomes = Vec::new();
    for round in 0..start.schedule.len() {
        let began = Instant::now();
        let mut metrics = BTreeMap::new();
        match oracle.as_mut() {
            Some(oracle) => {
                let got = oracle.label(ctx, &newly, &gold)?;
                got.record(&mut metrics, "oracle");
                for (&i, tags) in newly.iter().zip(got.tags) {
                    labels[i] = tags;
                }
            }
            None => {
                for &i in &newly {
                    labels[i] = Some(gold[i].clone());
                }
            }
        }
        let mut slm = ctx.load_slm()?;
        let report = if spec.reweight && oracle.is_some() && !start.reserved.meta.is_empty() {
            let meta_words: Vec<WordEncoded> = start
                .reserved
                .meta
                .iter()
                .map(|&i| words[i].clone())
                .collect();
            let meta_tags: Vec<Option<Vec<usize>>> = start
                .reserved
                .meta
                .iter()
                .map(|&i| Some(gold[i].clone()))
                .collect();
            let label_wrong: Vec<bool> = labels
                .iter()
                .zip(&gold)
                .map(|(label, g)| label.as_ref().is_some_and(|l| l != g))
                .collect();
            let (report, stats) = fit_tags_reweighted(
                &mut slm,
                &words,
                &labels,
                &label_wrong,
                &meta_words,
                &meta_tags,
                ctx.cell.config.slm.batch_size,
                &mut rng,
                ctx.progress,
            )?;
            for (name, value) in stats.metrics() {
                metrics.insert(name.into(), value);
            }
            report
        } else {
            fit_tags(&mut slm, &words, &labels, ctx.progress)?
        };
        evaluate_tagger(&slm, dataset, ctx, &mut metrics)?;
        let gold_used = match spec.oracle {
            Oracle::Llm => start.reserved.demos.len() + start.reserved.meta.len(),
            Oracle::Gold => acquired.len(),
        };
        metrics.insert("gold_labels_used".into(), gold_used as f64);
        metrics.insert("labels_acquired".into(), acquired.len() as f64);
        metrics.insert(
            "acquired_fraction".into(),
            acquired.len() as f64 / start.open.len().max(1) as f64,
        );
        if oracle.is_some() {
            let given: Vec<Option<Vec<usize>>> =
                acquired.iter().map(|&i| labels[i].clone()).collect();
            let truth: Vec<Vec<usize>> = acquired.iter().map(|&i| gold[i].clone()).collect();
            score_spans(&mut metrics, "acquired_label", dataset, &given, &truth);
        }
        newly.clear();
        if let Some(&next) = start.schedule.get(round + 1) {
            let pool = infer_tags(&slm, &words, ctx.progress)?;
            let embeddings = unit_embeddings(pool.pooled);
            let probs = PoolProbs::Words {
                probs: &pool.probs,
                reduction: spec.token_reduction,
            };
            newly = start.acquire(
                spec.acquisition,
                probs,
                &embeddings,
                &mut acquired,
                next,
                &mut rng,
            );
        }
        outcomes.push(RoundOutcome {
            round: round as u32,
            metrics,
            llm: oracle
                .as_mut()
                .map(|o| o.client.take_usage())
                .unwrap_or_default(),
            slm_steps: report.steps,
            wall_s: began.elapsed().as_secs_f64(),
        });
    }
    Ok(outcomes)
}
