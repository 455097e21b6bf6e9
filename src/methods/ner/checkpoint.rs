//! A NER FreeAL cell's state after a finished round, so an interrupted cell resumes at the next
//! round: on a full-size pool one round of tagger training takes hours on a CPU, and the
//! refinery's prompts come from that tagger's outputs (see the classification checkpoint,
//! [`crate::methods::freeal::checkpoint`], whose file name and checks it shares).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::methods::freeal::checkpoint::{RoundCheckpoint, load_fitting};
use crate::methods::freeal::self_train::Split;
use crate::run::records::RoundOutcome;
use crate::slm::tagging::TagInference;
use crate::stream_pos::StreamPos;

/// What the next round needs from the rounds done, and what they reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NerCheckpoint {
    /// The cell it belongs to (its id: a hash of the cell's whole configuration).
    pub cell_id: String,
    /// Every finished round's outcome, in order.
    pub outcomes: Vec<RoundOutcome>,
    /// The pool's tags after the last finished round (None: no usable answer).
    pub labels: Vec<Option<Vec<usize>>>,
    /// Which pool sentences the LLM has been asked about (`label_fraction` < 1 leaves some out).
    pub queried: Vec<bool>,
    /// The last round's tagger outputs on the pool: the refinery's demonstrations come from them.
    pub pool: TagInference,
    /// The last round's clean/noisy split: the refinery re-extracts its noisy sentences.
    pub split: Split,
    /// The last round's tagger's tags on the test split: a round whose refinery changes no
    /// label keeps that tagger, and its test scores come from these.
    pub test_tags: Vec<Vec<usize>>,
    /// Where the cell's random stream stands.
    pub rng_word_pos: StreamPos,
}

impl RoundCheckpoint for NerCheckpoint {
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
            self.pool.probs.len(),
            self.pool.pooled.len(),
            self.split.clean.len(),
            self.split.posterior.len(),
        ]
    }
    fn stream(&self) -> &StreamPos {
        &self.rng_word_pos
    }
}

/// The checkpoint in `dir` when this cell can resume from it: written for `cell_id`, tagging a
/// pool of `pool_len` sentences and a test split of `test_len`, with fewer than `rounds + 1`
/// rounds done; otherwise `Err` with why, for a warning.
pub fn load(
    dir: &Path,
    cell_id: &str,
    pool_len: usize,
    test_len: usize,
    rounds: usize,
) -> std::result::Result<NerCheckpoint, String> {
    load_fitting(dir, cell_id, pool_len, rounds, |c: &NerCheckpoint| {
        (c.test_tags.len() != test_len)
            .then(|| format!("its test tags do not cover the {test_len}-sentence test split"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::freeal::checkpoint::save;
    use crate::run::records::CHECKPOINT_JSON;

    fn checkpoint(pool_len: usize, rounds_done: u32) -> NerCheckpoint {
        NerCheckpoint {
            cell_id: "abc".into(),
            outcomes: (0..rounds_done)
                .map(|round| RoundOutcome {
                    round,
                    // Parsed to the neighbouring double without serde_json's
                    // `float_roundtrip` (seen in a resumed CoNLL cell's records).
                    metrics: [("pool_label_f1".to_string(), 0.117_302_052_785_923_75)].into(),
                    ..RoundOutcome::default()
                })
                .collect(),
            labels: (0..pool_len)
                .map(|i| (i % 3 != 0).then(|| vec![0, i % 5, 0]))
                .collect(),
            queried: (0..pool_len).map(|i| i % 4 != 1).collect(),
            pool: TagInference {
                // Values whose decimal forms are long: the round trip must be exact.
                probs: vec![vec![vec![0.1f32, 1.0 / 3.0, f32::MIN_POSITIVE], vec![]]; pool_len],
                pooled: vec![vec![-1e-7f32, 2.5]; pool_len],
            },
            split: Split {
                clean: vec![true; pool_len],
                posterior: vec![1.0 / 7.0; pool_len],
            },
            test_tags: vec![vec![1, 2, 0]; 2],
            rng_word_pos: StreamPos(12_345),
        }
    }

    #[test]
    fn round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let saved = checkpoint(4, 1);
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path(), "abc", 4, 2, 2).unwrap(), saved);
    }

    #[test]
    fn refuses_a_checkpoint_that_does_not_fit_the_cell() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "abc", 4, 2, 1).is_err(), "no file");
        save(dir.path(), &checkpoint(4, 1)).unwrap();
        let why = load(dir.path(), "other", 4, 2, 1).unwrap_err();
        assert!(why.contains("written for cell abc"), "{why}");
        let why = load(dir.path(), "abc", 5, 2, 1).unwrap_err();
        assert!(why.contains("5-example pool"), "{why}");
        let why = load(dir.path(), "abc", 4, 3, 1).unwrap_err();
        assert!(why.contains("3-sentence test split"), "{why}");
        save(dir.path(), &checkpoint(4, 2)).unwrap();
        assert!(
            load(dir.path(), "abc", 4, 2, 1).is_err(),
            "every round done"
        );
        // A classification checkpoint is not a NER one.
        std::fs::write(
            dir.path().join(CHECKPOINT_JSON),
            br#"{"cell_id": "abc", "outcomes": [], "labels": [1, null]}"#,
        )
        .unwrap();
        let why = load(dir.path(), "abc", 2, 2, 1).unwrap_err();
        assert!(why.contains("not a FreeAL checkpoint"), "{why}");
    }
}
