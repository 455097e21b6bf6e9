//! Acquisition functions for active learning: which unlabeled examples to label next, from the
//! current model's probabilities (uncertainty) and/or its embeddings (diversity). On token
//! tagging each word's uncertainty is reduced to one score per sentence (mean, sum or max, as
//! LLMaAA does).

use rand::Rng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How a sentence's per-word uncertainties become its acquisition score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenReduction {
    /// Mean over words: LLMaAA's default; sentence length does not decide.
    #[default]
    Mean,
    /// Sum over words: long sentences (more to learn from, more to pay for) rank higher.
    Sum,
    /// The most uncertain word: one hard entity is enough.
    Max,
}

impl TokenReduction {
    /// Whether this is the default (kept out of serialised configs so cell ids stay stable).
    pub fn is_mean(&self) -> bool {
        *self == TokenReduction::Mean
    }

    /// The reduction of `scores` (0 for a sentence with no scored word).
    pub fn reduce(&self, scores: impl Iterator<Item = f64>) -> f64 {
        let (mut sum, mut max, mut n) = (0.0, f64::NEG_INFINITY, 0usize);
        for s in scores {
            sum += s;
            max = max.max(s);
            n += 1;
        }
        if n == 0 {
            return 0.0;
        }
        match self {
            TokenReduction::Mean => sum / n as f64,
            TokenReduction::Sum => sum,
            TokenReduction::Max => max,
        }
    }
}

/// The current model's probabilities over the pool.
#[derive(Clone, Copy)]
pub enum PoolProbs<'a> {
    /// One class distribution per example.
    Examples(&'a [Vec<f32>]),
    /// Per sentence, one tag distribution per word (empty for a word truncation cut, which is
    /// not scored).
    Words {
        /// The distributions.
        probs: &'a [Vec<Vec<f32>>],
        /// How word scores become a sentence score.
        reduction: TokenReduction,
    },
}

impl PoolProbs<'_> {
    /// Example `i`'s uncertainty under the per-distribution `score`.
    pub fn score(&self, i: usize, score: impl Fn(&[f32]) -> f64) -> f64 {
        match self {
            PoolProbs::Examples(probs) => score(&probs[i]),
            PoolProbs::Words { probs, reduction } => {
                reduction.reduce(probs[i].iter().filter(|p| !p.is_empty()).map(|p| score(p)))
            }
        }
    }
}

/// What an acquisition function sees of the pool.
pub struct PoolView<'a> {
    /// Probabilities of every pool example under the current model.
    pub probs: PoolProbs<'a>,
    /// Unit-length embeddings of every pool example under the current model.
    pub embeddings: &'a [Vec<f32>],
    /// Pool indices that may be picked (unlabeled).
    pub candidates: &'a [usize],
    /// Pool indices already labeled (core-set measures distance to them).
    pub labeled: &'a [usize],
}

/// An acquisition strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acquisition {
    /// Uniformly at random.
    Random,
    /// Highest predictive entropy.
    Entropy,
    /// Lowest probability of the predicted class.
    LeastConfidence,
    /// Smallest gap between the two most probable classes.
    Margin,
    /// k-means (k = budget) on embeddings; the candidate nearest each centre (LLMaAA's k-means).
    Kmeans,
    /// Greedy k-center: repeatedly the candidate farthest from everything labeled or picked.
    Coreset,
    /// The `4 x budget` highest-entropy candidates, then k-means among them for diversity.
    Hybrid,
}

/// Predictive entropy `-sum p ln p` (natural log).
pub fn entropy(p: &[f32]) -> f64 {
    -p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| f64::from(x) * f64::from(x).ln())
        .sum::<f64>()
}

/// `1 - max p`.
pub fn least_confidence(p: &[f32]) -> f64 {
    1.0 - p.iter().copied().fold(0.0f32, f32::max) as f64
}

/// `-(p_first - p_second)`: higher when the top two classes are closer.
pub fn margin(p: &[f32]) -> f64 {
    let mut sorted: Vec<f32> = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let first = sorted.first().copied().unwrap_or(0.0);
    let second = sorted.get(1).copied().unwrap_or(0.0);
    -f64::from(first - second)
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The `budget` candidates with the highest `score`, ties to the lower index.
fn top_scored(view: &PoolView, budget: usize, score: impl Fn(&[f32]) -> f64) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = view
        .candidates
        .iter()
        .map(|&i| (view.probs.score(i, &score), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(budget).map(|(_, i)| i).collect()
}

/// Lloyd's k-means with k-means++ seeding over `rows` of the pool; returns, for each centre, the
/// row nearest to it (distinct rows).
pub fn kmeans_representatives(
    embeddings: &[Vec<f32>],
    rows: &[usize],
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    if k >= rows.len() {
        return rows.to_vec();
    }
    if k == 0 {
        return Vec::new();
    }
    let point = |r: usize| embeddings[rows[r]].as_slice();
    let mut centres: Vec<Vec<f32>> = vec![point(rng.random_range(0..rows.len())).to_vec()];
    while centres.len() < k {
        let weights: Vec<f64> = (0..rows.len())
            .map(|r| {
                centres
                    .iter()
                    .map(|c| squared_distance(point(r), c))
                    .fold(f32::INFINITY, f32::min) as f64
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let pick = if total <= 0.0 {
            centres.len() % rows.len()
        } else {
            let mut u = rng.random::<f64>() * total;
            weights
                .iter()
                .position(|w| {
                    u -= w;
                    u < 0.0
                })
                .unwrap_or(rows.len() - 1)
        };
        centres.push(point(pick).to_vec());
    }
    let nearest = |p: &[f32], centres: &[Vec<f32>]| {
        (0..centres.len())
            .min_by(|&a, &b| {
                squared_distance(p, &centres[a]).total_cmp(&squared_distance(p, &centres[b]))
            })
            .unwrap_or(0)
    };
    let mut assignment = vec![usize::MAX; rows.len()];
    for _ in 0..100 {
        let next: Vec<usize> = (0..rows.len())
            .map(|r| nearest(point(r), &centres))
            .collect();
        if next == assignment {
            break;
        }
        assignment = next;
        for (c, centre) in centres.iter_mut().enumerate() {
            let members: Vec<usize> = (0..rows.len()).filter(|&r| assignment[r] == c).collect();
            if members.is_empty() {
                continue;
            }
            for (d, value) in centre.iter_mut().enumerate() {
                *value = members.iter().map(|&r| point(r)[d]).sum::<f32>() / members.len() as f32;
            }
        }
    }
    let mut taken = vec![false; rows.len()];
    let mut out = Vec::with_capacity(k);
    for centre in &centres {
        let best = (0..rows.len()).filter(|&r| !taken[r]).min_by(|&a, &b| {
            squared_distance(point(a), centre)
                .total_cmp(&squared_distance(point(b), centre))
                .then(a.cmp(&b))
        });
        if let Some(r) = best {
            taken[r] = true;
            out.push(rows[r]);
        }
    }
    out
}

/// Greedy k-center (Sener & Savarese's core-set): `budget` candidates, each the one farthest
/// from its nearest labeled-or-picked example.
pub fn coreset(view: &PoolView, budget: usize) -> Vec<usize> {
    let mut nearest: Vec<f32> = view
        .candidates
        .iter()
        .map(|&i| {
            view.labeled
                .iter()
                .map(|&l| squared_distance(&view.embeddings[i], &view.embeddings[l]))
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    let mut picked = Vec::new();
    let mut used = vec![false; view.candidates.len()];
    while picked.len() < budget.min(view.candidates.len()) {
        let Some(best) = (0..view.candidates.len())
            .filter(|&c| !used[c])
            .max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]).then(b.cmp(&a)))
        else {
            break;
        };
        used[best] = true;
        let chosen = view.candidates[best];
        picked.push(chosen);
        for (c, d) in nearest.iter_mut().enumerate() {
            let to_new = squared_distance(
                &view.embeddings[view.candidates[c]],
                &view.embeddings[chosen],
            );
            *d = d.min(to_new);
        }
    }
    picked
}

impl Acquisition {
    /// Picks up to `budget` distinct candidates.
    pub fn select(&self, view: &PoolView, budget: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let budget = budget.min(view.candidates.len());
        match self {
            Acquisition::Random => sample(rng, view.candidates.len(), budget)
                .into_iter()
                .map(|j| view.candidates[j])
                .collect(),
            Acquisition::Entropy => top_scored(view, budget, entropy),
            Acquisition::LeastConfidence => top_scored(view, budget, least_confidence),
            Acquisition::Margin => top_scored(view, budget, margin),
            Acquisition::Kmeans => {
                kmeans_representatives(view.embeddings, view.candidates, budget, rng)
            }
            Acquisition::Coreset => coreset(view, budget),
            Acquisition::Hybrid => {
                let uncertain = top_scored(view, budget * 4, entropy);
                kmeans_representatives(view.embeddings, &uncertain, budget, rng)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn uncertainty_scores_match_hand_values() {
        // H(0.5, 0.5) = ln 2; H(0.7, 0.2, 0.1) = -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.80182.
        assert!((entropy(&[0.5, 0.5]) - 2f64.ln()).abs() < 1e-7);
        assert!((entropy(&[0.7, 0.2, 0.1]) - 0.801_819).abs() < 1e-5);
        assert_eq!(entropy(&[1.0, 0.0]), 0.0);
        assert!((least_confidence(&[0.7, 0.2, 0.1]) - 0.3).abs() < 1e-6);
        assert!((margin(&[0.1, 0.7, 0.2]) + 0.5).abs() < 1e-6);
    }

    fn view<'a>(
        probs: &'a [Vec<f32>],
        embeddings: &'a [Vec<f32>],
        candidates: &'a [usize],
        labeled: &'a [usize],
    ) -> PoolView<'a> {
        PoolView {
            probs: PoolProbs::Examples(probs),
            embeddings,
            candidates,
            labeled,
        }
    }

    #[test]
    fn uncertainty_functions_rank_candidates() {
        let probs = vec![
            vec![0.9, 0.05, 0.05], // confident
            vec![0.4, 0.35, 0.25], // flat: highest entropy, lowest max
            vec![0.5, 0.5, 0.0],   // zero margin, but lower entropy than row 1
            vec![0.6, 0.3, 0.1],
        ];
        let emb = vec![vec![0.0]; 4];
        let candidates = [0, 1, 2, 3];
        let v = view(&probs, &emb, &candidates, &[]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Entropies: 0.394, 1.080, 0.693, 0.898.
        assert_eq!(Acquisition::Entropy.select(&v, 2, &mut rng), vec![1, 3]);
        // 1 - max: 0.1, 0.6, 0.5, 0.4.
        assert_eq!(
            Acquisition::LeastConfidence.select(&v, 2, &mut rng),
            vec![1, 2]
        );
        // Margins: 0.85, 0.05, 0.0, 0.3.
        assert_eq!(Acquisition::Margin.select(&v, 2, &mut rng), vec![2, 1]);
        // Only candidates are picked.
        let v = view(&probs, &emb, &[0, 3], &[]);
        assert_eq!(Acquisition::Entropy.select(&v, 5, &mut rng), vec![3, 0]);
    }

    #[test]
    fn token_reductions_rank_sentences_differently() {
        // Word entropies: sentence 0 = [ln 2, 0, 0] (one hard word); sentences 1 and 2 have
        // mildly unsure words, H(0.88, 0.12) = 0.36693 each: two (and a cut word), four and a
        // sure one.
        let hard = vec![0.5, 0.5];
        let sure = vec![1.0, 0.0];
        let mild = vec![0.88, 0.12];
        let probs = vec![
            vec![hard.clone(), sure.clone(), sure.clone()],
            vec![mild.clone(), mild.clone(), Vec::new()],
            vec![mild.clone(), mild.clone(), mild.clone(), mild.clone(), sure],
        ];
        let emb = vec![vec![0.0]; 3];
        let candidates = [0, 1, 2];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let h_mild = entropy(&mild);
        assert!((h_mild - 0.366_925).abs() < 1e-5);
        let pick = |reduction, rng: &mut ChaCha8Rng| {
            let v = PoolView {
                probs: PoolProbs::Words {
                    probs: &probs,
                    reduction,
                },
                embeddings: &emb,
                candidates: &candidates,
                labeled: &[],
            };
            Acquisition::Entropy.select(&v, 3, rng)
        };
        // Means: ln2/3 = 0.231, 0.367 (the cut word is not counted), 4 * 0.367 / 5 = 0.294.
        assert_eq!(pick(TokenReduction::Mean, &mut rng), vec![1, 2, 0]);
        // Sums: 0.693, 0.734, 1.468.
        assert_eq!(pick(TokenReduction::Sum, &mut rng), vec![2, 1, 0]);
        // Maxima: 0.693, 0.367, 0.367 (a tie: lower index first).
        assert_eq!(pick(TokenReduction::Max, &mut rng), vec![0, 1, 2]);
        assert_eq!(TokenReduction::Max.reduce(std::iter::empty()), 0.0);
        // Least confidence per word, summed: 0.5, 0.12 * 2 = 0.24, 0.12 * 4 = 0.48.
        let v = PoolView {
            probs: PoolProbs::Words {
                probs: &probs,
                reduction: TokenReduction::Sum,
            },
            embeddings: &emb,
            candidates: &candidates,
            labeled: &[],
        };
        assert_eq!(
            Acquisition::LeastConfidence.select(&v, 3, &mut rng),
            vec![0, 2, 1]
        );
    }

    #[test]
    fn coreset_picks_the_farthest_points_greedily() {
        // 1-D points: labeled at 0; candidates at 1, 2, 10, 11.
        let emb: Vec<Vec<f32>> = [0.0, 1.0, 2.0, 10.0, 11.0]
            .iter()
            .map(|x| vec![*x])
            .collect();
        let probs = vec![vec![1.0]; 5];
        let v = view(&probs, &emb, &[1, 2, 3, 4], &[0]);
        // First 11 (farthest from 0); then 2 (distance 2 to 0, vs 1 for the others).
        assert_eq!(coreset(&v, 2), vec![4, 2]);
    }

    #[test]
    fn kmeans_takes_one_representative_per_planted_cluster() {
        let emb: Vec<Vec<f32>> = [0.0, 0.1, 0.2, 5.0, 5.1, 5.2, 9.0, 9.1, 9.2]
            .iter()
            .map(|x| vec![*x, 0.0])
            .collect();
        let rows: Vec<usize> = (0..9).collect();
        for seed in 0..5 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut got = kmeans_representatives(&emb, &rows, 3, &mut rng);
            got.sort_unstable();
            assert_eq!(got, vec![1, 4, 7], "seed {seed}");
        }
    }

    #[test]
    fn hybrid_takes_the_centre_of_each_uncertain_cluster() {
        // Budget 2, so the 8 most uncertain rows go to k-means with k = 2. Uncertain rows (p =
        // 0.5) sit in two 1-D clusters, {0, 0.1, 0.2, 0.6} (mean 0.225, nearest 0.2) and
        // {10, 10.1, 10.2, 10.6} (nearest 10.2); a confident cluster at 5 is never considered,
        // although k-means over every row would take a point there.
        let xs = [
            0.0, 0.1, 0.2, 0.6, 5.0, 5.1, 5.2, 5.3, 10.0, 10.1, 10.2, 10.6,
        ];
        let emb: Vec<Vec<f32>> = xs.iter().map(|x| vec![*x]).collect();
        let probs: Vec<Vec<f32>> = xs
            .iter()
            .map(|x| {
                if (4.0..6.0).contains(x) {
                    vec![0.99, 0.01]
                } else {
                    vec![0.5, 0.5]
                }
            })
            .collect();
        let candidates: Vec<usize> = (0..xs.len()).collect();
        let v = view(&probs, &emb, &candidates, &[]);
        for seed in 0..5 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut got = Acquisition::Hybrid.select(&v, 2, &mut rng);
            got.sort_unstable();
            assert_eq!(got, vec![2, 10], "seed {seed}");
        }
    }

    #[test]
    fn random_draws_every_candidate_equally_often() {
        // 3 of 6 candidates per draw: each is picked with probability 1/2, so ~1,000 of 2,000
        // draws (binomial sd 22); rows outside the candidates never.
        let probs = vec![vec![0.5, 0.5]; 8];
        let emb = vec![vec![0.0]; 8];
        let candidates = [1, 2, 3, 5, 6, 7];
        let v = view(&probs, &emb, &candidates, &[]);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut counts = [0usize; 8];
        for _ in 0..2000 {
            for i in Acquisition::Random.select(&v, 3, &mut rng) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts[0] + counts[4], 0);
        for &i in &candidates {
            assert!((900..=1100).contains(&counts[i]), "{counts:?}");
        }
    }

    #[test]
    fn random_and_hybrid_return_distinct_candidates() {
        let probs: Vec<Vec<f32>> = (0..20)
            .map(|i| vec![i as f32 / 20.0, 1.0 - i as f32 / 20.0])
            .collect();
        let emb: Vec<Vec<f32>> = (0..20).map(|i| vec![i as f32]).collect();
        let candidates: Vec<usize> = (0..20).collect();
        let v = view(&probs, &emb, &candidates, &[]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for a in [
            Acquisition::Random,
            Acquisition::Hybrid,
            Acquisition::Kmeans,
        ] {
            let mut got = a.select(&v, 4, &mut rng);
            assert_eq!(got.len(), 4);
            got.sort_unstable();
            got.dedup();
            assert_eq!(got.len(), 4, "{a:?}");
        }
        // Hybrid only draws from the 16 most uncertain (closest to 0.5: rows 2..=17).
        let got = Acquisition::Hybrid.select(&v, 4, &mut rng);
        assert!(got.iter().all(|&i| (2..=17).contains(&i)), "{got:?}");
    }
}
