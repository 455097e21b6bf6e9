//! Demonstration retrieval: k nearest neighbours by cosine similarity of sentence embeddings
//! (optionally class-balanced), ordered most-similar-last, or a seeded random draw.

use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Example;

/// How demonstrations are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoChoice {
    /// No demonstrations (zero-shot).
    None,
    /// A random draw from the pool, per item.
    Random,
    /// The nearest pool items by cosine similarity.
    Knn,
}

/// Labelled demonstrations drawn from the training pool, with unit embeddings for k-NN.
pub struct DemoSet {
    /// Training-pool indices of the members, ascending.
    pub members: Vec<usize>,
    /// Each member's label (gold or the LLM's, as the method decides).
    pub labels: Vec<usize>,
    /// Each member's unit embedding (empty when demonstrations are not chosen by similarity).
    pub embeddings: Vec<Vec<f32>>,
}

impl DemoSet {
    /// The members at positions `chosen` as (text, label) demonstrations, in that order.
    pub fn shown<'a>(&self, train: &'a [Example], chosen: &[usize]) -> Vec<(&'a str, usize)> {
        chosen
            .iter()
            .map(|&p| (train[self.members[p]].text.as_str(), self.labels[p]))
            .collect()
    }

    /// The `k` members nearest `query` (see `knn`) as demonstrations, most similar last; `own`
    /// is the query's own position among the members, never shown to itself.
    pub fn nearest<'a>(
        &self,
        train: &'a [Example],
        query: &[f32],
        k: usize,
        balanced: bool,
        own: Option<usize>,
    ) -> Vec<(&'a str, usize)> {
        let chosen = knn(query, &self.embeddings, &self.labels, k, balanced, own);
        self.shown(train, &chosen)
    }
}

/// Scales each row to unit L2 norm (zero rows stay zero), so dot products are cosines.
pub fn normalize_rows(rows: &mut [Vec<f32>]) {
    for row in rows {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Indices of the `k` pool rows most similar to `query` (unit rows), least similar first so the
/// most similar demonstration sits right before the query. With `balanced`, each class gets
/// `k / classes` slots (the remainder to the classes whose best match is closest); `exclude`
/// drops one pool index (the query itself when it is in the pool). Ties break by index.
pub fn knn(
    query: &[f32],
    pool: &[Vec<f32>],
    labels: &[usize],
    k: usize,
    balanced: bool,
    exclude: Option<usize>,
) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = pool
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != exclude)
        .map(|(i, row)| (dot(query, row), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<(f32, usize)> = if balanced {
        let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
        let mut by_class: Vec<Vec<(f32, usize)>> = vec![Vec::new(); classes];
        for &(s, i) in &scored {
            by_class[labels[i]].push((s, i));
        }
        let present: Vec<usize> = (0..classes).filter(|&c| !by_class[c].is_empty()).collect();
        let mut quota = vec![0usize; classes];
        if !present.is_empty() {
            for &c in &present {
                quota[c] = k / present.len();
            }
            let mut order = present.clone();
            order.sort_by(|&a, &b| {
                by_class[b][0]
                    .0
                    .total_cmp(&by_class[a][0].0)
                    .then(a.cmp(&b))
            });
            for &c in order.iter().take(k % present.len()) {
                quota[c] += 1;
            }
        }
        let mut out: Vec<(f32, usize)> = Vec::with_capacity(k);
        for c in 0..classes {
            out.extend(by_class[c].iter().take(quota[c]));
        }
        // A class with too few members leaves slots: fill them with the best remaining items.
        if out.len() < k {
            let taken: std::collections::HashSet<usize> = out.iter().map(|x| x.1).collect();
            let need = k - out.len();
            out.extend(scored.iter().filter(|x| !taken.contains(&x.1)).take(need));
        }
        out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        out
    } else {
        scored.into_iter().take(k).collect()
    };
    chosen.reverse();
    chosen.into_iter().map(|(_, i)| i).collect()
}

/// `k` distinct random pool indices (fewer when the pool is smaller), never `exclude`.
pub fn random_demos(
    rng: &mut ChaCha8Rng,
    pool_len: usize,
    k: usize,
    exclude: Option<usize>,
) -> Vec<usize> {
    let candidates: Vec<usize> = (0..pool_len).filter(|&i| Some(i) != exclude).collect();
    let k = k.min(candidates.len());
    sample(rng, candidates.len(), k)
        .into_iter()
        .map(|j| candidates[j])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn pool() -> (Vec<Vec<f32>>, Vec<usize>) {
        // Angles 0..=5 degrees*10 on the unit circle: similarity to (1, 0) falls with the angle.
        let mut rows: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                let a = (i as f32 * 10.0).to_radians();
                vec![a.cos() * 3.0, a.sin() * 3.0]
            })
            .collect();
        normalize_rows(&mut rows);
        (rows, vec![0, 0, 0, 1, 1, 1])
    }

    #[test]
    fn knn_orders_most_similar_last() {
        let (rows, labels) = pool();
        assert_eq!(
            knn(&[1.0, 0.0], &rows, &labels, 3, false, None),
            vec![2, 1, 0]
        );
        assert_eq!(
            knn(&[1.0, 0.0], &rows, &labels, 3, false, Some(0)),
            vec![3, 2, 1]
        );
    }

    #[test]
    fn balanced_knn_takes_each_class_nearest() {
        let (rows, labels) = pool();
        // Two per class: nearest of class 0 are 0, 1; of class 1 are 3, 4.
        assert_eq!(
            knn(&[1.0, 0.0], &rows, &labels, 4, true, None),
            vec![4, 3, 1, 0]
        );
        // Odd k: the class with the closest match (class 0) gets the extra slot.
        assert_eq!(
            knn(&[1.0, 0.0], &rows, &labels, 3, true, None),
            vec![3, 1, 0]
        );
    }

    #[test]
    fn random_demos_are_distinct_seeded_and_skip_the_query() {
        let mut a = ChaCha8Rng::seed_from_u64(1);
        let mut b = ChaCha8Rng::seed_from_u64(1);
        let x = random_demos(&mut a, 10, 5, Some(3));
        assert_eq!(x, random_demos(&mut b, 10, 5, Some(3)));
        let set: std::collections::HashSet<_> = x.iter().collect();
        assert_eq!(set.len(), 5);
        assert!(!x.contains(&3));
        assert_eq!(random_demos(&mut a, 3, 10, None).len(), 3);
    }
}
