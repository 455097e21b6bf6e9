//! k-medoids by alternating assignment and medoid update (Park & Jun's "Voronoi iteration") with
//! k-medoids++ seeding, on cosine distance: FreeAL picks each class's most representative clean
//! examples with it. Medoids are real examples, which is what a demonstration must be.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Cosine distance between two unit vectors.
fn distance(a: &[f32], b: &[f32]) -> f32 {
    1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

/// The result of a clustering: medoid row indices (ascending) and each row's cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Medoids {
    /// Row index of each medoid.
    pub medoids: Vec<usize>,
    /// Position in `medoids` of every row's nearest medoid.
    pub assignment: Vec<usize>,
    /// Sum over rows of the distance to their medoid.
    pub cost: f64,
}

/// `k` medoids of `rows` (unit vectors); all rows when `k >= rows.len()`. Seeding follows `rng`.
pub fn k_medoids(rows: &[Vec<f32>], k: usize, max_iter: usize, rng: &mut ChaCha8Rng) -> Medoids {
    let n = rows.len();
    if k == 0 || n == 0 {
        return Medoids {
            medoids: Vec::new(),
            assignment: vec![0; n],
            cost: 0.0,
        };
    }
    if k >= n {
        return Medoids {
            medoids: (0..n).collect(),
            assignment: (0..n).collect(),
            cost: 0.0,
        };
    }
    // The full distance matrix: per-class pools are a few thousand rows at most.
    let dist: Vec<Vec<f32>> = rows
        .iter()
        .map(|a| rows.iter().map(|b| distance(a, b).max(0.0)).collect())
        .collect();
    let mut medoids = seed_plus_plus(&dist, k, rng);
    let mut assignment = assign(&dist, &medoids);
    for _ in 0..max_iter {
        let mut changed = false;
        for (c, medoid) in medoids.iter_mut().enumerate() {
            let members: Vec<usize> = (0..n).filter(|&i| assignment[i] == c).collect();
            let best = members
                .iter()
                .map(|&m| (members.iter().map(|&j| dist[m][j]).sum::<f32>(), m))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if let Some((_, m)) = best
                && m != *medoid
            {
                *medoid = m;
                changed = true;
            }
        }
        let next = assign(&dist, &medoids);
        if !changed && next == assignment {
            break;
        }
        assignment = next;
    }
    // Report medoids in ascending row order, remapping assignments to match.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by_key(|&c| medoids[c]);
    let mut new_pos = vec![0; k];
    for (pos, &c) in order.iter().enumerate() {
        new_pos[c] = pos;
    }
    let cost = (0..n)
        .map(|i| f64::from(dist[i][medoids[assignment[i]]]))
        .sum();
    Medoids {
        medoids: order.iter().map(|&c| medoids[c]).collect(),
        assignment: assignment.iter().map(|&c| new_pos[c]).collect(),
        cost,
    }
}

/// k-medoids++: the first medoid uniformly, each next one with probability proportional to the
/// squared distance to the nearest medoid chosen so far.
fn seed_plus_plus(dist: &[Vec<f32>], k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let n = dist.len();
    let mut medoids = vec![rng.random_range(0..n)];
    let mut nearest: Vec<f32> = dist[medoids[0]].clone();
    while medoids.len() < k {
        let weights: Vec<f64> = nearest.iter().map(|d| f64::from(*d).powi(2)).collect();
        let total: f64 = weights.iter().sum();
        let next = if total <= 0.0 {
            // Every row coincides with a medoid: take the first row not yet chosen.
            (0..n).find(|i| !medoids.contains(i)).unwrap_or(0)
        } else {
            let mut u = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, w) in weights.iter().enumerate() {
                if u < *w {
                    pick = i;
                    break;
                }
                u -= w;
            }
            pick
        };
        medoids.push(next);
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(dist[next][i]);
        }
    }
    medoids
}

fn assign(dist: &[Vec<f32>], medoids: &[usize]) -> Vec<usize> {
    (0..dist.len())
        .map(|i| {
            (0..medoids.len())
                .min_by(|&a, &b| dist[i][medoids[a]].total_cmp(&dist[i][medoids[b]]))
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::demos::normalize_rows;
    use rand::SeedableRng;

    /// Three tight clusters on the unit circle around 0, 120 and 240 degrees; the planted
    /// medoid of each is the point at the exact centre angle.
    fn planted() -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rows = Vec::new();
        let mut centres = Vec::new();
        for c in 0..3 {
            let base = c as f32 * 2.0 * std::f32::consts::PI / 3.0;
            for (j, off) in [-0.08f32, -0.04, 0.0, 0.03, 0.07].iter().enumerate() {
                if j == 2 {
                    centres.push(rows.len());
                }
                let a = base + off;
                rows.push(vec![a.cos(), a.sin(), 0.0]);
            }
        }
        normalize_rows(&mut rows);
        (rows, centres)
    }

    #[test]
    fn finds_the_medoids_of_planted_clusters() {
        let (rows, centres) = planted();
        for seed in 0..10 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let m = k_medoids(&rows, 3, 50, &mut rng);
            assert_eq!(m.medoids, centres, "seed {seed}");
            for (i, &c) in m.assignment.iter().enumerate() {
                assert_eq!(c, i / 5, "row {i} seed {seed}");
            }
        }
    }

    #[test]
    fn medoid_minimises_within_cluster_distance() {
        // One cluster: the medoid is the point with the smallest summed distance. Cosine distance
        // is ~ half the squared angle, so it is the point nearest the mean angle 0.21: 0.2.
        let angles = [0.0f32, 0.1, 0.15, 0.2, 0.6];
        let rows: Vec<Vec<f32>> = angles.iter().map(|a| vec![a.cos(), a.sin()]).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let m = k_medoids(&rows, 1, 10, &mut rng);
        let best = (0..rows.len())
            .min_by(|&a, &b| {
                let sa: f32 = rows.iter().map(|r| distance(&rows[a], r)).sum();
                let sb: f32 = rows.iter().map(|r| distance(&rows[b], r)).sum();
                sa.total_cmp(&sb)
            })
            .unwrap();
        assert_eq!(m.medoids, vec![best]);
        assert_eq!(best, 3);
    }

    #[test]
    fn k_at_least_n_keeps_every_row_and_empty_input_is_empty() {
        let rows = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(k_medoids(&rows, 5, 10, &mut rng).medoids, vec![0, 1]);
        assert!(k_medoids(&[], 3, 10, &mut rng).medoids.is_empty());
        assert!(k_medoids(&rows, 0, 10, &mut rng).medoids.is_empty());
    }
}
