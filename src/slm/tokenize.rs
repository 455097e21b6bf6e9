//! Tokenisation with the model's own `tokenizer.json`, truncation to `max_len`, dynamic padding.

use std::path::Path;

use tokenizers::{InputSequence, Tokenizer, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// A tokenised text: ids without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included, at most `max_len` long.
    pub ids: Vec<u32>,
}

/// Wraps a Hugging Face tokenizer with our truncation and no built-in padding.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_len: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, replacing any padding/truncation it carries (MiniLM's pads to 128).
    pub fn from_file(path: &Path, max_len: usize, pad_id: u32) -> Result<Self> {
        let name = path.display().to_string();
        let mut inner =
            Tokenizer::from_file(path).map_err(|e| Error::model(&name, e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                ..Default::default()
            }))
            .map_err(|e| Error::model(&name, e.to_string()))?;
        Ok(Self {
            inner,
            pad_id,
            max_len,
        })
    }

    /// Padding to this tokenizer's pad id, lengths rounded up to `multiple` within its
    /// truncation length.
    pub fn padding(&self, multiple: usize) -> Padding {
        Padding {
            pad_id: self.pad_id,
            multiple,
            max_len: self.max_len,
        }
    }

    /// Tokenises texts (special tokens added, truncated).
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        texts
            .iter()
            .map(|t| {
                self.inner
                    .encode(*t, true)
                    .map(|e| Encoded {
                        ids: e.get_ids().to_vec(),
                    })
                    .map_err(|e| Error::model("tokenizer", format!("{e} (text: {t:.60})")))
            })
            .collect()
    }

    /// Tokenises pre-split sentences (one word list each), keeping where each word starts.
    pub fn encode_words(&self, sentences: &[&[String]]) -> Result<Vec<WordEncoded>> {
        sentences
            .iter()
            .map(|words| {
                let refs: Vec<&str> = words.iter().map(String::as_str).collect();
                let input = InputSequence::from(refs.as_slice());
                let e = self.inner.encode(input, true).map_err(|e| {
                    Error::model(
                        "tokenizer",
                        format!("{e} (sentence: {:.60})", refs.join(" ")),
                    )
                })?;
                Ok(WordEncoded {
                    encoded: Encoded {
                        ids: e.get_ids().to_vec(),
                    },
                    first_subword: first_subwords(e.get_word_ids(), words.len()),
                })
            })
            .collect()
    }
}

/// A pre-split sentence tokenised for tagging: ids plus, per word, the position of its first
/// subword (`None` when truncation cut the word off: it is predicted `O` and never trained on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordEncoded {
    /// Ids as [`TextTokenizer::encode`] gives them.
    pub encoded: Encoded,
    /// Per word, the index in `encoded.ids` of its first subword.
    pub first_subword: Vec<Option<usize>>,
}

/// Per word, the first position whose word id is that word (the label carrier under
/// first-subword alignment); later subwords are ignored by the loss and the prediction.
pub fn first_subwords(word_ids: &[Option<u32>], words: usize) -> Vec<Option<usize>> {
    let mut first = vec![None; words];
    for (pos, w) in word_ids.iter().enumerate() {
        if let Some(w) = w.map(|w| w as usize).filter(|&w| w < words)
            && first[w].is_none()
        {
            first[w] = Some(pos);
        }
    }
    first
}

/// A padded batch: row-major ids and lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `rows * seq` ids, right-padded.
    pub ids: Vec<i64>,
    /// True length of each row.
    pub lengths: Vec<usize>,
    /// Padded length (the longest row of this batch: dynamic padding).
    pub seq: usize,
}

/// How a batch is padded: to its longest row, rounded up to a multiple, never past a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    /// Token id that fills the padding.
    pub pad_id: u32,
    /// Padded lengths are multiples of this (1: exactly the longest row).
    pub multiple: usize,
    /// No rounding goes past this length (the tokenizer's truncation length).
    pub max_len: usize,
}

impl Padding {
    /// Pads to exactly the longest row of each batch.
    pub fn longest(pad_id: u32) -> Self {
        Self {
            pad_id,
            multiple: 1,
            max_len: usize::MAX,
        }
    }
}

/// Pads the chosen rows to the longest among them, rounded up as `padding` says.
pub fn pad_batch(encoded: &[Encoded], rows: &[usize], padding: Padding) -> Batch {
    let longest = rows
        .iter()
        .map(|&r| encoded[r].ids.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let seq = longest
        .next_multiple_of(padding.multiple.max(1))
        .min(padding.max_len)
        .max(longest);
    let pad_id = padding.pad_id;
    let mut ids = Vec::with_capacity(rows.len() * seq);
    let mut lengths = Vec::with_capacity(rows.len());
    for &r in rows {
        let row = &encoded[r].ids;
        ids.extend(row.iter().map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, seq - row.len()));
        lengths.push(row.len());
    }
    Batch { ids, lengths, seq }
}

/// Groups indices into batches of similar length: `order` is cut into windows of
/// `batch_size * 50`, each window sorted by length, then cut into batches. Training passes a
/// shuffled `order` (so batches stay random across windows); inference passes `0..n`.
pub fn length_buckets(encoded: &[Encoded], order: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    for window in order.chunks(batch_size * 50) {
        let mut sorted = window.to_vec();
        sorted.sort_by_key(|&i| encoded[i].ids.len());
        batches.extend(sorted.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(lens: &[usize]) -> Vec<Encoded> {
        lens.iter()
            .map(|&n| Encoded {
                ids: (1..=n as u32).collect(),
            })
            .collect()
    }

    #[test]
    fn first_subword_of_each_word_and_none_past_truncation() {
        // [CLS] New York ##er [SEP]: word 1 spans two subwords; word 2 was truncated away.
        let ids = [None, Some(0), Some(1), Some(1), None];
        assert_eq!(first_subwords(&ids, 3), vec![Some(1), Some(2), None]);
    }

    #[test]
    fn pads_to_longest_in_batch_only() {
        let e = enc(&[2, 5, 3]);
        let b = pad_batch(&e, &[0, 2], Padding::longest(0));
        assert_eq!(b.seq, 3);
        assert_eq!(b.ids, vec![1, 2, 0, 1, 2, 3]);
        assert_eq!(b.lengths, vec![2, 3]);
    }

    #[test]
    fn rounds_the_padded_length_up_but_not_past_the_cap() {
        let e = enc(&[2, 5, 3]);
        let padding = |multiple, max_len| Padding {
            pad_id: 0,
            multiple,
            max_len,
        };
        let b = pad_batch(&e, &[0, 2], padding(4, 128));
        assert_eq!(b.seq, 4);
        assert_eq!(b.ids, vec![1, 2, 0, 0, 1, 2, 3, 0]);
        assert_eq!(b.lengths, vec![2, 3]);
        // 5 rounds to 8, capped at 6; a multiple that already fits adds nothing.
        assert_eq!(pad_batch(&e, &[1], padding(4, 6)).seq, 6);
        assert_eq!(pad_batch(&e, &[1], padding(5, 6)).seq, 5);
    }

    #[test]
    fn buckets_cover_every_index_once_and_group_lengths() {
        let e = enc(&[5, 1, 4, 2, 3, 6]);
        let order: Vec<usize> = (0..6).collect();
        let batches = length_buckets(&e, &order, 2);
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, order);
        assert_eq!(batches[0], vec![1, 3]);
        assert_eq!(batches[2], vec![0, 5]);
    }
}
