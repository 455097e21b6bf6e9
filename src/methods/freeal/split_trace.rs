//! `split_trace_round<r>.csv`: the clean set each robust epoch trained with, rewritten after
//! every epoch so that a round that trains for hours can be watched while it runs.

use std::path::Path;

use super::count_per_label;
use super::epoch_checkpoint::EpochCheckpoints;
use super::self_train::{EpochStore, Position, losses_of_class};
use crate::error::Result;
use crate::metrics::loss_auroc;
use crate::run::records::write_atomic;
use crate::slm::Slm;
use crate::slm::model::Trainer;

/// Writes one row per robust epoch: the clean set it trained with, its size per LLM label and,
/// where the pool has gold, its precision and the `loss_auroc` of the losses a split fitted at
/// that epoch was fitted on, over all labels (what the global split sees) and within each LLM
/// label (what the per-class split sees); `-` at epochs that kept an earlier split. Nothing for
/// plain CE, which has no split during training.
pub fn write_split_trace(
    dir: &Path,
    round: usize,
    labels: &[Option<usize>],
    gold: Option<&[usize]>,
    epoch_splits: &[(usize, Vec<bool>)],
    epoch_losses: &[(usize, Vec<Option<f64>>)],
    label_names: &[String],
) -> Result<()> {
    if epoch_splits.is_empty() {
        return Ok(());
    }
    let per_class: Vec<String> = label_names.iter().map(|n| format!("clean[{n}]")).collect();
    let gold_columns = if gold.is_some() {
        let within: Vec<String> = label_names
            .iter()
            .map(|n| format!(",loss_auroc[{n}]"))
            .collect();
        format!(",clean_precision,loss_auroc{}", within.concat())
    } else {
        String::new()
    };
    let mut out = format!("epoch,clean,{}{gold_columns}\n", per_class.join(","));
    for (epoch, clean) in epoch_splits {
        let chosen: Vec<usize> = (0..labels.len()).filter(|&i| clean[i]).collect();
        let counts: Vec<String> = count_per_label(&chosen, labels, label_names.len())
            .iter()
            .map(usize::to_string)
            .collect();
        let precision = gold.map_or_else(String::new, |gold| {
            let right = chosen
                .iter()
                .filter(|&&i| labels[i] == Some(gold[i]))
                .count();
            let losses = epoch_losses
                .iter()
                .find(|(e, _)| e == epoch)
                .map(|(_, l)| l.as_slice());
            let auroc = |losses: Option<&[Option<f64>]>| {
                losses
                    .and_then(|losses| loss_auroc(losses, labels, gold))
                    .map_or_else(|| ",-".to_string(), |a| format!(",{a:.4}"))
            };
            let within: String = (0..label_names.len())
                .map(|c| auroc(losses.map(|l| losses_of_class(l, labels, c)).as_deref()))
                .collect();
            format!(
                ",{:.4}{}{within}",
                right as f64 / chosen.len().max(1) as f64,
                auroc(losses)
            )
        });
        out.push_str(&format!(
            "{epoch},{},{}{precision}\n",
            chosen.len(),
            counts.join(",")
        ));
    }
    write_atomic(
        &dir.join(format!("split_trace_round{round}.csv")),
        out.as_bytes(),
    )
}

/// A round's epoch checkpoints, with the split trace so far written after every epoch.
pub struct TracedEpochs<'a> {
    /// The checkpoints proper.
    pub checkpoints: EpochCheckpoints<'a>,
    /// The cell directory.
    pub dir: &'a Path,
    /// The round being trained.
    pub round: usize,
    /// Gold labels of the pool, for the trace's precision column (`None`: an unlabeled pool).
    pub gold: Option<&'a [usize]>,
    /// Class names, for the trace's per-label columns.
    pub label_names: &'a [String],
}

impl EpochStore for TracedEpochs<'_> {
    fn resume(
        &mut self,
        slm: &mut Slm,
        trainer: Trainer,
        labels: &[Option<usize>],
        epochs: usize,
    ) -> Result<(Trainer, Option<Position>)> {
        self.checkpoints.resume(slm, trainer, labels, epochs)
    }

    fn epoch_done(
        &mut self,
        slm: &Slm,
        trainer: &Trainer,
        labels: &[Option<usize>],
        epochs: usize,
        position: &Position,
    ) -> Result<()> {
        write_split_trace(
            self.dir,
            self.round,
            labels,
            self.gold,
            &position.epoch_splits,
            &position.epoch_losses,
            self.label_names,
        )?;
        self.checkpoints
            .epoch_done(slm, trainer, labels, epochs, position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_counts_each_epochs_clean_set_per_label_its_precision_and_loss_auroc() {
        let dir = tempfile::tempdir().unwrap();
        let labels = [Some(0), Some(1), Some(1), Some(0), None];
        let gold = [0, 1, 0, 0, 1];
        let names = ["neg".to_string(), "pos".to_string()];
        let splits = [
            (3, vec![true, true, true, true, false]),
            (4, vec![true, true, false, true, false]),
            (5, vec![true, true, false, true, false]),
        ];
        // Epoch 3's losses put the one wrong label (index 2, 'pos') above two right labels of
        // three (2 of 3 pairs) but below the one other 'pos' label: 0 within its class. Epoch
        // 4's put it above all. 'neg' has no wrong label to score. Epoch 5 kept epoch 4's
        // split and fitted nothing.
        let losses = [
            (3, vec![Some(0.1), Some(0.5), Some(0.3), Some(0.2), None]),
            (4, vec![Some(0.1), Some(0.2), Some(0.9), Some(0.3), None]),
        ];
        write_split_trace(
            dir.path(),
            0,
            &labels,
            Some(&gold),
            &splits,
            &losses,
            &names,
        )
        .unwrap();
        let got = std::fs::read_to_string(dir.path().join("split_trace_round0.csv")).unwrap();
        assert_eq!(
            got,
            "epoch,clean,clean[neg],clean[pos],clean_precision,loss_auroc,loss_auroc[neg],\
             loss_auroc[pos]\n\
             3,4,2,2,0.7500,0.6667,-,0.0000\n\
             4,3,2,1,1.0000,1.0000,-,1.0000\n\
             5,3,2,1,1.0000,-,-,-\n"
        );
    }

    #[test]
    fn an_unlabeled_pool_traces_sizes_without_precision_or_loss_auroc() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["neg".to_string(), "pos".to_string()];
        let splits = [(3, vec![true, false, true])];
        let labels = [Some(0), Some(1), Some(1)];
        let losses = [(3, vec![Some(0.1), Some(0.5), Some(0.3)])];
        write_split_trace(dir.path(), 0, &labels, None, &splits, &losses, &names).unwrap();
        let got = std::fs::read_to_string(dir.path().join("split_trace_round0.csv")).unwrap();
        assert_eq!(got, "epoch,clean,clean[neg],clean[pos]\n3,2,1,1\n");
    }

    #[test]
    fn no_split_writes_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        write_split_trace(
            dir.path(),
            1,
            &[Some(0)],
            Some(&[0]),
            &[],
            &[],
            &["a".into()],
        )
        .unwrap();
        assert!(!dir.path().join("split_trace_round1.csv").exists());
    }
}
