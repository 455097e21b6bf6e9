//! Training losses beyond plain cross-entropy: FreeAL's embedding mixup and its temperature-scaled
//! symmetric KL consistency between two views.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

/// Per-row cross-entropy `-sum(target * log_softmax(logits))` of a batch: `[batch]`.
pub fn soft_cross_entropy(logits: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let rows = logits.dims()[0];
    -(target * log_softmax(logits, 1)).sum_dim(1).reshape([rows])
}

/// A mixup draw for `n` rows: the partner permutation and the weight of each row itself,
/// `lambda ~ Beta(alpha, alpha)` folded to `max(lambda, 1 - lambda)` so every mixed row stays
/// closer to its own example (FreeAL, after DivideMix).
pub fn mixup_draw(n: usize, alpha: f64, rng: &mut ChaCha8Rng) -> (Vec<usize>, f32) {
    let mut partner: Vec<usize> = (0..n).collect();
    partner.shuffle(rng);
    let lambda = match Beta::new(alpha, alpha) {
        Ok(beta) => beta.sample(rng),
        // alpha <= 0 (rejected by spec validation) degenerates to no mixing.
        Err(_) => 1.0,
    };
    (partner, lambda.max(1.0 - lambda) as f32)
}

/// `lambda * a + (1 - lambda) * b`, for pooled vectors and target rows alike.
pub fn mix(a: Tensor<2>, b: Tensor<2>, lambda: f32) -> Tensor<2> {
    a * lambda + b * (1.0 - lambda)
}

/// FreeAL's consistency between an example's two views, summed over the batch (the official
/// code's `KLDivLoss(reduction="sum")`): `0.5 KL(p_b || q_a) + 0.5 KL(p_a || q_b)` where `p_x`
/// is the detached softmax of view x and `q_x` the softmax of view x's logits divided by
/// `temperature` (a temperature below 1 sharpens the trained side).
pub fn symmetric_kl(logits_a: Tensor<2>, logits_b: Tensor<2>, temperature: f32) -> Tensor<1> {
    let p_a = softmax(logits_a.clone().detach(), 1);
    let p_b = softmax(logits_b.clone().detach(), 1);
    let log_q_a = log_softmax(logits_a / temperature, 1);
    let log_q_b = log_softmax(logits_b / temperature, 1);
    let kl =
        |p: Tensor<2>, log_q: Tensor<2>| (p.clone() * (p.clamp_min(1e-12).log() - log_q)).sum();
    kl(p_b, log_q_a) * 0.5 + kl(p_a, log_q_b) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use rand::SeedableRng;

    fn matrix(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex())
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn soft_cross_entropy_matches_hand_values() {
        let ln3 = 3f32.ln();
        let logits = matrix(&[[0.0, ln3], [0.0, 0.0]]);
        let target = matrix(&[[0.0, 1.0], [0.3, 0.7]]);
        let ce = values(soft_cross_entropy(logits, target));
        assert!((ce[0] - -(0.75f32).ln()).abs() < 1e-6);
        assert!((ce[1] - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn symmetric_kl_matches_hand_values() {
        let ln3 = 3f32.ln();
        // p_a = (.5, .5), p_b = (.75, .25).
        // T = 1: 0.5 [.75 ln 1.5 + .25 ln .5] + 0.5 [.5 ln(2/3) + .5 ln 2] = 0.137327.
        let a = matrix(&[[0.0, 0.0]]);
        let b = matrix(&[[ln3, 0.0]]);
        let t1 = values(symmetric_kl(a.clone(), b.clone(), 1.0))[0];
        assert!((t1 - 0.137_327).abs() < 1e-5, "{t1}");
        // T = 0.5 sharpens b's trained side to (.9, .1): 0.5 [0.130812] + 0.5 [.5 ln(5/9) + .5 ln 5].
        let t05 = values(symmetric_kl(a.clone(), b, 0.5))[0];
        assert!((t05 - 0.320_819).abs() < 1e-5, "{t05}");
        // Identical views agree perfectly at T = 1; the sum runs over rows.
        let two = matrix(&[[1.0, -1.0], [0.2, 0.3]]);
        assert!(values(symmetric_kl(two.clone(), two, 1.0))[0].abs() < 1e-6);
    }

    #[test]
    fn mixup_weights_are_folded_beta_draws_and_partners_a_permutation() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut sum = 0.0;
        let draws = 20_000;
        for _ in 0..draws {
            let (partner, lambda) = mixup_draw(5, 4.0, &mut rng);
            assert!((0.5..=1.0).contains(&lambda));
            let mut sorted = partner.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
            sum += f64::from(lambda);
        }
        // E[max(X, 1 - X)] for X ~ Beta(4, 4) is 0.63672 (numerical integration).
        assert!((sum / draws as f64 - 0.636_72).abs() < 0.003);
        let again = mixup_draw(5, 4.0, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(again, mixup_draw(5, 4.0, &mut ChaCha8Rng::seed_from_u64(1)));
    }

    #[test]
    fn mix_interpolates() {
        let mixed = values(mix(matrix(&[[1.0, 0.0]]), matrix(&[[0.0, 1.0]]), 0.75));
        assert_eq!(mixed, vec![0.75, 0.25]);
    }
}
