//! An [`Slm`] and its [`Trainer`] saved between two epochs and restored in another process, so
//! that a training run hours long can stop and go on where it stopped with the numbers of a run
//! that never stopped: the weights, the optimiser's moments, the step count, the position of
//! the batch-shuffling stream and the count of dropout masks drawn.

use std::path::Path;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::fused;
use super::model::{Slm, Trainer};
use super::tokenize::pad_batch;
use crate::error::{Error, Result};
use crate::stream_pos::StreamPos;

/// Where a training run stands between epochs, beside the two files holding the weights and
/// the optimiser state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Optimiser steps taken (the learning-rate schedule's position).
    pub steps: u64,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Where the batch-shuffling stream stands.
    pub shuffle_word_pos: StreamPos,
    /// Dropout masks drawn since the SLM was loaded.
    pub dropout_draws: u64,
}

impl Slm {
    /// Whether a restored run continues exactly as an uninterrupted one: only on the fused CPU
    /// path, whose dropout draws are counted (other backends draw masks from generators whose
    /// state cannot be read back).
    pub fn can_snapshot(&self) -> bool {
        fused::applies_to(&self.device)
    }

    /// Writes the weights to `model_path` and the optimiser state to `optim_path`; the rest of
    /// where training stands is returned, for the caller's own record.
    pub fn save_training(
        &self,
        trainer: &Trainer,
        model_path: &Path,
        optim_path: &Path,
    ) -> Result<TrainingState> {
        let failed = |path: &Path, e: &dyn std::fmt::Display| Error::Results {
            path: path.to_path_buf(),
            message: format!("saving the training state: {e}"),
        };
        self.model
            .clone()
            .save_file(model_path)
            .map_err(|e| failed(model_path, &e))?;
        trainer
            .optim
            .save(optim_path)
            .map_err(|e| failed(optim_path, &e))?;
        Ok(TrainingState {
            steps: trainer.steps,
            epochs_done: trainer.epochs_done,
            shuffle_word_pos: StreamPos::of(&self.rng),
            dropout_draws: fused::dropout_draws(),
        })
    }

    /// Puts this freshly loaded SLM and `trainer` (made by [`Slm::trainer`] for the same
    /// schedule) where [`Slm::save_training`] left them.
    pub fn restore_training(
        &mut self,
        trainer: Trainer,
        state: &TrainingState,
        model_path: &Path,
        optim_path: &Path,
    ) -> Result<Trainer> {
        let failed = |path: &Path, e: &dyn std::fmt::Display| Error::Results {
            path: path.to_path_buf(),
            message: format!("restoring the training state: {e}"),
        };
        // A fresh model initialises its head (with `random_init`, every layer) lazily, at the
        // first training forward pass, from the generator the dropout masks come from, between
        // that pass's masks. Any training pass makes the same draws (masks do not depend on the
        // batch): make one, and the draws after it line up with the interrupted run's.
        let probe = self.tokenize(&["resume"])?;
        let host = pad_batch(&probe, &[0], self.padding);
        let first = self.model.clone().train();
        let _ = first.forward(&first.batch_to_device(&host, &self.device.clone().autodiff()));
        let model = self
            .model
            .clone()
            .try_load_file(model_path)
            .map_err(|e| failed(model_path, &e))?;
        let mut trainer = trainer;
        trainer.optim = trainer
            .optim
            .load(optim_path)
            .map_err(|e| failed(optim_path, &e))?;
        self.model = model;
        state.shuffle_word_pos.apply(&mut self.rng);
        // The count restarted when this SLM was loaded (and seeded); replay the rest.
        let drawn = fused::dropout_draws();
        fused::skip_dropout_draws(state.dropout_draws.saturating_sub(drawn));
        trainer.steps = state.steps;
        trainer.epochs_done = state.epochs_done;
        Ok(trainer)
    }
}
