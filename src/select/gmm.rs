//! A two-component one-dimensional Gaussian mixture fitted by EM: FreeAL splits per-example
//! training losses into a low-loss (clean) and a high-loss (noisy) component with it.

/// A fitted two-component mixture; component 0 has the lower mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Gmm2 {
    /// Mixing weights.
    pub weights: [f64; 2],
    /// Means (ascending).
    pub means: [f64; 2],
    /// Variances (each at least the regularisation).
    pub variances: [f64; 2],
    /// EM iterations run.
    pub iterations: usize,
}

/// EM settings (FreeAL's: 10 iterations, tolerance 1e-2, variance floor 5e-4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GmmOptions {
    /// Most EM iterations.
    pub max_iter: usize,
    /// Stop when the mean log-likelihood improves by less than this.
    pub tol: f64,
    /// Added to every variance (keeps a component from collapsing onto one point).
    pub reg_covar: f64,
}

impl Default for GmmOptions {
    fn default() -> Self {
        GmmOptions {
            max_iter: 10,
            tol: 1e-2,
            reg_covar: 5e-4,
        }
    }
}

fn log_normal(x: f64, mean: f64, var: f64) -> f64 {
    -0.5 * ((2.0 * std::f64::consts::PI * var).ln() + (x - mean) * (x - mean) / var)
}

/// Per-point responsibilities of both components and the mean log-likelihood.
fn e_step(xs: &[f64], g: &Gmm2) -> (Vec<[f64; 2]>, f64) {
    let mut total = 0.0;
    let resp = xs
        .iter()
        .map(|&x| {
            let l = [0, 1]
                .map(|k| g.weights[k].max(1e-300).ln() + log_normal(x, g.means[k], g.variances[k]));
            let m = l[0].max(l[1]);
            let z = m + ((l[0] - m).exp() + (l[1] - m).exp()).ln();
            total += z;
            [(l[0] - z).exp(), (l[1] - z).exp()]
        })
        .collect();
    (resp, total / xs.len().max(1) as f64)
}

impl Gmm2 {
    /// Fits the mixture to `xs`, starting from the best split of `xs` into a lower and an upper
    /// group (exact one-dimensional 2-means: the official code's scikit-learn mixture starts
    /// from k-means too, but a randomly seeded one). `None` for fewer than two distinct values:
    /// there is no mixture to fit.
    pub fn fit(xs: &[f64], options: GmmOptions) -> Option<Gmm2> {
        let mut sorted = xs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let lower = two_means(&sorted)?;
        let n = xs.len() as f64;
        let moments = |group: &[f64]| {
            let m = group.iter().sum::<f64>() / group.len() as f64;
            let v = group.iter().map(|x| (x - m).powi(2)).sum::<f64>() / group.len() as f64;
            (group.len() as f64 / n, m, v + options.reg_covar)
        };
        let (w0, m0, v0) = moments(&sorted[..lower]);
        let (w1, m1, v1) = moments(&sorted[lower..]);
        let mut g = Gmm2 {
            weights: [w0, w1],
            means: [m0, m1],
            variances: [v0, v1],
            iterations: 0,
        };
        let mut previous = f64::NEG_INFINITY;
        for it in 1..=options.max_iter {
            let (resp, ll) = e_step(xs, &g);
            for k in 0..2 {
                let nk: f64 = resp.iter().map(|r| r[k]).sum::<f64>() + 1e-12;
                let mk = resp.iter().zip(xs).map(|(r, x)| r[k] * x).sum::<f64>() / nk;
                let vk = resp
                    .iter()
                    .zip(xs)
                    .map(|(r, x)| r[k] * (x - mk).powi(2))
                    .sum::<f64>()
                    / nk;
                g.weights[k] = nk / n;
                g.means[k] = mk;
                g.variances[k] = vk + options.reg_covar;
            }
            g.iterations = it;
            if (ll - previous).abs() < options.tol {
                break;
            }
            previous = ll;
        }
        if g.means[0] > g.means[1] {
            g.weights.swap(0, 1);
            g.means.swap(0, 1);
            g.variances.swap(0, 1);
        }
        Some(g)
    }

    /// Posterior probability that each point belongs to the low-mean component.
    pub fn low_posterior(&self, xs: &[f64]) -> Vec<f64> {
        e_step(xs, self).0.into_iter().map(|r| r[0]).collect()
    }
}

/// How many of the ascending `sorted` values form the lower group of the split with the least
/// within-group squared error; never splits equal values. `None` when all values are equal.
fn two_means(sorted: &[f64]) -> Option<usize> {
    let n = sorted.len();
    let mut prefix = vec![(0.0, 0.0); n + 1];
    for (i, x) in sorted.iter().enumerate() {
        prefix[i + 1] = (prefix[i].0 + x, prefix[i].1 + x * x);
    }
    // Sum of squared deviations from the mean of sorted[a..b].
    let sse = |a: usize, b: usize| {
        let (s, q) = (prefix[b].0 - prefix[a].0, prefix[b].1 - prefix[a].1);
        q - s * s / (b - a) as f64
    };
    (1..n)
        .filter(|&k| sorted[k - 1] < sorted[k])
        .map(|k| (k, sse(0, k) + sse(k, n)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

/// Scales values to [0, 1] by their minimum and maximum (all zeros when they are all equal), as
/// FreeAL does with losses before the mixture.
pub fn min_max_normalize(xs: &[f64]) -> Vec<f64> {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Also true for empty input (lo = +inf, hi = -inf) and NaN.
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![0.0; xs.len()];
    }
    xs.iter().map(|x| (x - lo) / (hi - lo)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Box-Muller normal draws.
    fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
        use rand::Rng;
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    #[test]
    fn recovers_a_known_two_gaussian_sample() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut xs: Vec<f64> = (0..7000).map(|_| normal(&mut rng, 0.2, 0.05)).collect();
        xs.extend((0..3000).map(|_| normal(&mut rng, 0.7, 0.1)));
        let g = Gmm2::fit(
            &xs,
            GmmOptions {
                max_iter: 200,
                tol: 1e-9,
                reg_covar: 0.0,
            },
        )
        .unwrap();
        assert!((g.weights[0] - 0.7).abs() < 0.02, "{g:?}");
        assert!(
            (g.means[0] - 0.2).abs() < 0.01 && (g.means[1] - 0.7).abs() < 0.01,
            "{g:?}"
        );
        assert!((g.variances[0].sqrt() - 0.05).abs() < 0.01, "{g:?}");
        assert!((g.variances[1].sqrt() - 0.1).abs() < 0.01, "{g:?}");
        // Points at the low mean are clean with near certainty; at the high mean, noisy.
        let post = g.low_posterior(&[0.2, 0.7]);
        assert!(post[0] > 0.99 && post[1] < 0.01, "{post:?}");
    }

    #[test]
    fn freeal_settings_still_separate_and_edge_cases_are_safe() {
        let xs: Vec<f64> = (0..50)
            .map(|i| 0.1 + 0.001 * i as f64)
            .chain((0..50).map(|i| 0.9 - 0.001 * i as f64))
            .collect();
        let g = Gmm2::fit(&min_max_normalize(&xs), GmmOptions::default()).unwrap();
        assert!(g.iterations <= 10);
        let post = g.low_posterior(&min_max_normalize(&xs));
        assert!(post[..50].iter().all(|p| *p > 0.7) && post[50..].iter().all(|p| *p < 0.3));
        assert_eq!(min_max_normalize(&[3.0, 3.0]), vec![0.0, 0.0]);
        assert_eq!(min_max_normalize(&[1.0, 3.0, 2.0]), vec![0.0, 1.0, 0.5]);
        assert!(Gmm2::fit(&[1.0], GmmOptions::default()).is_none());
        assert!(Gmm2::fit(&[0.4; 5], GmmOptions::default()).is_none());
    }

    #[test]
    fn starts_from_the_best_two_group_split_even_when_most_values_tie() {
        // Quartile starting means would both be 0 here and EM could never tell them apart.
        let mut xs = vec![0.0; 8];
        xs.extend([1.0, 1.0]);
        let g = Gmm2::fit(&xs, GmmOptions::default()).unwrap();
        assert!((g.weights[0] - 0.8).abs() < 1e-9, "{g:?}");
        assert!(
            g.means[0].abs() < 1e-9 && (g.means[1] - 1.0).abs() < 1e-9,
            "{g:?}"
        );
        let post = g.low_posterior(&xs);
        assert!(post[..8].iter().all(|p| *p > 0.99) && post[8..].iter().all(|p| *p < 0.01));
        // Hand-checked: {1, 2, 3} | {10, 11} has SSE 2 + 0.5, every other split more.
        assert_eq!(two_means(&[1.0, 2.0, 3.0, 10.0, 11.0]), Some(3));
        assert_eq!(two_means(&[0.0, 0.0, 1.0]), Some(2));
        assert_eq!(two_means(&[2.0, 2.0]), None);
    }
}
