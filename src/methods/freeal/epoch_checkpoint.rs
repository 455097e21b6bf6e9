//! A FreeAL round's self-training saved between epochs, so that a cell whose one round trains
//! for hours (MR's full pool for 30 epochs: ~3 h on a 2-core CPU) survives being stopped: the
//! rerun goes on after the last saved epoch and ends with the numbers of a run that never
//! stopped. Only on the fused CPU path, whose dropout draws can be replayed
//! ([`Slm::can_snapshot`]).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::self_train::{EpochStore, Position};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::run::records::{
    EPOCH_CHECKPOINT_JSON, remove_epoch_checkpoint_files_except, write_atomic,
};
use crate::slm::Slm;
use crate::slm::model::Trainer;
use crate::slm::snapshot::TrainingState;

/// What `epoch_checkpoint.json` holds; the weights and optimiser state are in the two files it
/// names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Saved {
    cell_id: String,
    round: usize,
    /// The labels trained on: a checkpoint of other labels (a changed cache, another round)
    /// is not this training.
    labels: Vec<Option<usize>>,
    epochs: usize,
    position: Position,
    slm: TrainingState,
    model_file: String,
    optim_file: String,
}

/// Epoch checkpoints of one round of one cell, written at most every `every`.
pub struct EpochCheckpoints<'a> {
    dir: &'a Path,
    cell_id: &'a str,
    cell_name: &'a str,
    round: usize,
    every: Duration,
    last: Instant,
    progress: &'a Progress,
}

impl<'a> EpochCheckpoints<'a> {
    /// Checkpoints in the cell directory `dir`, the first after `every` of training (zero:
    /// after every epoch).
    pub fn new(
        dir: &'a Path,
        cell_id: &'a str,
        cell_name: &'a str,
        round: usize,
        every: Duration,
        progress: &'a Progress,
    ) -> Self {
        Self {
            dir,
            cell_id,
            cell_name,
            round,
            every,
            last: Instant::now(),
            progress,
        }
    }

    /// The saved state when it belongs to this training, else why not (`None`: no file).
    fn load(
        &self,
        labels: &[Option<usize>],
        epochs: usize,
    ) -> Option<std::result::Result<Saved, String>> {
        let path = self.dir.join(EPOCH_CHECKPOINT_JSON);
        let bytes = std::fs::read(&path).ok()?;
        let saved: Saved = match serde_json::from_slice(&bytes) {
            Ok(saved) => saved,
            Err(e) => return Some(Err(format!("{}: unreadable ({e})", path.display()))),
        };
        let problem = if saved.cell_id != self.cell_id {
            Some(format!("written for cell {}", saved.cell_id))
        } else if saved.round != self.round {
            Some(format!("written for round {}", saved.round))
        } else if saved.labels != labels {
            Some("written for other labels".into())
        } else if saved.epochs != epochs || saved.position.epochs_done >= epochs {
            Some(format!(
                "{} of {} epochs done, this training has {epochs}",
                saved.position.epochs_done, saved.epochs
            ))
        } else if saved.position.clean.len() != labels.len() {
            Some("its clean flags do not cover the pool".into())
        } else {
            None
        };
        Some(match problem {
            Some(why) => Err(format!("{}: {why}", path.display())),
            None => Ok(saved),
        })
    }

    fn file(&self, kind: &str, epochs_done: usize) -> String {
        format!("epoch_{kind}.round{}.epoch{epochs_done}.bpk", self.round)
    }
}

impl EpochStore for EpochCheckpoints<'_> {
    fn resume(
        &mut self,
        slm: &mut Slm,
        trainer: Trainer,
        labels: &[Option<usize>],
        epochs: usize,
    ) -> Result<(Trainer, Option<Position>)> {
        self.last = Instant::now();
        let saved = self.load(labels, epochs);
        if !slm.can_snapshot() {
            if saved.is_some() {
                self.progress.println(
                    "warning: not resuming self-training from its epoch checkpoint: only the \
                     `cpu` backend can (its dropout draws are replayed); starting at epoch 1",
                );
            }
            return Ok((trainer, None));
        }
        match saved {
            None => Ok((trainer, None)),
            Some(Err(why)) => {
                self.progress.println(&format!(
                    "warning: not resuming self-training, starting at epoch 1: {why}"
                ));
                Ok((trainer, None))
            }
            Some(Ok(saved)) => {
                // A half-restored SLM cannot start over with the numbers of an uninterrupted
                // run, so an unreadable checkpoint (e.g. written by a version whose model had
                // other parts) stops the cell and says how to start the round over.
                let trainer = slm
                    .restore_training(
                        trainer,
                        &saved.slm,
                        &self.dir.join(&saved.model_file),
                        &self.dir.join(&saved.optim_file),
                    )
                    .map_err(|e| Error::Cell {
                        cell: self.cell_name.to_string(),
                        message: format!(
                            "{e}; delete {} and the epoch_*.bpk files beside it to start \
                             round {}'s self-training over",
                            self.dir.join(EPOCH_CHECKPOINT_JSON).display(),
                            self.round
                        ),
                    })?;
                self.progress.println(&format!(
                    "{}: resuming round {}'s self-training after epoch {} of {epochs} from its \
                     epoch checkpoint",
                    self.cell_name, self.round, saved.position.epochs_done
                ));
                Ok((trainer, Some(saved.position)))
            }
        }
    }

    fn epoch_done(
        &mut self,
        slm: &Slm,
        trainer: &Trainer,
        labels: &[Option<usize>],
        epochs: usize,
        position: &Position,
    ) -> Result<()> {
        if !slm.can_snapshot() || self.last.elapsed() < self.every {
            return Ok(());
        }
        let model_file = self.file("model", position.epochs_done);
        let optim_file = self.file("optim", position.epochs_done);
        let state = slm.save_training(
            trainer,
            &self.dir.join(&model_file),
            &self.dir.join(&optim_file),
        )?;
        let saved = Saved {
            cell_id: self.cell_id.to_string(),
            round: self.round,
            labels: labels.to_vec(),
            epochs,
            position: position.clone(),
            slm: state,
            model_file: model_file.clone(),
            optim_file: optim_file.clone(),
        };
        let path = self.dir.join(EPOCH_CHECKPOINT_JSON);
        let bytes = serde_json::to_vec(&saved).map_err(|e| Error::Results {
            path: path.clone(),
            message: format!("epoch checkpoint: {e}"),
        })?;
        // The JSON names the files it goes with, and is replaced whole: a stop at any point
        // leaves the previous checkpoint or this one. Only then do the older files go.
        write_atomic(&path, &bytes)?;
        remove_epoch_checkpoint_files_except(self.dir, &[model_file, optim_file]);
        self.last = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_pos::StreamPos;

    fn saved(labels: &[Option<usize>], epochs_done: usize) -> Saved {
        Saved {
            cell_id: "abc".into(),
            round: 1,
            labels: labels.to_vec(),
            epochs: 5,
            position: Position {
                epochs_done,
                steps: 12,
                clean: vec![true; labels.len()],
                epoch_splits: vec![(3, vec![false; labels.len()])],
                epoch_losses: vec![(3, labels.iter().map(|l| l.map(|_| 1.0 / 7.0)).collect())],
                mixup_word_pos: StreamPos(u128::MAX),
                wall_s: 1.0 / 3.0,
            },
            slm: TrainingState {
                steps: 12,
                epochs_done,
                shuffle_word_pos: StreamPos(7),
                dropout_draws: u64::MAX,
            },
            model_file: "m.bpk".into(),
            optim_file: "o.bpk".into(),
        }
    }

    fn write(dir: &Path, saved: &Saved) {
        let bytes = serde_json::to_vec(saved).unwrap();
        std::fs::write(dir.join(EPOCH_CHECKPOINT_JSON), bytes).unwrap();
    }

    #[test]
    fn takes_only_a_checkpoint_of_this_cell_round_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::hidden();
        let store = |round| {
            EpochCheckpoints::new(dir.path(), "abc", "cell", round, Duration::ZERO, &progress)
        };
        let labels = [Some(0), None, Some(1)];
        assert!(store(1).load(&labels, 5).is_none(), "no file");
        write(dir.path(), &saved(&labels, 3));
        assert_eq!(
            store(1).load(&labels, 5).unwrap().unwrap(),
            saved(&labels, 3)
        );
        let refused = |store: EpochCheckpoints, labels: &[Option<usize>], epochs| {
            store.load(labels, epochs).unwrap().unwrap_err()
        };
        assert!(refused(store(2), &labels, 5).contains("written for round 1"));
        assert!(refused(store(1), &[Some(0), Some(0), Some(1)], 5).contains("other labels"));
        assert!(refused(store(1), &labels, 8).contains("3 of 5 epochs done"));
        let other_cell =
            EpochCheckpoints::new(dir.path(), "xyz", "cell", 1, Duration::ZERO, &progress);
        assert!(refused(other_cell, &labels, 5).contains("written for cell abc"));
        write(dir.path(), &saved(&labels, 5));
        assert!(refused(store(1), &labels, 5).contains("5 of 5 epochs done"));
        std::fs::write(dir.path().join(EPOCH_CHECKPOINT_JSON), b"{\"cell_id\"").unwrap();
        assert!(refused(store(1), &labels, 5).contains("unreadable"));
    }

    #[test]
    fn a_checkpoint_written_before_epoch_losses_resumes_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::hidden();
        let labels = [Some(0), None, Some(1)];
        let mut old = serde_json::to_value(saved(&labels, 3)).unwrap();
        old["position"]
            .as_object_mut()
            .unwrap()
            .remove("epoch_losses")
            .unwrap();
        std::fs::write(
            dir.path().join(EPOCH_CHECKPOINT_JSON),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let store = EpochCheckpoints::new(dir.path(), "abc", "cell", 1, Duration::ZERO, &progress);
        let mut want = saved(&labels, 3);
        want.position.epoch_losses.clear();
        assert_eq!(store.load(&labels, 5).unwrap().unwrap(), want);
    }
}
