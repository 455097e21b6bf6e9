//! The f32 loops behind the fused ops, on plain slices: GELU and its derivative with a
//! polynomial erf/exp the compiler vectorises (libm's `erff`/`expf` are scalar calls), and the
//! row-wise backward passes of softmax and layer norm in one sweep each. Rows or blocks run in
//! parallel on rayon's pool (burn's own CPU pool).

use rayon::prelude::*;

/// Defines a function twice over: compiled for AVX2 + FMA, taken when the CPU has them (x86-64
/// machines since 2013), and for the baseline target (SSE2 on x86-64), so that the loops run
/// 8 lanes wide without a `-C target-cpu` that would tie the binary to the build machine.
macro_rules! simd_fn {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide($($arg: $ty),*) $body
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body
        }
    };
}

simd_fn! {
    /// `sums[i] += values[i]` (the bias gradient's column sums).
    pub fn add_assign(sums: &mut [f32], values: &[f32]) {
        for (s, v) in sums.iter_mut().zip(values) {
            *s += v;
        }
    }
}

/// Elements per parallel task of an elementwise loop: large enough to amortise rayon's
/// scheduling, small enough to split a [32 x 64 x 1536] activation across cores.
const BLOCK: usize = 16 * 1024;

/// Rows per parallel task of a row-wise loop.
const ROWS_PER_TASK: usize = 64;

/// erf(x) in f32 by the odd/even rational approximation Eigen and XLA use for single
/// precision (a few ulp from the true value; exactly +-1 beyond |x| = 4). No table, no branch,
/// no libm call, so a loop over it vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_3e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// e^x in f32 for x <= 0 down to -87 (what GELU's density needs): x = n ln2 + r with |r| <=
/// ln2 / 2, a degree-6 polynomial for e^r, and 2^n built in the exponent bits. Round-to-nearest
/// by the 1.5 * 2^23 trick instead of `round()`, which is a libm call without SSE4.1.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    // ln 2 split in two so that n * LN2_HI is exact.
    let r = n * -0.693_145_75 + x;
    let r = n * -1.428_606_8e-6 + r;
    let mut p = r * (1.0 / 720.0) + 1.0 / 120.0;
    p = r * p + 1.0 / 24.0;
    p = r * p + 1.0 / 6.0;
    p = r * p + 0.5;
    p = r * p + 1.0;
    p = r * p + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// Standard normal CDF at x: GELU(x) = x * Phi(x).
#[inline(always)]
fn phi_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU (the erf form, BERT's `gelu`) of every element.
pub fn gelu(x: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .for_each(|(o, x)| gelu_block(x, o));
}

simd_fn! {
    fn gelu_block(x: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = x * phi_cdf(x);
        }
    }
}

/// In place: `grad` becomes grad * GELU'(x), GELU'(x) = Phi(x) + x * phi(x).
pub fn gelu_backward(x: &[f32], grad: &mut [f32]) {
    grad.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .for_each(|(g, x)| gelu_backward_block(x, g));
}

simd_fn! {
    fn gelu_backward_block(x: &[f32], grad: &mut [f32]) {
        // 1 / sqrt(2 pi)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        for (g, &x) in grad.iter_mut().zip(x) {
            let density = INV_SQRT_2PI * exp_nonpositive(-0.5 * x * x);
            *g *= phi_cdf(x) + x * density;
        }
    }
}

/// Attention probabilities, per row of `row` scores: softmax(scale * s) over the keys whose
/// `keep` entry is 1 (0: padding, probability 0). `keep` is [batch, row]; the rows of `scores`
/// are [batch, heads, queries], so row r belongs to batch r / (rows / batch).
pub fn attention_softmax(scores: &[f32], keep: &[f32], scale: f32, row: usize, out: &mut [f32]) {
    let rows_per_batch = scores.len() / keep.len();
    let chunk = ROWS_PER_TASK * row;
    out.par_chunks_mut(chunk)
        .zip(scores.par_chunks(chunk))
        .enumerate()
        .for_each(|(task, (out, scores))| {
            let rows = out.chunks_exact_mut(row).zip(scores.chunks_exact(row));
            for (i, (out, s)) in rows.enumerate() {
                let batch = (task * ROWS_PER_TASK + i) / rows_per_batch;
                let keep = &keep[batch * row..(batch + 1) * row];
                attention_row(s, keep, scale, out);
            }
        });
}

/// Accumulators of a row reduction: the row is folded into this many lanes, then the lanes in
/// order, so that the reduction vectorises and its result does not depend on the vector width.
const LANES: usize = 16;

simd_fn! {
    fn attention_row(s: &[f32], keep: &[f32], scale: f32, out: &mut [f32]) {
        let masked = |s: f32, k: f32| if k != 0.0 { scale * s } else { f32::NEG_INFINITY };
        let mut lanes = [f32::NEG_INFINITY; LANES];
        for (s, k) in s.chunks(LANES).zip(keep.chunks(LANES)) {
            for ((m, &s), &k) in lanes.iter_mut().zip(s).zip(k) {
                let v = masked(s, k);
                *m = if v > *m { v } else { *m };
            }
        }
        let max = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        if max == f32::NEG_INFINITY {
            // No key to attend to: uniform, as a softmax over equally masked scores is.
            out.fill(1.0 / out.len() as f32);
            return;
        }
        let mut sums = [0.0f32; LANES];
        let rows = out.chunks_mut(LANES).zip(s.chunks(LANES)).zip(keep.chunks(LANES));
        for ((o, s), k) in rows {
            for (((o, &s), &k), sum) in o.iter_mut().zip(s).zip(k).zip(&mut sums) {
                // min(0): a padded key's score may exceed the max; its weight is 0 anyway.
                *o = exp_nonpositive((scale * s - max).min(0.0)) * k;
                *sum += *o;
            }
        }
        let inv = 1.0 / sums.iter().sum::<f32>();
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

/// In place, per row of `row` elements: `grad` becomes scale * y * (grad - <grad, y>), the
/// gradient with respect to its input s of a softmax(scale * s) whose output is `y`.
pub fn softmax_backward(y: &[f32], grad: &mut [f32], row: usize, scale: f32) {
    let chunk = ROWS_PER_TASK * row;
    grad.par_chunks_mut(chunk)
        .zip(y.par_chunks(chunk))
        .for_each(|(g, y)| {
            for (g, y) in g.chunks_exact_mut(row).zip(y.chunks_exact(row)) {
                softmax_backward_row(y, g, scale);
            }
        });
}

simd_fn! {
    fn softmax_backward_row(y: &[f32], grad: &mut [f32], scale: f32) {
        let mut lanes = [0.0f32; LANES];
        for (g, y) in grad.chunks(LANES).zip(y.chunks(LANES)) {
            for ((lane, g), y) in lanes.iter_mut().zip(g).zip(y) {
                *lane += g * y;
            }
        }
        let dot: f32 = lanes.iter().sum();
        for (g, &y) in grad.iter_mut().zip(y) {
            *g = scale * y * (*g - dot);
        }
    }
}

/// Gradients of a layer norm over rows of `gamma.len()` elements, given its input `x` and the
/// output gradient `grad`: (d input, d gamma, d beta). The row statistics are recomputed from
/// `x` (one more read of a row already in cache) rather than stored by the forward pass.
pub fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    grad: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let row = gamma.len();
    let chunk = ROWS_PER_TASK * row;
    let mut dx = vec![0.0f32; x.len()];
    // One partial sum per fixed block of rows, added up in block order: rayon's fold/reduce
    // would split where work stealing happens to, and float sums in another order give other
    // bits, so the same seed would not give the same run.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(grad.par_chunks(chunk)))
        .map(|(dx, (x, g))| {
            let (mut dgamma, mut dbeta) = (vec![0.0f32; row], vec![0.0f32; row]);
            let rows = dx
                .chunks_exact_mut(row)
                .zip(x.chunks_exact(row).zip(g.chunks_exact(row)));
            for (dx, (x, g)) in rows {
                layer_norm_row_backward(x, gamma, g, eps, dx, &mut dgamma, &mut dbeta);
            }
            (dgamma, dbeta)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0.0f32; row], vec![0.0f32; row]);
    for (pg, pb) in &partials {
        dgamma.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
        dbeta.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dgamma, dbeta)
}

simd_fn! {
    /// One row of `layer_norm_backward`; adds the row's share to `dgamma` and `dbeta`.
    fn layer_norm_row_backward(
        x: &[f32],
        gamma: &[f32],
        g: &[f32],
        eps: f64,
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let n = x.len() as f32;
        let mean = x.iter().sum::<f32>() / n;
        let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let rstd = 1.0 / (var + eps as f32).sqrt();
        // a = mean(g * gamma), b = mean(g * gamma * xhat)
        let (mut a, mut b) = (0.0f32, 0.0f32);
        for ((&x, &g), &w) in x.iter().zip(g).zip(gamma) {
            let xhat = (x - mean) * rstd;
            let dy = g * w;
            a += dy;
            b += dy * xhat;
        }
        a /= n;
        b /= n;
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * rstd;
            dx[i] = rstd * (g[i] * gamma[i] - a - xhat * b);
            dgamma[i] += g[i] * xhat;
            dbeta[i] += g[i];
        }
    }
}

/// The scalars of one AdamW step (burn's AdamW: decoupled weight decay, bias correction).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta_1: f32,
    /// Second-moment decay.
    pub beta_2: f32,
    /// Added to the root of the corrected second moment.
    pub epsilon: f32,
    /// Decoupled weight decay (scaled by the learning rate).
    pub weight_decay: f32,
    /// Steps taken including this one (bias correction).
    pub time: i32,
}

/// One AdamW step over a parameter in one sweep, in place: `param`, and the moments `m`, `v`.
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], step: AdamWStep) {
    let decay = 1.0 - step.lr * step.weight_decay;
    let correction_1 = 1.0 - step.beta_1.powi(step.time);
    let correction_2 = 1.0 - step.beta_2.powi(step.time);
    let constants = (decay, correction_1, correction_2);
    param
        .par_chunks_mut(BLOCK)
        .zip(m.par_chunks_mut(BLOCK))
        .zip(v.par_chunks_mut(BLOCK))
        .zip(grad.par_chunks(BLOCK))
        .for_each(|(((p, m), v), g)| adamw_block(p, g, m, v, step, constants));
}

simd_fn! {
    fn adamw_block(
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        step: AdamWStep,
        constants: (f32, f32, f32),
    ) {
        let AdamWStep { lr, beta_1, beta_2, epsilon, .. } = step;
        let (decay, correction_1, correction_2) = constants;
        for (((p, m), v), &g) in param.iter_mut().zip(m).zip(v).zip(grad) {
            *m = beta_1 * *m + (1.0 - beta_1) * g;
            *v = beta_2 * *v + (1.0 - beta_2) * g * g;
            let delta = (*m / correction_1) / ((*v / correction_2).sqrt() + epsilon);
            *p = *p * decay - lr * delta;
        }
    }
}

/// A well-mixed 32-bit hash (bijective; "lowbias32" from Chris Wellons' hash search).
#[inline(always)]
fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// Whether dropout keeps element `i` of the call keyed by `seed`: a counter-based draw, so the
/// backward pass regenerates the forward's mask from the seed instead of storing it.
#[inline(always)]
fn kept(seed: u64, i: u32, threshold: u32) -> bool {
    mix32(mix32(i ^ seed as u32) ^ (seed >> 32) as u32) >= threshold
}

/// The mask threshold for drop probability `prob` (a draw below it drops).
fn drop_threshold(prob: f64) -> u32 {
    (prob * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

/// In place: every element is dropped with probability `prob` or scaled by 1 / (1 - prob),
/// by the mask that `seed` gives; the backward pass is the same call on the gradient.
pub fn dropout(values: &mut [f32], seed: u64, prob: f64) {
    assert!(
        values.len() <= u32::MAX as usize,
        "dropout over more than 2^32 elements"
    );
    let threshold = drop_threshold(prob);
    let scale = (1.0 / (1.0 - prob)) as f32;
    values
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(block, v)| dropout_block(v, seed, (block * BLOCK) as u32, threshold, scale));
}

simd_fn! {
    fn dropout_block(values: &mut [f32], seed: u64, start: u32, threshold: u32, scale: f32) {
        for (i, v) in values.iter_mut().enumerate() {
            let keep = kept(seed, start + i as u32, threshold);
            *v = if keep { *v * scale } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect()
    }

    #[test]
    fn erf_matches_libm_to_a_few_ulp() {
        let worst = grid(-6.0, 6.0, 120_000)
            .into_iter()
            .map(|x| (erf(x) - libm::erff(x)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 5e-7, "max |erf - erff| = {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn exp_matches_std_in_relative_error() {
        let worst = grid(-87.0, 0.0, 87_000)
            .into_iter()
            .map(|x| ((exp_nonpositive(x) - x.exp()) / x.exp()).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "max relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) >= 0.0);
    }

    /// GELU in f64 from libm, the reference for both directions.
    fn gelu64(x: f64) -> f64 {
        0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
    }

    #[test]
    fn gelu_and_its_derivative_match_f64_reference() {
        let x = grid(-8.0, 8.0, 50_001);
        let mut y = vec![0.0; x.len()];
        gelu(&x, &mut y);
        let mut d = vec![1.0; x.len()];
        gelu_backward(&x, &mut d);
        for ((&x, &y), &d) in x.iter().zip(&y).zip(&d) {
            let x64 = x as f64;
            // 1 + erf(x / sqrt 2) cancels for x << 0 (as in libm's or PyTorch's erf form), so
            // the absolute error grows with |x| there: erf's few-ulp error times |x| / 2.
            let tolerance = 1e-6 * x64.abs().max(1.0);
            assert!(
                (y as f64 - gelu64(x64)).abs() < tolerance,
                "gelu({x}) = {y}"
            );
            // Central difference of the f64 reference.
            let h = 1e-5;
            let slope = (gelu64(x64 + h) - gelu64(x64 - h)) / (2.0 * h);
            assert!(
                (d as f64 - slope).abs() < tolerance,
                "gelu'({x}) = {d}, not {slope}"
            );
        }
    }

    #[test]
    fn softmax_backward_is_the_jacobian_product() {
        // y = softmax([1, 2, 3]) and [0.5, 0.5, 0.0] (second row), g chosen by hand.
        let row1 = [1.0f64, 2.0, 3.0].map(f64::exp);
        let total: f64 = row1.iter().sum();
        let y: Vec<f32> = row1
            .iter()
            .map(|v| (v / total) as f32)
            .chain([0.5, 0.5, 0.0])
            .collect();
        let g = [1.0f32, -2.0, 0.5, 3.0, 1.0, 7.0];
        let mut out = g.to_vec();
        softmax_backward(&y, &mut out, 3, 1.0);
        for r in 0..2 {
            for i in 0..3 {
                // sum_j dy_j/dx_i g_j with dy_j/dx_i = y_j (delta_ij - y_i)
                let expected: f64 = (0..3)
                    .map(|j| {
                        let delta = if i == j { 1.0 } else { 0.0 };
                        y[3 * r + j] as f64 * (delta - y[3 * r + i] as f64) * g[3 * r + j] as f64
                    })
                    .sum();
                assert!((out[3 * r + i] as f64 - expected).abs() < 1e-6);
            }
        }
        // A masked key (y = 0) gets no gradient.
        assert_eq!(out[5], 0.0);
    }

    /// Layer norm in f64 with gamma and beta, for finite differences.
    fn layer_norm64(x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
        let mut out = Vec::new();
        for row in x.chunks(gamma.len()) {
            let n = row.len() as f64;
            let mean = row.iter().sum::<f64>() / n;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            for (i, v) in row.iter().enumerate() {
                out.push((v - mean) / (var + eps).sqrt() * gamma[i] + beta[i]);
            }
        }
        out
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let width = 5;
        let rows = 3;
        let x: Vec<f64> = (0..rows * width)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.3)
            .collect();
        let gamma: Vec<f64> = (0..width).map(|i| 0.5 + 0.25 * i as f64).collect();
        let beta: Vec<f64> = (0..width).map(|i| 0.1 * i as f64).collect();
        let g: Vec<f64> = (0..rows * width)
            .map(|i| ((i * 13 % 7) as f64 - 3.0) * 0.2)
            .collect();
        let eps = 1e-5;
        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 {
            layer_norm64(x, gamma, beta, eps)
                .iter()
                .zip(&g)
                .map(|(y, g)| y * g)
                .sum()
        };
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (dx, dgamma, dbeta) = layer_norm_backward(&f32s(&x), &f32s(&gamma), &f32s(&g), eps);
        let h = 1e-6;
        let numeric = |which: usize, i: usize| {
            let mut plus = [x.clone(), gamma.clone(), beta.clone()];
            let mut minus = plus.clone();
            plus[which][i] += h;
            minus[which][i] -= h;
            (loss(&plus[0], &plus[1], &plus[2]) - loss(&minus[0], &minus[1], &minus[2])) / (2.0 * h)
        };
        for (i, &d) in dx.iter().enumerate() {
            assert!((d as f64 - numeric(0, i)).abs() < 1e-4, "dx[{i}]");
        }
        for i in 0..width {
            assert!(
                (dgamma[i] as f64 - numeric(1, i)).abs() < 1e-4,
                "dgamma[{i}]"
            );
            assert!((dbeta[i] as f64 - numeric(2, i)).abs() < 1e-4, "dbeta[{i}]");
        }
    }

    #[test]
    fn dropout_keeps_the_right_share_and_repeats_its_mask_by_seed() {
        let n = 1 << 20;
        let prob = 0.1;
        let mut a = vec![1.0f32; n];
        dropout(&mut a, 42, prob);
        let kept_share = a.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        // Binomial standard error at n = 2^20 is 0.0003.
        assert!((kept_share - 0.9).abs() < 0.0015, "kept {kept_share}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        // The same seed gives the same mask (what the backward pass relies on) ...
        let mut again = vec![2.0f32; n];
        dropout(&mut again, 42, prob);
        assert!(
            a.iter()
                .zip(&again)
                .all(|(x, y)| (*x == 0.0) == (*y == 0.0))
        );
        // ... another seed another one, agreeing only as often as chance has it (0.82).
        let mut other = vec![1.0f32; n];
        dropout(&mut other, 43, prob);
        let agree = a
            .iter()
            .zip(&other)
            .filter(|(x, y)| (**x == 0.0) == (**y == 0.0))
            .count();
        let agree = agree as f64 / n as f64;
        assert!((agree - 0.82).abs() < 0.003, "masks agree on {agree}");
        // Neighbouring elements are dropped independently: P(both dropped) = p^2.
        let both = a.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count();
        let both = both as f64 / (n - 1) as f64;
        assert!((both - 0.01).abs() < 0.0008, "adjacent drops {both}");
    }

    #[test]
    fn dropout_of_nothing_keeps_everything_unscaled() {
        let mut v = vec![3.0f32; 1000];
        dropout(&mut v, 7, 0.0);
        assert!(v.iter().all(|&x| x == 3.0));
    }

    #[test]
    fn attention_softmax_scales_and_masks_per_batch() {
        // 2 batches x 2 query rows, 3 keys; batch 0 keeps all keys, batch 1 pads the last.
        let scores = [
            1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0, 2.0, 50.0, -1.0, 1.0, -9.0,
        ];
        let keep = [1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0];
        let mut out = [0.0f32; 12];
        attention_softmax(&scores, &keep, 0.5, 3, &mut out);
        let softmax = |row: &[f64]| {
            let total: f64 = row.iter().map(|v| v.exp()).sum();
            row.iter().map(|v| v.exp() / total).collect::<Vec<f64>>()
        };
        let expected: Vec<f64> = [
            softmax(&[0.5, 1.0, 1.5]),
            softmax(&[0.0, 0.0, 0.0]),
            [softmax(&[0.5, 1.0]), vec![0.0]].concat(),
            [softmax(&[-0.5, 0.5]), vec![0.0]].concat(),
        ]
        .concat();
        for (o, e) in out.iter().zip(&expected) {
            assert!((*o as f64 - e).abs() < 1e-6, "{out:?} vs {expected:?}");
        }
        // The padded key's large score (50) neither leaks nor overflows.
        assert_eq!(out[8], 0.0);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn layer_norm_parameter_gradients_add_up_in_a_fixed_order() {
        // Enough rows for many parallel blocks; every run must give the same bits.
        let (rows, width) = (4096, 64);
        let x: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        let g: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 1e-3)
            .collect();
        let gamma = vec![1.0f32; width];
        let first = layer_norm_backward(&x, &gamma, &g, 1e-12);
        for _ in 0..20 {
            assert_eq!(layer_norm_backward(&x, &gamma, &g, 1e-12), first);
        }
    }
}
