//! Who holds which LLM label in a FreeAL pool, and which examples the LLM has been asked about:
//! with the P% variant (`label_fraction`) the LLM sees a new random share of the pool each round,
//! and the rest trains only through the consistency term until then.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

/// The pool's LLM labels (a class, or a NER sentence's tags) and who has been asked.
pub struct Labels<T> {
    /// Per pool example, its label (`None`: not asked yet, or no usable answer).
    pub labels: Vec<Option<T>>,
    /// Per pool example, whether the LLM has been asked about it.
    pub queried: Vec<bool>,
}

impl<T> Labels<T> {
    /// A pool of `n` examples nobody has labelled.
    pub fn new(n: usize) -> Self {
        Labels {
            labels: (0..n).map(|_| None).collect(),
            queried: vec![false; n],
        }
    }

    /// Pool examples the LLM has not seen yet, `fraction` of the pool at a time, sorted, drawn
    /// from a stream of their own for the cell's `seed` and `round`: the share changes no other
    /// random choice of the cell, so a P% cell writes the same round-0 demonstrations as the
    /// full-pool cell of its seed, and a resumed cell needs no stream position for it.
    pub fn fresh(&self, fraction: f64, seed: u64, round: usize) -> Vec<usize> {
        let unseen: Vec<usize> = (0..self.queried.len())
            .filter(|&i| !self.queried[i])
            .collect();
        let want = ((self.queried.len() as f64) * fraction).round() as usize;
        if want >= unseen.len() {
            return unseen;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e5c_f4ac_7102);
        rng.set_stream(round as u64);
        let mut picked: Vec<usize> = sample(&mut rng, unseen.len(), want)
            .into_iter()
            .map(|j| unseen[j])
            .collect();
        picked.sort_unstable();
        picked
    }

    /// Sets the LLM's answers for `indices` (an unusable answer is `None`) and marks them asked.
    pub fn set(&mut self, indices: &[usize], answers: &[Option<T>])
    where
        T: Clone,
    {
        for (&i, a) in indices.iter().zip(answers) {
            self.labels[i] = a.clone();
            self.queried[i] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_draws_a_new_share_until_the_pool_is_seen() {
        let mut labels: Labels<usize> = Labels::new(10);
        let mut seen = Vec::new();
        for (round, want) in [4, 4, 2, 0].into_iter().enumerate() {
            let fresh = labels.fresh(0.4, 7, round);
            // The same cell, seed and round draw the same share.
            assert_eq!(labels.fresh(0.4, 7, round), fresh);
            assert_eq!(fresh.len(), want, "{fresh:?}");
            assert!(fresh.windows(2).all(|w| w[0] < w[1]), "sorted: {fresh:?}");
            assert!(
                fresh.iter().all(|i| !seen.contains(i)),
                "never twice: {fresh:?}"
            );
            for &i in &fresh {
                labels.queried[i] = true;
            }
            seen.extend(fresh);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn seeds_draw_different_shares_and_the_whole_pool_is_everything() {
        let labels: Labels<Vec<usize>> = Labels::new(40);
        assert_ne!(labels.fresh(0.5, 1, 0), labels.fresh(0.5, 2, 0));
        assert_ne!(labels.fresh(0.5, 1, 0), labels.fresh(0.5, 1, 1));
        assert_eq!(labels.fresh(1.0, 1, 0), (0..40).collect::<Vec<_>>());
    }
}
