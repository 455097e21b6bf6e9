//! `active_learning`: traditional pool-based active learning with the gold labels as the human
//! oracle. A random seed set, then rounds of acquisition until the budget is spent; the SLM is
//! retrained from the pretrained weights every round and each round is one record (labels used
//! vs test accuracy: the learning curve).

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::supervised::evaluate;
use super::{CellContext, Estimate, Method, gold_classes, require_classification};
use crate::data::Dataset;
use crate::error::Result;
use crate::llm::annotator::one_hot;
use crate::llm::demos::normalize_rows;
use crate::plan::Cell;
use crate::run::records::RoundOutcome;
use crate::select::acquisition::{Acquisition, PoolView};
use crate::slm::Slm;

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
}

impl Default for AlSpec {
    fn default() -> Self {
        AlSpec {
            acquisition: Acquisition::Entropy,
            budget: 0.2,
            initial: 0.02,
            rounds: 4,
        }
    }
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

impl Method for ActiveLearning {
    fn run(&self, ctx: &CellContext) -> Result<Vec<RoundOutcome>> {
        require_classification(ctx, "active_learning")?;
        let dataset = ctx.dataset;
        let seed = ctx.cell.config.seed;
        let num_labels = dataset.num_labels();
        let gold = gold_classes(&dataset.train, &ctx.cell.name)?;
        let texts: Vec<&str> = dataset.train.iter().map(|e| e.text.as_str()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xac71_0e00);
        let schedule = self.spec.schedule(texts.len());
        let mut labeled: Vec<usize> = sample(&mut rng, texts.len(), schedule[0]).into_vec();
        labeled.sort_unstable();
        let mut outcomes = Vec::new();
        let mut encoded = None;
        for round in 0..schedule.len() {
            let start = Instant::now();
            let mut slm = Slm::load(
                &ctx.cell.config.slm,
                ctx.models_dir,
                num_labels,
                ctx.device,
                seed,
            )?;
            let encoded = encoded.get_or_insert(slm.tokenize(&texts)?);
            let targets: Vec<Vec<f32>> =
                gold.iter().map(|&g| one_hot(Some(g), num_labels)).collect();
            let mut weights = vec![0.0f32; texts.len()];
            for &i in &labeled {
                weights[i] = 1.0;
            }
            let report = slm.fit(encoded, &targets, &weights, ctx.progress)?;
            let mut metrics: BTreeMap<String, f64> = evaluate(&slm, dataset, ctx)?;
            metrics.insert("gold_labels_used".into(), labeled.len() as f64);
            metrics.insert(
                "gold_label_fraction".into(),
                labeled.len() as f64 / texts.len().max(1) as f64,
            );
            if let Some(&next) = schedule.get(round + 1) {
                let pool = slm.infer(encoded, ctx.progress)?;
                let mut embeddings = pool.pooled;
                normalize_rows(&mut embeddings);
                let candidates: Vec<usize> = (0..texts.len())
                    .filter(|i| labeled.binary_search(i).is_err())
                    .collect();
                let view = PoolView {
                    probs: &pool.probs,
                    embeddings: &embeddings,
                    candidates: &candidates,
                    labeled: &labeled,
                };
                let picked = self
                    .spec
                    .acquisition
                    .select(&view, next - labeled.len(), &mut rng);
                labeled.extend(picked);
                labeled.sort_unstable();
            }
            outcomes.push(RoundOutcome {
                round: round as u32,
                metrics,
                slm_steps: report.steps,
                wall_s: start.elapsed().as_secs_f64(),
                ..Default::default()
            });
        }
        Ok(outcomes)
    }

    fn estimate(&self, cell: &Cell, dataset: &Dataset) -> Estimate {
        let slm = &cell.config.slm;
        let steps: usize = self
            .spec
            .schedule(dataset.train.len())
            .iter()
            .map(|&n| n.div_ceil(slm.batch_size) * slm.epochs)
            .sum();
        Estimate {
            slm_steps: steps as u64,
            ..Default::default()
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
