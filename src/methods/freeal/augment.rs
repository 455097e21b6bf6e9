//! The second view FreeAL's consistency loss compares with the original text. Pluggable, and
//! named for what it is: a back-translation replayed from a file is not a dropout view.

use std::collections::HashMap;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Where the augmented view of a training text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Augmentation {
    /// No second view: no consistency loss (mixup and clean-set CE remain).
    None,
    /// The same text through the encoder again: a different dropout mask is the only change
    /// (the cheapest view, and the default because it needs no external resource).
    #[default]
    Dropout,
    /// Word-level edits: each word deleted with probability 0.1, then two words swapped.
    TokenEdits,
    /// A paraphrase written by the cell's LLM (one generation per pool text, cached).
    LlmParaphrase,
    /// A stored view replayed from `[llm.replay]`'s augmentation column (the MR file holds the
    /// paper's back-translations).
    Replay,
}

/// Token-level edits of `text` seeded by `seed`: random deletion (p = 0.1, at least one word
/// survives) and one random swap of two words.
pub fn token_edits(text: &str, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut kept: Vec<&str> = words
        .iter()
        .copied()
        .filter(|_| rng.random::<f64>() >= 0.1)
        .collect();
    if kept.is_empty()
        && let Some(w) = words.choose(&mut rng)
    {
        kept.push(w);
    }
    if kept.len() >= 2 {
        let a = rng.random_range(0..kept.len());
        let b = rng.random_range(0..kept.len());
        kept.swap(a, b);
    }
    kept.join(" ")
}

/// The augmented texts of `texts` (same order) and how many had a stored view (`Replay`; the
/// others fall back to the original text, i.e. a dropout view). `None` for the kinds that need
/// no second text (`None`, `Dropout`) or that an LLM writes (`LlmParaphrase`).
pub fn views(
    kind: Augmentation,
    texts: &[&str],
    stored: &HashMap<String, String>,
    seed: u64,
) -> Option<(Vec<String>, usize)> {
    match kind {
        Augmentation::None | Augmentation::Dropout | Augmentation::LlmParaphrase => None,
        Augmentation::TokenEdits => Some((
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| token_edits(t, seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                .collect(),
            texts.len(),
        )),
        Augmentation::Replay => {
            let mut found = 0;
            let out = texts
                .iter()
                .map(|t| match stored.get(t.trim()) {
                    Some(v) if !v.trim().is_empty() => {
                        found += 1;
                        v.clone()
                    }
                    _ => t.to_string(),
                })
                .collect();
            Some((out, found))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_edits_are_seeded_and_only_drop_or_move_words() {
        let text = "the film is a quiet and moving portrait of grief";
        let a = token_edits(text, 1);
        assert_eq!(a, token_edits(text, 1));
        let original: Vec<&str> = text.split_whitespace().collect();
        for seed in 0..50 {
            let edited = token_edits(text, seed);
            let words: Vec<&str> = edited.split_whitespace().collect();
            assert!(!words.is_empty() && words.len() <= original.len());
            assert!(words.iter().all(|w| original.contains(w)));
        }
        assert!((0..50).any(|s| token_edits(text, s) != text));
        assert_eq!(token_edits("single", 3), "single");
    }

    #[test]
    fn replay_views_fall_back_to_the_text_and_count_hits() {
        let stored = HashMap::from([("a good film".to_string(), "a fine movie".to_string())]);
        let (out, found) = views(
            Augmentation::Replay,
            &["a good film", "a bad film"],
            &stored,
            0,
        )
        .unwrap();
        assert_eq!(out, vec!["a fine movie", "a bad film"]);
        assert_eq!(found, 1);
        assert!(views(Augmentation::Dropout, &["x"], &stored, 0).is_none());
    }
}
