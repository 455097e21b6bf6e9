//! Classification metrics: accuracy and macro-F1; entity-level span scores in `spans`.

pub mod spans;

/// Fraction of positions where `predicted == gold`; `None` predictions count as wrong.
pub fn accuracy(predicted: &[Option<usize>], gold: &[usize]) -> f64 {
    assert_eq!(predicted.len(), gold.len(), "one prediction per gold label");
    if gold.is_empty() {
        return 0.0;
    }
    let correct = predicted
        .iter()
        .zip(gold)
        .filter(|(p, g)| **p == Some(**g))
        .count();
    correct as f64 / gold.len() as f64
}

/// Unweighted mean over classes of F1 (a class absent from both gold and predictions is
/// skipped, as scikit-learn does with `labels` unset); `None` predictions are wrong answers.
pub fn macro_f1(predicted: &[Option<usize>], gold: &[usize], num_labels: usize) -> f64 {
    assert_eq!(predicted.len(), gold.len(), "one prediction per gold label");
    let mut tp = vec![0usize; num_labels];
    let mut fp = vec![0usize; num_labels];
    let mut fn_ = vec![0usize; num_labels];
    for (p, &g) in predicted.iter().zip(gold) {
        match *p {
            Some(p) if p == g => tp[g] += 1,
            Some(p) => {
                fp[p] += 1;
                fn_[g] += 1;
            }
            None => fn_[g] += 1,
        }
    }
    let mut sum = 0.0;
    let mut classes = 0;
    for c in 0..num_labels {
        if tp[c] + fp[c] + fn_[c] == 0 {
            continue;
        }
        classes += 1;
        let denom = 2 * tp[c] + fp[c] + fn_[c];
        sum += 2.0 * tp[c] as f64 / denom as f64;
    }
    if classes == 0 {
        0.0
    } else {
        sum / classes as f64
    }
}

/// Per gold class, the fraction of its examples predicted right (`None` for a class with no
/// example); the complement is the class's label-noise rate.
pub fn per_class_accuracy(
    predicted: &[Option<usize>],
    gold: &[usize],
    num_labels: usize,
) -> Vec<Option<f64>> {
    assert_eq!(predicted.len(), gold.len(), "one prediction per gold label");
    let mut right = vec![0usize; num_labels];
    let mut total = vec![0usize; num_labels];
    for (p, &g) in predicted.iter().zip(gold) {
        total[g] += 1;
        right[g] += usize::from(*p == Some(g));
    }
    right
        .iter()
        .zip(&total)
        .map(|(&r, &t)| (t > 0).then(|| r as f64 / t as f64))
        .collect()
}

/// Index of the largest value (first on ties).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_missing_as_wrong() {
        let p = [Some(0), Some(1), None, Some(1)];
        assert_eq!(accuracy(&p, &[0, 1, 1, 0]), 0.5);
    }

    #[test]
    fn macro_f1_by_hand() {
        // class 0: tp 1, fp 1, fn 1 -> F1 = 2/4 = 0.5
        // class 1: tp 1, fp 1, fn 0 -> F1 = 2/3
        // class 2: tp 0, fp 0, fn 1 -> F1 = 0
        let p = [Some(0), Some(1), Some(0), Some(1)];
        let g = [0, 1, 2, 0];
        let expected = (0.5 + 2.0 / 3.0 + 0.0) / 3.0;
        assert!((macro_f1(&p, &g, 3) - expected).abs() < 1e-12);
        assert!(
            (macro_f1(&p, &g, 4) - expected).abs() < 1e-12,
            "absent class skipped"
        );
    }

    #[test]
    fn per_class_accuracy_by_hand() {
        // class 0: 2 of 3 right (one missing); class 1: 1 of 1; class 2: no example.
        let p = [Some(0), None, Some(0), Some(1)];
        let g = [0, 0, 0, 1];
        assert_eq!(
            per_class_accuracy(&p, &g, 3),
            vec![Some(2.0 / 3.0), Some(1.0), None]
        );
    }

    #[test]
    fn argmax_first_on_ties() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
    }
}
