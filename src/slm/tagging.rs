//! Token classification on the SLM: the encoder's head applied to every token, each word labelled
//! on its first subword (later subwords are ignored by loss and prediction), per-token
//! cross-entropy for training and per-sentence losses (mean or sum over words) for FreeAL's GMM.

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::losses::soft_cross_entropy;
use super::model::{FitReport, Slm, Step, to_rows};
use super::tokenize::{Encoded, WordEncoded};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// How a sentence's token losses become the one number the GMM splits on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentenceLoss {
    /// Mean over the sentence's words: long sentences are not noisier by construction.
    #[default]
    Mean,
    /// Sum over the words: one wrong entity weighs the same in any sentence length.
    Sum,
}

/// Per-word tag probabilities and sentence embeddings of a set of sentences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagInference {
    /// Per sentence, per word, the probability of each tag (empty for a word truncation cut).
    pub probs: Vec<Vec<Vec<f32>>>,
    /// Pooled sentence vectors (not normalised).
    pub pooled: Vec<Vec<f32>>,
}

impl TagInference {
    /// The most probable tag of every word (`O` = 0 where the word was cut off).
    pub fn tags(&self) -> Vec<Vec<usize>> {
        self.probs
            .iter()
            .map(|s| {
                s.iter()
                    .map(|p| {
                        if p.is_empty() {
                            0
                        } else {
                            crate::metrics::argmax(p)
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Each labelled sentence's cross-entropy against its tags, reduced over its words;
    /// `None` for unlabeled sentences.
    pub fn sentence_losses(
        &self,
        labels: &[Option<Vec<usize>>],
        reduction: SentenceLoss,
    ) -> Vec<Option<f64>> {
        self.probs
            .iter()
            .zip(labels)
            .map(|(words, label)| {
                let tags = label.as_ref()?;
                let losses: Vec<f64> = words
                    .iter()
                    .zip(tags)
                    .filter(|(p, _)| !p.is_empty())
                    .map(|(p, &t)| -f64::from(p[t].max(f32::MIN_POSITIVE)).ln())
                    .collect();
                let sum: f64 = losses.iter().sum();
                Some(match reduction {
                    SentenceLoss::Sum => sum,
                    SentenceLoss::Mean => sum / losses.len().max(1) as f64,
                })
            })
            .collect()
    }

    /// Per sentence, the mean over words of the top tag probability (1 for empty sentences).
    pub fn confidence(&self) -> Vec<f32> {
        self.probs
            .iter()
            .map(|words| {
                let tops: Vec<f32> = words
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| p.iter().copied().fold(0.0, f32::max))
                    .collect();
                if tops.is_empty() {
                    1.0
                } else {
                    tops.iter().sum::<f32>() / tops.len() as f32
                }
            })
            .collect()
    }
}

/// The ids of tokenised sentences, as the batching code takes them.
pub fn ids_of(words: &[WordEncoded]) -> Vec<Encoded> {
    words.iter().map(|w| w.encoded.clone()).collect()
}

/// Tag probabilities and pooled vectors of `words` under `slm` (inference mode).
pub fn infer_tags(slm: &Slm, words: &[WordEncoded], progress: &Progress) -> Result<TagInference> {
    let n_tags = slm.num_labels();
    let mut out = TagInference {
        probs: vec![Vec::new(); words.len()],
        pooled: vec![Vec::new(); words.len()],
    };
    slm.for_each_batch(&ids_of(words), progress, |model, batch, rows| {
        let (pooled, logits) = model.token_logits(batch);
        let [b, seq, t] = logits.dims();
        let hidden = pooled.dims()[1];
        let probs = to_rows(softmax(logits, 2).reshape([b * seq, t]), b * seq, n_tags)?;
        for (j, (&r, p)) in rows
            .iter()
            .zip(to_rows(pooled, rows.len(), hidden)?)
            .enumerate()
        {
            out.pooled[r] = p;
            out.probs[r] = words[r]
                .first_subword
                .iter()
                .map(|pos| pos.map_or_else(Vec::new, |pos| probs[j * seq + pos].clone()))
                .collect();
        }
        Ok(())
    })?;
    Ok(out)
}

/// Rows of the batch's `[batch * seq, tags]` logits that carry a word label, with those labels:
/// the first subword of every word of the batch rows `keep` accepts.
pub fn labelled_positions(
    words: &[WordEncoded],
    labels: &[Option<Vec<usize>>],
    rows: &[usize],
    seq: usize,
    keep: impl Fn(usize) -> bool,
) -> (Vec<i64>, Vec<usize>) {
    let (mut positions, mut tags) = (Vec::new(), Vec::new());
    for (j, &r) in rows.iter().enumerate() {
        let Some(sentence) = labels[r].as_ref().filter(|_| keep(r)) else {
            continue;
        };
        for (pos, &tag) in words[r].first_subword.iter().zip(sentence) {
            if let Some(pos) = pos {
                positions.push((j * seq + pos) as i64);
                tags.push(tag);
            }
        }
    }
    (positions, tags)
}

/// Rows of the batch's `[batch * seq, tags]` logits at the first subword of every word of the
/// batch rows `keep` accepts, labelled or not: where a consistency term compares two views.
pub fn word_positions(
    words: &[WordEncoded],
    rows: &[usize],
    seq: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<i64> {
    rows.iter()
        .enumerate()
        .filter(|&(_, &r)| keep(r))
        .flat_map(|(j, &r)| {
            words[r]
                .first_subword
                .iter()
                .flatten()
                .map(move |&pos| (j * seq + pos) as i64)
        })
        .collect()
}

/// The `[positions, tags]` logits at flat `positions` of `[batch, seq, tags]` logits.
pub fn gather(logits: Tensor<3>, positions: &[i64], step: &Step) -> Tensor<2> {
    let [b, seq, t] = logits.dims();
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(positions.to_vec(), [positions.len()]),
        step.device(),
    );
    logits.reshape([b * seq, t]).select(0, index)
}

/// One-hot rows `[tags, n_tags]` of tag indices.
pub fn tag_targets(tags: &[usize], n_tags: usize, step: &Step) -> Tensor<2> {
    let mut onehot = vec![0.0f32; tags.len() * n_tags];
    for (i, &t) in tags.iter().enumerate() {
        onehot[i * n_tags + t] = 1.0;
    }
    Tensor::<2>::from_data(TensorData::new(onehot, [tags.len(), n_tags]), step.device())
}

/// Mean cross-entropy of `logits` rows against tag indices.
pub fn tag_cross_entropy(logits: Tensor<2>, tags: &[usize], step: &Step) -> Tensor<1> {
    let n_tags = logits.dims()[1];
    soft_cross_entropy(logits, tag_targets(tags, n_tags, step)).mean()
}

/// Fine-tunes a tagger on every labelled sentence for `slm.epochs` epochs: mean token
/// cross-entropy over the batch's labelled words.
pub fn fit_tags(
    slm: &mut Slm,
    words: &[WordEncoded],
    labels: &[Option<Vec<usize>>],
    progress: &Progress,
) -> Result<FitReport> {
    let usable: Vec<usize> = (0..words.len()).filter(|&i| labels[i].is_some()).collect();
    if usable.is_empty() {
        return Err(Error::model("tagger", "no training sentence has tags"));
    }
    slm.train_epochs(&ids_of(words), &usable, "train", progress, |step| {
        let (_, logits) = step.model.token_logits(&step.batch);
        let seq = logits.dims()[1];
        let (positions, tags) = labelled_positions(words, labels, step.rows, seq, |_| true);
        if positions.is_empty() {
            // Every word of the batch was cut off by truncation: nothing to learn.
            return Ok(logits.sum() * 0.0);
        }
        Ok(tag_cross_entropy(
            gather(logits, &positions, step),
            &tags,
            step,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inference() -> TagInference {
        TagInference {
            probs: vec![
                vec![vec![0.5, 0.25, 0.25], vec![0.1, 0.8, 0.1], vec![]],
                vec![vec![0.2, 0.2, 0.6]],
            ],
            pooled: vec![vec![0.0], vec![0.0]],
        }
    }

    #[test]
    fn sentence_losses_reduce_over_words_and_skip_cut_words() {
        let labels = vec![Some(vec![0, 1, 2]), None];
        let mean = inference().sentence_losses(&labels, SentenceLoss::Mean);
        let sum = inference().sentence_losses(&labels, SentenceLoss::Sum);
        let want = -(0.5f64.ln() + 0.8f32.ln() as f64);
        assert!((sum[0].unwrap() - want).abs() < 1e-6);
        assert!((mean[0].unwrap() - want / 2.0).abs() < 1e-6);
        assert_eq!(mean[1], None);
    }

    #[test]
    fn predicted_tags_confidence_and_positions() {
        let inf = inference();
        assert_eq!(inf.tags(), vec![vec![0, 1, 0], vec![2]]);
        let c = inf.confidence();
        assert!((c[0] - 0.65).abs() < 1e-6 && (c[1] - 0.6).abs() < 1e-6);
        let words = vec![
            WordEncoded {
                encoded: Encoded { ids: vec![0; 5] },
                first_subword: vec![Some(1), Some(2), None],
            },
            WordEncoded {
                encoded: Encoded { ids: vec![0; 3] },
                first_subword: vec![Some(1)],
            },
        ];
        let labels = vec![Some(vec![0, 3, 4]), Some(vec![1])];
        // Batch rows in order [1, 0], padded to 5: row 0 of the batch is sentence 1.
        let (pos, tags) = labelled_positions(&words, &labels, &[1, 0], 5, |_| true);
        assert_eq!(pos, vec![1, 6, 7]);
        assert_eq!(tags, vec![1, 0, 3]);
        // Every word, labelled or not: sentence 0's cut third word has no position.
        let unlabelled = [None, None];
        let (none, _) = labelled_positions(&words, &unlabelled, &[1, 0], 5, |_| true);
        assert!(none.is_empty());
        assert_eq!(word_positions(&words, &[1, 0], 5, |_| true), vec![1, 6, 7]);
        assert_eq!(word_positions(&words, &[1, 0], 5, |r| r == 0), vec![6, 7]);
        let (pos, _) = labelled_positions(&words, &labels, &[1, 0], 5, |r| r == 0);
        assert_eq!(pos, vec![6, 7]);
    }
}
