//! `active_learning`: pool-based active learning. A random seed set, then rounds of acquisition
//! until the budget is spent; the SLM is retrained from the pretrained weights every round and
//! each round is one record (labels used vs test accuracy: the learning curve). The oracle is
//! the gold labels (traditional AL: a human) or the LLM (LLMaAA: k-NN demonstrations from a small
//! gold demo pool, optionally learned example reweighting against a separate gold meta set).
//! NER cells run the same loop with a tagger (`super::ner::active_learning`).

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::reweighted_fit::{WeightStats, fit_reweighted};
use super::supervised::evaluate;
use super::{
    CellContext, Estimate, Method, gold_classes, prompt_chars, refuse_unlabeled_pool,
    require_classification, target_rows,
};
use crate::data::{Dataset, Example, Task};
use crate::error::Result;
use crate::llm::annotator::{ClassifyRequest, one_hot};
use crate::llm::client::LlmClient;
use crate::llm::demos::{DemoSet, normalize_rows};
use crate::metrics::accuracy;
use crate::plan::Cell;
use crate::run::records::RoundOutcome;
use crate::select::acquisition::{Acquisition, PoolProbs, PoolView, TokenReduction};

/// Who labels the acquired examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oracle {
    /// The gold labels (a human annotator).
    Gold,
    /// The cell's LLM, with k-NN demonstrations from a gold demo pool (LLMaAA).
    Llm,
}

/// Settings of `kind = "active_learning"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlSpec {
    /// How the next examples are chosen.
    pub acquisition: Acquisition,
    /// Labels bought in total: a fraction of the pool when at most 1 (0.2 = the paper's 20%),
    /// else a count.
    pub budget: f64,
    /// The random seed set, same convention (counts towards the budget).
    pub initial: f64,
    /// Acquisition rounds after the seed set; the rest of the budget is split evenly over them.
    pub rounds: usize,
    /// Who labels.
    pub oracle: Oracle,
    /// LLM oracle: nearest gold demonstrations per query (0 = zero-shot).
    pub k: usize,
    /// LLM oracle: gold-labelled demonstration pool, held out of acquisition.
    pub demo_pool: usize,
    /// LLM oracle: train with learned example weights (Ren et al. 2018) against the meta set.
    pub reweight: bool,
    /// LLM oracle with `reweight`: gold meta set, disjoint from the demo pool and held out.
    pub meta_set: usize,
    /// NER: how a sentence's per-word uncertainties become its score (classification has one
    /// distribution per example and ignores it).
    #[serde(skip_serializing_if = "TokenReduction::is_mean")]
    pub token_reduction: TokenReduction,
}

impl Default for AlSpec {
    fn default() -> Self {
        AlSpec {
            acquisition: Acquisition::Entropy,
            budget: 0.2,
            initial: 0.02,
            rounds: 4,
            oracle: Oracle::Gold,
            k: 5,
            demo_pool: 100,
            reweight: false,
            meta_set: 100,
            token_reduction: TokenReduction::Mean,
        }
    }
}

/// The AL loop's random stream: seed set, held-out sets, random and k-means acquisition.
pub fn al_rng(ctx: &CellContext) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(ctx.cell.config.seed ^ 0xac71_0e00)
}

/// A count from a fraction-or-count setting.
fn resolve(value: f64, pool: usize) -> usize {
    let n = if value <= 1.0 {
        (value * pool as f64).round()
    } else {
        value.round()
    };
    (n.max(1.0) as usize).min(pool)
}

impl AlSpec {
    /// Labels held after each round (round 0 = the seed set), ending at the budget.
    pub fn schedule(&self, pool: usize) -> Vec<usize> {
        let budget = resolve(self.budget, pool);
        let initial = resolve(self.initial, pool).min(budget);
        let mut out = vec![initial];
        for r in 1..=self.rounds {
            let target = initial + (budget - initial) * r / self.rounds.max(1);
            if target > *out.last().unwrap_or(&0) {
                out.push(target);
            }
        }
        out
    }
}

/// Active learning with a gold oracle.
pub struct ActiveLearning {
    /// The method's settings.
    pub spec: AlSpec,
}

/// Gold examples set aside for the LLM oracle: demonstrations and the meta set.
pub struct Reserved {
    /// Gold demo pool (the LLM oracle's demonstrations).
    pub demos: Vec<usize>,
    /// Gold meta set (reweighting's target).
    pub meta: Vec<usize>,
}

/// Where an AL run starts: what is held out, what may be acquired, and the seed set.
pub struct SeedSet {
    /// Held-out gold examples.
    pub reserved: Reserved,
    /// Pool indices open to acquisition.
    pub open: Vec<usize>,
    /// Labels held after each round.
    pub schedule: Vec<usize>,
    /// The random seed set (sorted).
    pub acquired: Vec<usize>,
}

impl SeedSet {
    /// Grows `acquired` (kept sorted) to `next` labels with `acquisition`'s picks among the
    /// candidates, scored by the current model's `probs` and unit `embeddings`; returns the picks.
    pub fn acquire(
        &self,
        acquisition: Acquisition,
        probs: PoolProbs,
        embeddings: &[Vec<f32>],
        acquired: &mut Vec<usize>,
        next: usize,
        rng: &mut ChaCha8Rng,
    ) -> Vec<usize> {
        let candidates = self.candidates(acquired);
        let view = PoolView {
            probs,
            embeddings,
            candidates: &candidates,
            labeled: acquired,
        };
        let picked = acquisition.select(&view, next.saturating_sub(acquired.len()), rng);
        acquired.extend(picked.iter().copied());
        acquired.sort_unstable();
        picked
    }

    /// Open pool indices not yet in `acquired` (sorted).
    fn candidates(&self, acquired: &[usize]) -> Vec<usize> {
        self.open
            .iter()
            .copied()
            .filter(|i| acquired.binary_search(i).is_err())
            .collect()
    }
}

impl ActiveLearning {
    /// Held-out sets, schedule and random seed set of a pool of `pool` examples.
    pub fn seed_set(&self, pool: usize, rng: &mut ChaCha8Rng) -> SeedSet {
        let reserved = self.reserve(pool, rng);
        let open: Vec<usize> = (0..pool)
            .filter(|i| {
                reserved.demos.binary_search(i).is_err() && reserved.meta.binary_search(i).is_err()
            })
            .collect();
        let schedule = self.spec.schedule(open.len());
        let mut acquired: Vec<usize> = sample(rng, open.len(), schedule[0])
            .into_iter()
            .map(|j| open[j])
            .collect();
        acquired.sort_unstable();
        SeedSet {
            reserved,
            open,
            schedule,
            acquired,
        }
    }

    fn reserve(&self, pool: usize, rng: &mut ChaCha8Rng) -> Reserved {
        if self.spec.oracle == Oracle::Gold {
            return Reserved {
                demos: Vec::new(),
                meta: Vec::new(),
            };
        }
        let meta = if self.spec.reweight {
            self.spec.meta_set
        } else {
            0
        };
        let wanted = (self.spec.demo_pool + meta).min(pool);
        let picked = sample(rng, pool, wanted).into_vec();
        let split = self.spec.demo_pool.min(wanted);
        let mut demos = picked[..split].to_vec();
        let mut meta = picked[split..].to_vec();
        demos.sort_unstable();
        meta.sort_unstable();
        Reserved { demos, meta }
    }

    /// The LLM's labels for `indices`, each with its `k` nearest gold demonstrations.
    fn llm_labels(
        &self,
        ctx: &CellContext,
        client: &mut LlmClient,
        indices: &[usize],
        reserved: &Reserved,
        embeddings: &[Vec<f32>],
        gold: &[usize],
    ) -> Result<Vec<Option<usize>>> {
        let dataset = ctx.dataset;
        let llm = ctx.llm("oracle = \"llm\"")?;
        let demos = DemoSet {
            members: reserved.demos.clone(),
            labels: reserved.demos.iter().map(|&i| gold[i]).collect(),
            embeddings: reserved
                .demos
                .iter()
                .map(|&i| embeddings[i].clone())
                .collect(),
        };
        let requests: Vec<ClassifyRequest> = indices
            .iter()
            .map(|&i| {
                let shown = if self.spec.k == 0 {
                    Vec::new()
                } else {
                    demos.nearest(&dataset.train, &embeddings[i], self.spec.k, false, None)
                };
                llm.prompt
                    .classify(&dataset.train[i].text, &shown, &dataset.verbalizers)
            })
            .collect();
        ctx.progress
            .phase("LLM labels acquired", requests.len() as u64);
        let answers = client.classify(&requests, &|n| ctx.progress.inc(n))?;
        Ok(answers.iter().map(|a| a.label).collect())
    }
}

impl Method for ActiveLearning {
    fn check(&self, _cell: &Cell, dataset: &Dataset) -> std::result::Result<(), (String, String)> {
        let what = match self.spec.oracle {
            Oracle::Gold => "active learning's gold oracle",
            Oracle::Llm => "LLMaAA (for its gold demo pool and pool metrics)",
        };
        refuse_unlabeled_pool(dataset, "oracle", what)?;
        let pool = dataset.train.len();
        let reserved = if self.spec.oracle == Oracle::Gold {
            0
        } else {
            self.spec.demo_pool
                + if self.spec.reweight {
                    self.spec.meta_set
                } else {
                    0
                }
        };
        if reserved >= pool {
            return Err((
                "demo_pool".into(),
                format!(
                    "the gold demo pool ({}) and meta set ({}) take all {pool} pool examples, \
                     leaving none to acquire; lower demo_pool / meta_set or raise data.train_limit",
                    self.spec.demo_pool,
                    if self.spec.reweight {
                        self.spec.meta_set
                    } else {
                        0
                    }
                ),
            ));
        }
        let available = pool - reserved;
        for (field, value) in [("budget", self.spec.budget), ("initial", self.spec.initial)] {
            if value > 1.0 && value.round() as usize > available {
                return Err((
                    field.into(),
                    format!(
                        "{value} labels asked, but only {available} pool examples can be \
                         acquired ({pool} in the pool{}); use a count <= {available} or a \
                         fraction of the pool (<= 1)",
                        if reserved > 0 {
                            format!(", {reserved} held out for demos and the meta set")
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn run(&self, ctx: &CellContext) -> Result<Vec<RoundOutcome>> {
        if ctx.dataset.task == Task::Ner {
            return super::ner::active_learning::run(self, ctx);
        }
        require_classification(ctx, "active_learning")?;
        let dataset = ctx.dataset;
        let num_labels = dataset.num_labels();
        let gold = gold_classes(&dataset.train, &ctx.cell.name)?;
        let texts: Vec<&str> = dataset.train.iter().map(|e| e.text.as_str()).collect();
        let mut rng = al_rng(ctx);
        let seed_set = self.seed_set(texts.len(), &mut rng);
        let (reserved, open, schedule) = (&seed_set.reserved, &seed_set.open, &seed_set.schedule);
        let mut acquired = seed_set.acquired.clone();
        let base = ctx.load_slm()?;
        let encoded = base.tokenize(&texts)?;
        let llm = self.spec.oracle == Oracle::Llm;
        let mut client = if llm {
            Some(crate::llm::build_client(
                ctx.cell,
                dataset,
                ctx.llm_run,
                ctx.models_dir,
            )?)
        } else {
            None
        };
        // The LLM oracle's demonstrations are retrieved in the pretrained encoder's space.
        let pretrained_embeddings = if llm && self.spec.k > 0 {
            let mut rows = base.infer(&encoded, ctx.progress)?.pooled;
            normalize_rows(&mut rows);
            rows
        } else {
            Vec::new()
        };
        drop(base);
        let mut labels: Vec<Option<usize>> = vec![None; texts.len()];
        let mut newly = acquired.clone();
        let mut outcomes = Vec::new();
        for round in 0..schedule.len() {
            let start = Instant::now();
            let answers = match client.as_mut() {
                Some(client) => {
                    self.llm_labels(ctx, client, &newly, reserved, &pretrained_embeddings, &gold)?
                }
                None => newly.iter().map(|&i| Some(gold[i])).collect(),
            };
            for (&i, a) in newly.iter().zip(answers) {
                labels[i] = a;
            }
            let targets = target_rows(&labels, num_labels);
            let usable: Vec<usize> = acquired
                .iter()
                .copied()
                .filter(|&i| labels[i].is_some())
                .collect();
            let mut slm = ctx.load_slm()?;
            let mut weight_stats = None;
            let report = if self.spec.reweight && llm && !reserved.meta.is_empty() {
                let meta_texts: Vec<&str> = reserved.meta.iter().map(|&i| texts[i]).collect();
                let meta_encoded = slm.tokenize(&meta_texts)?;
                let meta_targets: Vec<Vec<f32>> = reserved
                    .meta
                    .iter()
                    .map(|&i| one_hot(Some(gold[i]), num_labels))
                    .collect();
                let label_wrong: Vec<bool> = labels
                    .iter()
                    .zip(&gold)
                    .map(|(label, &g)| label.is_some_and(|l| l != g))
                    .collect();
                let (report, stats) = fit_reweighted(
                    &mut slm,
                    &encoded,
                    &targets,
                    &usable,
                    &label_wrong,
                    &meta_encoded,
                    &meta_targets,
                    ctx.cell.config.slm.batch_size,
                    &mut rng,
                    ctx.progress,
                )?;
                weight_stats = Some(stats);
                report
            } else {
                let mut weights = vec![0.0f32; texts.len()];
                for &i in &usable {
                    weights[i] = 1.0;
                }
                slm.fit(&encoded, &targets, &weights, ctx.progress)?
            };
            let mut metrics: BTreeMap<String, f64> = evaluate(&slm, dataset, ctx)?;
            let gold_used = if llm {
                reserved.demos.len() + reserved.meta.len()
            } else {
                acquired.len()
            };
            metrics.insert("gold_labels_used".into(), gold_used as f64);
            for (name, value) in weight_stats.iter().flat_map(WeightStats::metrics) {
                metrics.insert(name.into(), value);
            }
            metrics.insert("labels_acquired".into(), acquired.len() as f64);
            metrics.insert(
                "acquired_fraction".into(),
                acquired.len() as f64 / open.len().max(1) as f64,
            );
            if llm {
                let predicted: Vec<Option<usize>> = acquired.iter().map(|&i| labels[i]).collect();
                let truth: Vec<usize> = acquired.iter().map(|&i| gold[i]).collect();
                metrics.insert(
                    "acquired_label_accuracy".into(),
                    accuracy(&predicted, &truth),
                );
            }
            newly.clear();
            if let Some(&next) = schedule.get(round + 1) {
                let pool = slm.infer(&encoded, ctx.progress)?;
                let mut embeddings = pool.pooled;
                normalize_rows(&mut embeddings);
                newly = seed_set.acquire(
                    self.spec.acquisition,
                    PoolProbs::Examples(&pool.probs),
                    &embeddings,
                    &mut acquired,
                    next,
                    &mut rng,
                );
            }
            outcomes.push(RoundOutcome {
                round: round as u32,
                metrics,
                llm: client
                    .as_mut()
                    .map(LlmClient::take_usage)
                    .unwrap_or_default(),
                slm_steps: report.steps,
                wall_s: start.elapsed().as_secs_f64(),
            });
        }
        Ok(outcomes)
    }

    fn estimate(&self, cell: &Cell, dataset: &Dataset) -> Estimate {
        let slm = &cell.config.slm;
        let schedule = self.spec.schedule(dataset.train.len());
        let steps: usize = schedule
            .iter()
            .map(|&n| n.div_ceil(slm.batch_size) * slm.epochs)
            .sum();
        if dataset.task == Task::Ner {
            let calls = match self.spec.oracle {
                Oracle::Llm => schedule.last().copied().unwrap_or(0),
                Oracle::Gold => 0,
            };
            return Estimate {
                slm_steps: steps as u64,
                ..super::ner::estimate_extraction(cell, dataset, calls, self.spec.k)
            };
        }
        let (calls, chars) = match (&cell.config.llm, self.spec.oracle) {
            (Some(llm), Oracle::Llm) => {
                let demos: Vec<&Example> = dataset.train.iter().take(self.spec.k).collect();
                let chars = prompt_chars(&llm.prompt, dataset, dataset.train.first(), &demos);
                (schedule.last().copied().unwrap_or(0), chars)
            }
            _ => (0, 0),
        };
        Estimate {
            llm_calls: calls as u64,
            llm_prompt_tokens: (calls * chars / 4) as u64,
            slm_steps: steps as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spends_the_budget_in_even_rounds() {
        let spec = AlSpec {
            budget: 0.2,
            initial: 0.05,
            rounds: 3,
            ..Default::default()
        };
        assert_eq!(spec.schedule(1000), vec![50, 100, 150, 200]);
        let counts = AlSpec {
            budget: 100.0,
            initial: 10.0,
            rounds: 2,
            ..Default::default()
        };
        assert_eq!(counts.schedule(1000), vec![10, 55, 100]);
        // A budget beyond the pool is capped at the pool.
        assert_eq!(counts.schedule(40), vec![10, 25, 40]);
    }
}
