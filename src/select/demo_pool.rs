//! FreeAL's demonstration pool: per class, the examples whose LLM label the SLM agrees with, the
//! top R% of them by SLM confidence, reduced to their k-medoids on SLM embeddings.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::kmedoids::k_medoids;

/// How agreeing examples are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Softmax probability of the predicted class (comparable across examples).
    #[default]
    Probability,
    /// Raw maximum logit, as FreeAL's official code ranks.
    Logit,
}

/// Per class (index = class), the rows whose LLM label equals the SLM's prediction, ranked by
/// `scores` (probabilities or logits, one row per example) and cut to the top
/// `floor(count * r_fraction)` (the official code's `int(n * rho)`). Ties keep the lower index.
pub fn top_agreeing(
    llm_labels: &[Option<usize>],
    scores: &[Vec<f32>],
    num_labels: usize,
    r_fraction: f64,
) -> Vec<Vec<usize>> {
    let mut by_class: Vec<Vec<(f32, usize)>> = vec![Vec::new(); num_labels];
    for (i, (label, row)) in llm_labels.iter().zip(scores).enumerate() {
        let Some(label) = *label else { continue };
        let (pred, best) = row
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .unwrap_or((usize::MAX, f32::NEG_INFINITY));
        if pred == label && label < num_labels {
            by_class[label].push((best, i));
        }
    }
    by_class
        .into_iter()
        .map(|rows| top_fraction(rows, r_fraction))
        .collect()
}

/// The indices of the top `floor(count * r_fraction)` of `(score, index)` rows by score (ties:
/// lower index first), ascending.
fn top_fraction(mut rows: Vec<(f32, usize)>, r_fraction: f64) -> Vec<usize> {
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let keep = (rows.len() as f64 * r_fraction).floor() as usize;
    let mut kept: Vec<usize> = rows.into_iter().take(keep).map(|(_, i)| i).collect();
    kept.sort_unstable();
    kept
}

/// Per group (NER: an entity type, or entity-free sentences), the rows that `agree` (SLM tags
/// equal the LLM's) and belong to the group (a row may belong to several), ranked by
/// `confidence` and cut to the top `floor(count * r_fraction)`. Ties keep the lower index.
pub fn top_agreeing_sets(
    agree: &[bool],
    groups: &[Vec<usize>],
    confidence: &[f32],
    num_groups: usize,
    r_fraction: f64,
) -> Vec<Vec<usize>> {
    let mut by_group: Vec<Vec<(f32, usize)>> = vec![Vec::new(); num_groups];
    for (i, member_of) in groups.iter().enumerate() {
        if !agree[i] {
            continue;
        }
        for &g in member_of.iter().filter(|&&g| g < num_groups) {
            by_group[g].push((confidence[i], i));
        }
    }
    by_group
        .into_iter()
        .map(|rows| top_fraction(rows, r_fraction))
        .collect()
}

/// The merged pool: for every class, `medoids_per_class` k-medoids of its top agreeing rows on
/// `embeddings` (unit vectors). Returned ascending; its labels are the LLM's.
pub fn demo_pool(
    candidates: &[Vec<usize>],
    embeddings: &[Vec<f32>],
    medoids_per_class: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let mut pool = Vec::new();
    for rows in candidates {
        let vectors: Vec<Vec<f32>> = rows.iter().map(|&i| embeddings[i].clone()).collect();
        let found = k_medoids(&vectors, medoids_per_class, 100, rng);
        pool.extend(found.medoids.iter().map(|&m| rows[m]));
    }
    pool.sort_unstable();
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn r_percent_per_entity_type_counts_a_sentence_in_every_type_it_holds() {
        // Six sentences; groups: 0 = PER, 1 = LOC, 2 = no entity.
        let agree = [true, true, false, true, true, true];
        let groups = vec![vec![0], vec![0, 1], vec![0], vec![1], vec![2], vec![0]];
        let confidence = [0.9, 0.6, 0.99, 0.8, 0.7, 0.95];
        // PER agreeing: 0 (0.9), 1 (0.6), 5 (0.95) -> top floor(3 * 0.67) = 2: 5 and 0.
        // LOC agreeing: 1 (0.6), 3 (0.8) -> top 1: 3. None: 4 alone -> floor(0.67) = 0.
        let sets = top_agreeing_sets(&agree, &groups, &confidence, 3, 0.67);
        assert_eq!(sets, vec![vec![0, 5], vec![3], vec![]]);
        let all = top_agreeing_sets(&agree, &groups, &confidence, 3, 1.0);
        assert_eq!(all, vec![vec![0, 1, 5], vec![1, 3], vec![4]]);
    }

    #[test]
    fn r_percent_keeps_the_most_confident_agreeing_rows_per_class() {
        // 12 rows, 2 classes. LLM labels; SLM probability rows.
        let llm = [
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(1), // disagrees (SLM says 0)
            Some(1),
            Some(1),
            Some(1),
            None, // masked: never a candidate
            Some(1),
            Some(0), // disagrees (SLM says 1)
        ];
        let p = |c: usize, conf: f32| {
            if c == 0 {
                vec![conf, 1.0 - conf]
            } else {
                vec![1.0 - conf, conf]
            }
        };
        let probs = vec![
            p(0, 0.9),
            p(0, 0.6),
            p(0, 0.99),
            p(0, 0.7),
            p(0, 0.8),
            p(0, 0.95),
            p(1, 0.55),
            p(1, 0.97),
            p(1, 0.9),
            p(1, 0.99),
            p(1, 0.91),
            p(1, 0.99),
        ];
        // Class 0 agreeing: rows 0..=4 (5 rows); 40% -> floor(2.0) = 2: rows 2 (0.99), 0 (0.9).
        // Class 1 agreeing: rows 6, 7, 8, 10 (4 rows); 40% -> floor(1.6) = 1: row 7 (0.97).
        let top = top_agreeing(&llm, &probs, 2, 0.4);
        assert_eq!(top, vec![vec![0, 2], vec![7]]);
        // 20%: class 0 floor(1.0) = 1 -> row 2; class 1 floor(0.8) = 0 -> nothing.
        assert_eq!(top_agreeing(&llm, &probs, 2, 0.2), vec![vec![2], vec![]]);
        assert_eq!(
            top_agreeing(&llm, &probs, 2, 1.0),
            vec![vec![0, 1, 2, 3, 4], vec![6, 7, 8, 10]]
        );
    }

    #[test]
    fn logit_ranking_can_differ_from_probability_ranking() {
        // Same argmax, different order: row 0 has the larger max logit, row 1 the larger
        // probability (its runner-up logit is far lower).
        let llm = [Some(0), Some(0)];
        let logits = vec![vec![5.0, 4.5], vec![3.0, -2.0]];
        let probs: Vec<Vec<f32>> = logits
            .iter()
            .map(|r: &Vec<f32>| {
                let z: f32 = r.iter().map(|x| x.exp()).sum();
                r.iter().map(|x| x.exp() / z).collect()
            })
            .collect();
        assert_eq!(top_agreeing(&llm, &logits, 2, 0.5), vec![vec![0], vec![]]);
        assert_eq!(top_agreeing(&llm, &probs, 2, 0.5), vec![vec![1], vec![]]);
    }

    #[test]
    fn pool_takes_medoids_per_class_and_merges() {
        let embeddings: Vec<Vec<f32>> = (0..6)
            .map(|i| {
                let a = i as f32 * 0.01 + if i < 3 { 0.0 } else { 1.5 };
                vec![a.cos(), a.sin()]
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // One medoid per class: the middle row of each tight group.
        let pool = demo_pool(&[vec![0, 1, 2], vec![3, 4, 5]], &embeddings, 1, &mut rng);
        assert_eq!(pool, vec![1, 4]);
        // More medoids than candidates: all of them.
        let pool = demo_pool(&[vec![0, 2], vec![5]], &embeddings, 3, &mut rng);
        assert_eq!(pool, vec![0, 2, 5]);
    }
}
