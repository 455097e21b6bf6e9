//! A FreeAL cell's state after a finished round, so an interrupted cell resumes at the next round
//! instead of training the finished ones again. Retraining is not only slow (a full-pool round
//! is ~25 minutes on a 2-core CPU): the refinery's prompts are built from the previous SLM's
//! embeddings, and a retrained SLM that differs in the last bits picks other demonstrations,
//! so the LLM answers cached before the interruption would no longer be asked for.

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::self_train::Split;
use crate::error::{Error, Result};
use crate::methods::CellContext;
use crate::run::records::{CHECKPOINT_JSON, RoundOutcome, write_atomic};
use crate::slm::model::Inference;
use crate::stream_pos::StreamPos;

/// What the next round needs from the rounds done, and what they reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The cell it belongs to (its id: a hash of the cell's whole configuration).
    pub cell_id: String,
    /// Every finished round's outcome, in order.
    pub outcomes: Vec<RoundOutcome>,
    /// Warnings raised so far.
    pub warnings: Vec<String>,
    /// The pool's labels after the last finished round (None: not labelled).
    pub labels: Vec<Option<usize>>,
    /// Which pool examples the LLM has been asked about.
    pub queried: Vec<bool>,
    /// The last round's SLM outputs on the pool: the refinery's demonstrations come from them.
    pub pool: Inference,
    /// The last round's clean/noisy split: the refinery relabels its noisy examples.
    pub split: Split,
    /// Where the cell's random stream stands.
    pub rng_word_pos: StreamPos,
}

/// What every round checkpoint (classification or NER) knows of itself: enough for [`load`]
/// to check that it fits the cell and for [`resume`] to go on from it.
pub trait RoundCheckpoint: DeserializeOwned {
    /// The cell it was written for.
    fn cell_id(&self) -> &str;
    /// Every finished round's outcome, in order.
    fn outcomes(&self) -> &[RoundOutcome];
    /// The length of each per-example vector it holds: each must be the pool's.
    fn lengths(&self) -> Vec<usize>;
    /// Where the cell's random stream stood after the finished rounds.
    fn stream(&self) -> &StreamPos;
    /// Rounds finished.
    fn rounds_done(&self) -> usize {
        self.outcomes().len()
    }
}

impl RoundCheckpoint for Checkpoint {
    fn cell_id(&self) -> &str {
        &self.cell_id
    }
    fn outcomes(&self) -> &[RoundOutcome] {
        &self.outcomes
    }
    fn lengths(&self) -> Vec<usize> {
        vec![
            self.labels.len(),
            self.queried.len(),
            self.pool.pooled.len(),
            self.pool.probs.len(),
            self.pool.logits.len(),
            self.split.clean.len(),
            self.split.posterior.len(),
        ]
    }
    fn stream(&self) -> &StreamPos {
        &self.rng_word_pos
    }
}

/// The checkpoint the cell resumes from (said on the progress output), read by `load` from the
/// cell directory, `rng` positioned where it left the cell's random stream; `None` to start at
/// round 0: no checkpoint, or (with a warning) one this cell cannot use.
pub fn resume<C: RoundCheckpoint>(
    ctx: &CellContext,
    rounds: usize,
    rng: &mut ChaCha8Rng,
    load: impl FnOnce(&Path) -> std::result::Result<C, String>,
) -> Result<Option<C>> {
    if rounds == 0 || !ctx.out_dir.join(CHECKPOINT_JSON).exists() {
        return Ok(None);
    }
    match load(ctx.out_dir) {
        Ok(checkpoint) => {
            checkpoint.stream().apply(rng);
            ctx.progress.println(&format!(
                "{}: resuming after round {} from its checkpoint",
                ctx.cell.name,
                checkpoint.rounds_done() - 1
            ));
            Ok(Some(checkpoint))
        }
        Err(why) => {
            ctx.progress.println(&format!(
                "warning: not resuming, starting at round 0: {why}"
            ));
            Ok(None)
        }
    }
}

/// Writes `checkpoint` into the cell directory `dir` (atomically: a crash leaves the previous
/// checkpoint or the new one, never half of one).
pub fn save(dir: &Path, checkpoint: &impl Serialize) -> Result<()> {
    let path = dir.join(CHECKPOINT_JSON);
    let bytes = serde_json::to_vec(checkpoint).map_err(|e| Error::Results {
        path: path.clone(),
        message: format!("checkpoint: {e}"),
    })?;
    write_atomic(&path, &bytes)
}

/// The checkpoint file in `dir`, parsed; `Err` says why not, naming the file.
fn read<T: DeserializeOwned>(dir: &Path) -> std::result::Result<T, String> {
    let path = dir.join(CHECKPOINT_JSON);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a FreeAL checkpoint ({e})", path.display()))
}

/// Why `checkpoint` does not fit the cell `cell_id` of `rounds` refinery rounds over a pool of
/// `pool_len` examples, if it does not: written for another cell, with no round or every round
/// done, rounds out of order, or per-example state of another length.
fn misfit(
    checkpoint: &impl RoundCheckpoint,
    cell_id: &str,
    pool_len: usize,
    rounds: usize,
) -> Option<String> {
    let (written_for, outcomes) = (checkpoint.cell_id(), checkpoint.outcomes());
    let done = outcomes.len();
    if written_for != cell_id {
        Some(format!("written for cell {written_for}, not {cell_id}"))
    } else if done == 0 || done > rounds {
        Some(format!(
            "{done} rounds done, expected 1 to {rounds} of this cell's {} rounds",
            rounds + 1
        ))
    } else if checkpoint.lengths().iter().any(|&n| n != pool_len) {
        Some(format!(
            "its per-example state does not cover the {pool_len}-example pool"
        ))
    } else if outcomes
        .iter()
        .enumerate()
        .any(|(i, o)| o.round as usize != i)
    {
        Some("its rounds are not 0, 1, ... in order".into())
    } else {
        None
    }
}

/// The checkpoint in `dir` when there is one this cell can resume from: written for `cell_id`,
/// labelling a pool of `pool_len` examples, with fewer than `rounds + 1` rounds done, and
/// passing the kind's own check `also` (`None`: fits). Anything else (no file, another cell's,
/// unreadable, inconsistent) is `Err` with why, for a warning; the cell then starts from
/// round 0.
pub fn load_fitting<C: RoundCheckpoint>(
    dir: &Path,
    cell_id: &str,
    pool_len: usize,
    rounds: usize,
    also: impl FnOnce(&C) -> Option<String>,
) -> std::result::Result<C, String> {
    let checkpoint: C = read(dir)?;
    match misfit(&checkpoint, cell_id, pool_len, rounds).or_else(|| also(&checkpoint)) {
        Some(why) => Err(format!("{}: {why}", dir.join(CHECKPOINT_JSON).display())),
        None => Ok(checkpoint),
    }
}

/// A classification cell's checkpoint in `dir`, if it fits (see [`load_fitting`]).
pub fn load(
    dir: &Path,
    cell_id: &str,
    pool_len: usize,
    rounds: usize,
) -> std::result::Result<Checkpoint, String> {
    load_fitting(dir, cell_id, pool_len, rounds, |_| None)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn checkpoint(pool_len: usize, rounds_done: u32) -> Checkpoint {
        Checkpoint {
            cell_id: "abc".into(),
            outcomes: (0..rounds_done)
                .map(|round| RoundOutcome {
                    round,
                    // Read back as the neighbouring double without serde_json's
                    // `float_roundtrip`.
                    metrics: [("test_accuracy".to_string(), 0.117_302_052_785_923_75)].into(),
                    ..RoundOutcome::default()
                })
                .collect(),
            warnings: vec!["a warning".into()],
            labels: (0..pool_len)
                .map(|i| (i % 3 != 0).then_some(i % 2))
                .collect(),
            queried: vec![true; pool_len],
            pool: Inference {
                // Values whose decimal forms are long: the round trip must be exact.
                pooled: vec![vec![0.1f32, -1.0 / 3.0, f32::MIN_POSITIVE]; pool_len],
                probs: vec![vec![0.7f32, 0.3]; pool_len],
                logits: vec![vec![2.5f32, -1e-7]; pool_len],
            },
            split: Split {
                clean: vec![true; pool_len],
                posterior: vec![1.0 / 7.0; pool_len],
            },
            rng_word_pos: StreamPos::default(),
        }
    }

    #[test]
    fn round_trips_exactly_and_restores_the_random_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let _: [u64; 5] = rng.random();
        let mut saved = checkpoint(4, 1);
        saved.rng_word_pos = StreamPos::of(&rng);
        save(dir.path(), &saved).unwrap();
        let loaded = load(dir.path(), "abc", 4, 2).unwrap();
        assert_eq!(loaded, saved);
        let mut restored = ChaCha8Rng::seed_from_u64(9);
        loaded.rng_word_pos.apply(&mut restored);
        assert_eq!(restored.random::<u64>(), rng.random::<u64>());
    }

    #[test]
    fn refuses_a_checkpoint_that_does_not_fit_the_cell() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "abc", 4, 1).is_err(), "no file");
        save(dir.path(), &checkpoint(4, 1)).unwrap();
        let why = load(dir.path(), "other", 4, 1).unwrap_err();
        assert!(why.contains("written for cell abc"), "{why}");
        let why = load(dir.path(), "abc", 5, 1).unwrap_err();
        assert!(why.contains("5-example pool"), "{why}");
        let why = load(dir.path(), "abc", 4, 0).unwrap_err();
        assert!(why.contains("1 rounds done"), "{why}");
        save(dir.path(), &checkpoint(4, 2)).unwrap();
        assert!(load(dir.path(), "abc", 4, 1).is_err(), "every round done");
        let mut bad_stream = serde_json::to_value(checkpoint(4, 1)).unwrap();
        bad_stream["rng_word_pos"] = "-1".into();
        let bytes = serde_json::to_vec(&bad_stream).unwrap();
        std::fs::write(dir.path().join(CHECKPOINT_JSON), bytes).unwrap();
        let why = load(dir.path(), "abc", 4, 1).unwrap_err();
        assert!(why.contains("stream position \"-1\""), "{why}");
        std::fs::write(dir.path().join(CHECKPOINT_JSON), b"{\"cell_id\": ").unwrap();
        let why = load(dir.path(), "abc", 4, 1).unwrap_err();
        assert!(why.contains("not a FreeAL checkpoint"), "{why}");
    }
}
