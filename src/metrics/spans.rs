//! Entity-level precision, recall and F1 over BIO tags, as seqeval's strict mode (IOB2) counts
//! them: an entity is a `B-X` followed by any run of `I-X`; it matches only with the same
//! start, end and type. An `I-X` that does not continue an open `X` entity (after `O`, at the
//! start of a sentence, or after another type) belongs to no entity at all.

use std::collections::BTreeMap;

/// One entity: tokens `start..end` of a sentence, of type `kind`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// Entity type (the tag without its `B-`/`I-` prefix).
    pub kind: String,
}

/// The entities of one sentence's BIO tags, strict mode.
pub fn spans_strict<S: AsRef<str>>(tags: &[S]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut open: Option<Span> = None;
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.as_ref();
        let continues = tag
            .strip_prefix("I-")
            .is_some_and(|kind| open.as_ref().is_some_and(|o| o.kind == kind));
        if continues {
            if let Some(o) = open.as_mut() {
                o.end = i + 1;
            }
            continue;
        }
        spans.extend(open.take());
        if let Some(kind) = tag.strip_prefix("B-") {
            open = Some(Span {
                start: i,
                end: i + 1,
                kind: kind.to_string(),
            });
        }
    }
    spans.extend(open);
    spans
}

/// Counts and scores of one entity type (or of all, micro-averaged).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Prf {
    /// Gold entities.
    pub gold: usize,
    /// Predicted entities.
    pub predicted: usize,
    /// Predicted entities that match a gold one exactly.
    pub correct: usize,
}

impl Prf {
    /// correct / predicted (0 when nothing was predicted).
    pub fn precision(&self) -> f64 {
        ratio(self.correct, self.predicted)
    }

    /// correct / gold (0 when there is no gold entity).
    pub fn recall(&self) -> f64 {
        ratio(self.correct, self.gold)
    }

    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Span scores of a corpus: per entity type and micro-averaged over all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanScores {
    /// Per type, over every type seen in gold or predictions.
    pub per_type: BTreeMap<String, Prf>,
    /// All types pooled.
    pub micro: Prf,
}

/// Scores predicted tag sequences against gold ones, sentence by sentence (entities never cross
/// sentences). Sentences are paired in order; a predicted sentence of another length is scored
/// on its own tags as they are.
pub fn span_scores<S: AsRef<str>>(gold: &[Vec<S>], predicted: &[Vec<S>]) -> SpanScores {
    let mut scores = SpanScores::default();
    for (g, p) in gold.iter().zip(predicted) {
        let (g, p) = (spans_strict(g), spans_strict(p));
        for span in &g {
            scores.per_type.entry(span.kind.clone()).or_default().gold += 1;
        }
        for span in &p {
            let entry = scores.per_type.entry(span.kind.clone()).or_default();
            entry.predicted += 1;
            if g.contains(span) {
                entry.correct += 1;
            }
        }
    }
    for prf in scores.per_type.values() {
        scores.micro.gold += prf.gold;
        scores.micro.predicted += prf.predicted;
        scores.micro.correct += prf.correct;
    }
    scores
}

// Every expected value below was also what seqeval 1.2.2 (`mode="strict", scheme=IOB2`) gave
// for the same tags when this was written.
#[cfg(test)]
mod tests {
    use super::*;

    fn tags(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    fn span(start: usize, end: usize, kind: &str) -> Span {
        Span {
            start,
            end,
            kind: kind.into(),
        }
    }

    #[test]
    fn adjacent_entities_are_separate() {
        assert_eq!(
            spans_strict(&tags("B-PER B-PER I-PER B-LOC I-LOC O")),
            vec![span(0, 1, "PER"), span(1, 3, "PER"), span(3, 5, "LOC")]
        );
    }

    #[test]
    fn an_inside_tag_without_its_beginning_is_no_entity() {
        assert_eq!(
            spans_strict(&tags("I-PER I-PER O B-LOC")),
            vec![span(3, 4, "LOC")]
        );
        assert_eq!(spans_strict(&tags("O I-ORG")), vec![]);
        // A type switch inside an entity closes it; the stray I-LOC starts nothing.
        assert_eq!(
            spans_strict(&tags("B-PER I-LOC I-LOC")),
            vec![span(0, 1, "PER")]
        );
        // An entity running to the end of the sentence is closed there.
        assert_eq!(
            spans_strict(&tags("O B-MISC I-MISC")),
            vec![span(1, 3, "MISC")]
        );
    }

    #[test]
    fn scores_count_only_exact_span_and_type_matches() {
        // Sentence 1: gold PER(0,2) LOC(3,4); predicted PER(0,1) (boundary off), LOC(3,4) ok.
        // Sentence 2: gold ORG(1,2); predicted PER(1,2) (type off) and a stray I-ORG (nothing).
        // Sentence 3: gold PER(0,1) PER(1,2) adjacent; predicted one PER(0,2): no match.
        let gold = vec![
            tags("B-PER I-PER O B-LOC"),
            tags("O B-ORG O"),
            tags("B-PER B-PER"),
        ];
        let predicted = vec![
            tags("B-PER O O B-LOC"),
            tags("O B-PER I-ORG"),
            tags("B-PER I-PER"),
        ];
        let s = span_scores(&gold, &predicted);
        let per = s.per_type["PER"];
        assert_eq!((per.gold, per.predicted, per.correct), (3, 3, 0));
        let loc = s.per_type["LOC"];
        assert_eq!((loc.gold, loc.predicted, loc.correct), (1, 1, 1));
        assert_eq!(loc.f1(), 1.0);
        let org = s.per_type["ORG"];
        assert_eq!((org.gold, org.predicted, org.correct), (1, 0, 0));
        assert_eq!((org.precision(), org.recall(), org.f1()), (0.0, 0.0, 0.0));
        // Micro: 1 correct of 4 predicted and 5 gold: P 1/4, R 1/5, F1 2/9.
        assert_eq!(
            (s.micro.gold, s.micro.predicted, s.micro.correct),
            (5, 4, 1)
        );
        assert!((s.micro.precision() - 0.25).abs() < 1e-12);
        assert!((s.micro.recall() - 0.2).abs() < 1e-12);
        assert!((s.micro.f1() - 2.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn perfect_and_empty_predictions() {
        let gold = vec![tags("B-Chemical I-Chemical O B-Disease")];
        let s = span_scores(&gold, &gold);
        assert_eq!(s.micro.f1(), 1.0);
        let none = vec![tags("O O O O")];
        let s = span_scores(&gold, &none);
        assert_eq!(
            (s.micro.correct, s.micro.predicted, s.micro.gold),
            (0, 0, 2)
        );
        assert_eq!(s.micro.f1(), 0.0);
    }
}
