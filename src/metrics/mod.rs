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

/// How well per-example losses tell wrong labels from right ones: the chance that a wrong
/// label's loss exceeds a right label's, ties counting half (the Mann-Whitney AUROC). Only
/// examples with both a label and a loss count; `None` without a wrong or a right label.
pub fn loss_auroc(losses: &[Option<f64>], labels: &[Option<usize>], gold: &[usize]) -> Option<f64> {
    let mut scored: Vec<(f64, bool)> = losses
        .iter()
        .zip(labels)
        .zip(gold)
        // Adding 0.0 makes -0.0 (from ln 1) the tie of 0.0 that `total_cmp` would rank apart.
        .filter_map(|((loss, label), &g)| Some(((*loss)? + 0.0, (*label)? != g)))
        .collect();
    let wrong = scored.iter().filter(|(_, w)| *w).count();
    let right = scored.len() - wrong;
    if wrong == 0 || right == 0 {
        return None;
    }
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the wrong labels' ranks, a run of tied losses sharing its mean rank. Ties are
    // `total_cmp`'s, under which a NaN (a diverged model) ties with itself: with `==` a run
    // of NaN would be empty and the loop would not advance.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < scored.len() {
        let first = scored[start].0;
        let end = start + scored[start..].partition_point(|s| s.0.total_cmp(&first).is_eq());
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        let tied_wrong = scored[start..end].iter().filter(|(_, w)| *w).count();
        rank_sum += mean_rank * tied_wrong as f64;
        start = end;
    }
    let (wrong, right) = (wrong as f64, right as f64);
    Some((rank_sum - wrong * (wrong + 1.0) / 2.0) / (wrong * right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_auroc_by_hand() {
        // Wrong labels (indices 1, 3) have losses 0.9 and 0.5; right ones 0.1, 0.5, 0.7.
        // Pairs (wrong > right): 0.9 beats all three (3); 0.5 beats 0.1 (1), ties 0.5 (half),
        // loses to 0.7: 4.5 of 6. The unlabeled and the loss-less example do not count.
        let losses = [
            Some(0.1),
            Some(0.9),
            Some(0.5),
            Some(0.5),
            Some(0.7),
            None,
            Some(5.0),
        ];
        let labels = [Some(0), Some(1), Some(0), Some(0), Some(1), Some(1), None];
        let gold = [0, 0, 0, 1, 1, 0, 0];
        assert_eq!(loss_auroc(&losses, &labels, &gold), Some(4.5 / 6.0));
        // Every wrong loss above every right one, and the reverse.
        let labels = [Some(0), Some(1)];
        assert_eq!(
            loss_auroc(&[Some(0.2), Some(3.0)], &labels, &[0, 0]),
            Some(1.0)
        );
        assert_eq!(
            loss_auroc(&[Some(3.0), Some(0.2)], &labels, &[0, 0]),
            Some(0.0)
        );
        // All tied: chance.
        assert_eq!(
            loss_auroc(&[Some(1.0), Some(1.0)], &labels, &[0, 0]),
            Some(0.5)
        );
        // No wrong label: nothing to tell apart.
        assert_eq!(loss_auroc(&[Some(0.2), Some(3.0)], &labels, &[0, 1]), None);
        // -0.0 ties with 0.0. NaN losses (a diverged model) rank above all and tie together:
        // the wrong NaN ties the right one (half a pair), the wrong 1.0 ranks below it (none).
        assert_eq!(
            loss_auroc(&[Some(0.0), Some(-0.0)], &labels, &[0, 0]),
            Some(0.5)
        );
        let labels = [Some(0), Some(1), Some(1)];
        assert_eq!(
            loss_auroc(
                &[Some(f64::NAN), Some(f64::NAN), Some(1.0)],
                &labels,
                &[0, 0, 0]
            ),
            Some(0.25)
        );
    }

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
