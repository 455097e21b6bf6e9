//! Learning to reweight (Ren et al. 2018) for a linear softmax head, exactly: the weight of a
//! training example is the (clamped, normalised) negative derivative of the meta-set loss after
//! one virtual SGD step with respect to that example's loss weight, at weight 0. For a linear
//! head each per-example gradient is closed-form (`(p - y) x^T` and `p - y`), so the
//! meta-gradient is a dot product of gradients and needs no second-order autodiff. A tagged
//! sentence's loss is the mean of its words' losses, so its gradient is the mean of its words'
//! closed-form gradients (`TaggedExample`).

/// One example as the head sees it: its input features and the error `p - y` of its softmax
/// output against its (one-hot or soft) target.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadExample {
    /// Features entering the output layer (the pooled sentence vector under the linear head,
    /// the dense layer's tanh of it under `dense_tanh`).
    pub features: Vec<f64>,
    /// `softmax(W x + b) - y`.
    pub error: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A tagged sentence as the head sees it: its labelled words (loss = their mean).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaggedExample {
    /// One row per labelled word (none when truncation cut every word).
    pub words: Vec<HeadExample>,
}

/// An example whose loss gradient over the head is known in closed form.
pub trait HeadGradient {
    /// `<grad l_self, grad l_other>` over the head's weights and bias.
    fn gradient_dot(&self, other: &Self) -> f64;
}

/// `<grad l_i, grad l_j>` over the head's weights and bias:
/// `(e_i . e_j) (x_i . x_j + 1)`.
pub fn gradient_dot(a: &HeadExample, b: &HeadExample) -> f64 {
    dot(&a.error, &b.error) * (dot(&a.features, &b.features) + 1.0)
}

impl HeadGradient for HeadExample {
    fn gradient_dot(&self, other: &Self) -> f64 {
        gradient_dot(self, other)
    }
}

impl HeadGradient for TaggedExample {
    /// The mean over word pairs of the words' gradient dots (0 for a sentence with no word).
    fn gradient_dot(&self, other: &Self) -> f64 {
        if self.words.is_empty() || other.words.is_empty() {
            return 0.0;
        }
        let sum: f64 = self
            .words
            .iter()
            .flat_map(|a| other.words.iter().map(move |b| gradient_dot(a, b)))
            .sum();
        sum / (self.words.len() * other.words.len()) as f64
    }
}

/// `d L_meta(theta - lr * sum_i eps_i grad l_i) / d eps_i` at `eps = 0`, for each training
/// example, where `L_meta` is the mean loss over `meta`: `-lr * <grad L_meta, grad l_i>`.
pub fn meta_gradient<E: HeadGradient>(train: &[E], meta: &[E], lr: f64) -> Vec<f64> {
    let m = meta.len().max(1) as f64;
    train
        .iter()
        .map(|t| -lr * meta.iter().map(|g| t.gradient_dot(g)).sum::<f64>() / m)
        .collect()
}

/// Example weights: `max(-meta_gradient, 0)`, normalised to sum to 1 (all zero when no example
/// helps the meta set, as in the paper).
pub fn example_weights<E: HeadGradient>(train: &[E], meta: &[E], lr: f64) -> Vec<f64> {
    let raw: Vec<f64> = meta_gradient(train, meta, lr)
        .into_iter()
        .map(|g| (-g).max(0.0))
        .collect();
    let total: f64 = raw.iter().sum();
    if total <= 0.0 {
        return vec![0.0; raw.len()];
    }
    raw.into_iter().map(|w| w / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A linear softmax head: `w[c][h]`, `b[c]`.
    #[derive(Clone)]
    struct Head {
        w: Vec<Vec<f64>>,
        b: Vec<f64>,
    }

    fn softmax(z: &[f64]) -> Vec<f64> {
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    impl Head {
        fn probs(&self, x: &[f64]) -> Vec<f64> {
            let z: Vec<f64> = self
                .w
                .iter()
                .zip(&self.b)
                .map(|(r, b)| dot(r, x) + b)
                .collect();
            softmax(&z)
        }
        fn loss(&self, x: &[f64], y: &[f64]) -> f64 {
            -self
                .probs(x)
                .iter()
                .zip(y)
                .map(|(p, t)| t * p.ln())
                .sum::<f64>()
        }
        fn example(&self, x: &[f64], y: &[f64]) -> HeadExample {
            HeadExample {
                features: x.to_vec(),
                error: self.probs(x).iter().zip(y).map(|(p, t)| p - t).collect(),
            }
        }
        /// One SGD step on `sum_i eps_i l_i`.
        fn step(&self, data: &[(Vec<f64>, Vec<f64>)], eps: &[f64], lr: f64) -> Head {
            let mut next = self.clone();
            for ((x, y), e) in data.iter().zip(eps) {
                let g = self.example(x, y);
                for c in 0..self.b.len() {
                    next.b[c] -= lr * e * g.error[c];
                    for (w, xh) in next.w[c].iter_mut().zip(x) {
                        *w -= lr * e * g.error[c] * xh;
                    }
                }
            }
            next
        }
    }

    fn random_set(
        rng: &mut ChaCha8Rng,
        n: usize,
        dim: usize,
        classes: usize,
    ) -> Vec<(Vec<f64>, Vec<f64>)> {
        (0..n)
            .map(|_| {
                let x: Vec<f64> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut y = vec![0.0; classes];
                y[rng.random_range(0..classes)] = 1.0;
                (x, y)
            })
            .collect()
    }

    fn random_head(rng: &mut ChaCha8Rng, dim: usize, classes: usize) -> Head {
        Head {
            w: (0..classes)
                .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect(),
            b: (0..classes).map(|_| rng.random_range(-0.5..0.5)).collect(),
        }
    }

    /// Checks `analytic[i]` against the central difference of `meta_loss_after(eps)` in
    /// `eps_i` at `eps = 0`.
    fn assert_matches_finite_differences(
        analytic: &[f64],
        meta_loss_after: impl Fn(&[f64]) -> f64,
    ) {
        let h = 1e-6;
        for i in 0..analytic.len() {
            let mut plus = vec![0.0; analytic.len()];
            let mut minus = vec![0.0; analytic.len()];
            plus[i] = h;
            minus[i] = -h;
            let numeric = (meta_loss_after(&plus) - meta_loss_after(&minus)) / (2.0 * h);
            assert!(
                (numeric - analytic[i]).abs() < 1e-6,
                "example {i}: numeric {numeric}, closed form {}",
                analytic[i]
            );
        }
    }

    #[test]
    fn meta_gradient_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let (dim, classes, lr) = (4, 3, 0.5);
        let head = random_head(&mut rng, dim, classes);
        let train = random_set(&mut rng, 5, dim, classes);
        let meta = random_set(&mut rng, 4, dim, classes);
        let meta_loss =
            |h: &Head| meta.iter().map(|(x, y)| h.loss(x, y)).sum::<f64>() / meta.len() as f64;
        let train_ex: Vec<HeadExample> = train.iter().map(|(x, y)| head.example(x, y)).collect();
        let meta_ex: Vec<HeadExample> = meta.iter().map(|(x, y)| head.example(x, y)).collect();
        let analytic = meta_gradient(&train_ex, &meta_ex, lr);
        assert_matches_finite_differences(&analytic, |eps| meta_loss(&head.step(&train, eps, lr)));
    }

    /// A sentence: its words' features and one-hot tags.
    type Sentence = Vec<(Vec<f64>, Vec<f64>)>;

    #[test]
    fn tagged_meta_gradient_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (dim, tags, lr) = (3, 4, 0.3);
        let head = random_head(&mut rng, dim, tags);
        // Sentences of 1 to 4 words: the mean over words must weigh them correctly.
        let mut sentences = |n: usize| -> Vec<Sentence> {
            (0..n)
                .map(|i| random_set(&mut rng, 1 + i % 4, dim, tags))
                .collect()
        };
        let train = sentences(5);
        let meta = sentences(3);
        let sentence_loss = |h: &Head, s: &Sentence| {
            s.iter().map(|(x, y)| h.loss(x, y)).sum::<f64>() / s.len() as f64
        };
        let meta_loss =
            |h: &Head| meta.iter().map(|s| sentence_loss(h, s)).sum::<f64>() / meta.len() as f64;
        // One SGD step on `sum_i eps_i l_i`, each l_i a sentence's mean word loss.
        let step = |eps: &[f64]| {
            let mut words = Vec::new();
            let mut scaled = Vec::new();
            for (s, e) in train.iter().zip(eps) {
                for word in s {
                    words.push(word.clone());
                    scaled.push(e / s.len() as f64);
                }
            }
            head.step(&words, &scaled, lr)
        };
        let as_tagged = |s: &Sentence| TaggedExample {
            words: s.iter().map(|(x, y)| head.example(x, y)).collect(),
        };
        let train_ex: Vec<TaggedExample> = train.iter().map(as_tagged).collect();
        let meta_ex: Vec<TaggedExample> = meta.iter().map(as_tagged).collect();
        let analytic = meta_gradient(&train_ex, &meta_ex, lr);
        assert_matches_finite_differences(&analytic, |eps| meta_loss(&step(eps)));
        // A sentence truncation emptied carries no gradient, so no weight.
        let empty = TaggedExample::default();
        assert_eq!(empty.gradient_dot(&meta_ex[0]), 0.0);
    }

    #[test]
    fn weights_clamp_harmful_examples_and_normalise() {
        // Meta: x = (1, 0), error (+0.5, -0.5). Train example 0 agrees (same error), example 1
        // opposes (negated error): only example 0 gets weight.
        let meta = vec![HeadExample {
            features: vec![1.0, 0.0],
            error: vec![0.5, -0.5],
        }];
        let train = vec![
            HeadExample {
                features: vec![1.0, 0.0],
                error: vec![0.5, -0.5],
            },
            HeadExample {
                features: vec![1.0, 0.0],
                error: vec![-0.5, 0.5],
            },
        ];
        // <g0, g_meta> = (0.25 + 0.25) * (1 + 1) = 1.
        assert!((gradient_dot(&train[0], &meta[0]) - 1.0).abs() < 1e-12);
        assert_eq!(example_weights(&train, &meta, 0.1), vec![1.0, 0.0]);
        assert_eq!(example_weights(&train[1..], &meta, 0.1), vec![0.0]);
    }
}
