//! `supervised`: the SLM trained on gold labels (all of them: the upper bound; or a random
//! fraction), evaluated on the test split.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::{
    CellContext, Estimate, Method, gold_classes, refuse_unlabeled_pool, require_classification,
};
use crate::data::{Dataset, Task};
use crate::error::Result;
use crate::metrics::{accuracy, argmax, macro_f1};
use crate::plan::Cell;
use crate::run::records::RoundOutcome;
use crate::slm::Slm;

/// Gold-label training of the SLM.
pub struct Supervised {
    /// Fraction of the pool whose gold labels are used.
    pub fraction: f64,
}

impl Supervised {
    fn chosen(&self, pool: usize, seed: u64) -> Vec<usize> {
        let n = ((pool as f64) * self.fraction).round().max(1.0) as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut picked = sample(&mut rng, pool, n.min(pool)).into_vec();
        picked.sort_unstable();
        picked
    }
}

/// Test-split metrics of a trained SLM: accuracy and macro-F1.
pub fn evaluate(slm: &Slm, dataset: &Dataset, ctx: &CellContext) -> Result<BTreeMap<String, f64>> {
    let texts: Vec<&str> = dataset.test.iter().map(|e| e.text.as_str()).collect();
    let encoded = slm.tokenize(&texts)?;
    let probs = slm.infer(&encoded, ctx.progress)?.probs;
    let predicted: Vec<Option<usize>> = probs.iter().map(|p| Some(argmax(p))).collect();
    let gold = gold_classes(&dataset.test, &dataset.name)?;
    Ok(BTreeMap::from([
        ("test_accuracy".to_string(), accuracy(&predicted, &gold)),
        (
            "test_macro_f1".to_string(),
            macro_f1(&predicted, &gold, dataset.num_labels()),
        ),
    ]))
}

impl Method for Supervised {
    fn run(&self, ctx: &CellContext) -> Result<Vec<RoundOutcome>> {
        let start = Instant::now();
        let dataset = ctx.dataset;
        if dataset.task == Task::Ner {
            return super::ner::supervised(ctx, self.fraction);
        }
        require_classification(ctx, "supervised")?;
        let seed = ctx.cell.config.seed;
        let chosen = self.chosen(dataset.train.len(), seed);
        let labels = gold_classes(&dataset.train, &dataset.name)?;
        let texts: Vec<&str> = chosen
            .iter()
            .map(|&i| dataset.train[i].text.as_str())
            .collect();
        let mut slm = ctx.load_slm()?;
        let encoded = slm.tokenize(&texts)?;
        let targets: Vec<Vec<f32>> = chosen
            .iter()
            .map(|&i| {
                let mut row = vec![0.0; dataset.num_labels()];
                row[labels[i]] = 1.0;
                row
            })
            .collect();
        let weights = vec![1.0; chosen.len()];
        let report = slm.fit(&encoded, &targets, &weights, ctx.progress)?;
        let mut metrics = evaluate(&slm, dataset, ctx)?;
        metrics.insert("gold_labels_used".into(), chosen.len() as f64);
        metrics.insert("train_loss".into(), report.last_epoch_loss);
        Ok(vec![RoundOutcome {
            round: 0,
            metrics,
            slm_steps: report.steps,
            wall_s: start.elapsed().as_secs_f64(),
            ..Default::default()
        }])
    }

    fn check(&self, _cell: &Cell, dataset: &Dataset) -> std::result::Result<(), (String, String)> {
        refuse_unlabeled_pool(dataset, "kind", "supervised training")
    }

    fn estimate(&self, cell: &Cell, dataset: &Dataset) -> Estimate {
        let n = self.chosen(dataset.train.len(), cell.config.seed).len();
        let slm = &cell.config.slm;
        Estimate {
            slm_steps: (n.div_ceil(slm.batch_size) * slm.epochs) as u64,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_picks_a_seeded_subset() {
        let s = Supervised { fraction: 0.2 };
        let a = s.chosen(100, 7);
        assert_eq!(a.len(), 20);
        assert_eq!(a, s.chosen(100, 7));
        assert_ne!(a, s.chosen(100, 8));
        assert_eq!(
            Supervised { fraction: 1.0 }.chosen(5, 1),
            vec![0, 1, 2, 3, 4]
        );
    }
}
