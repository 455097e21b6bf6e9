//! A loaded dataset: labelled train pool, dev and test splits, label names and verbalizers.

use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::def::{DatasetDef, Task};
use super::read::{RawRow, read_rows};
use crate::error::{Error, Result};

/// What an example is labelled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Index into the label names.
    Class(usize),
    /// One index into [`Dataset::tags`] per token.
    Tags(Vec<usize>),
}

/// One example with its gold target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The text (for NER: the tokens joined by spaces).
    pub text: String,
    /// Tokens (NER only; empty for classification).
    pub tokens: Vec<String>,
    /// Gold target.
    pub target: Target,
}

impl Example {
    /// The class label, for classification examples.
    pub fn class(&self) -> Option<usize> {
        match self.target {
            Target::Class(c) => Some(c),
            Target::Tags(_) => None,
        }
    }
}

/// How the splits were obtained, written next to every cell's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Examples per split after subsampling.
    pub train: usize,
    /// Dev examples.
    pub dev: usize,
    /// Test examples.
    pub test: usize,
    /// Plain-language account of files, random cuts and seeds.
    pub notes: Vec<String>,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name.
    pub name: String,
    /// Classification or NER.
    pub task: Task,
    /// Label (or entity type) names.
    pub label_names: Vec<String>,
    /// Verbalizer words per label.
    pub verbalizers: Vec<Vec<String>>,
    /// BIO tag names for NER (`O`, then `B-X`, `I-X` per type); empty for classification.
    pub tags: Vec<String>,
    /// Training pool.
    pub train: Vec<Example>,
    /// Development split (may be empty).
    pub dev: Vec<Example>,
    /// Test split.
    pub test: Vec<Example>,
    /// How the splits were made.
    pub split: SplitInfo,
}

fn bio_tags(types: &[String]) -> Vec<String> {
    let mut tags = vec!["O".to_string()];
    for t in types {
        tags.push(format!("B-{t}"));
        tags.push(format!("I-{t}"));
    }
    tags
}

fn to_examples(def: &DatasetDef, path: &Path, tags: &[String]) -> Result<Vec<Example>> {
    let raw = def.raw_labels();
    let label_index: HashMap<&str, usize> = raw
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_str(), i))
        .collect();
    let tag_index: HashMap<&str, usize> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    read_rows(def, path)?
        .into_iter()
        .map(|row| match row {
            RawRow::Text { line, text, label } => {
                let class = *label_index.get(label.as_str()).ok_or_else(|| {
                    Error::data(
                        path,
                        line,
                        format!(
                            "label `{label}` is not one of {raw:?} (labels.raw, or the indices \
                             of labels.names)"
                        ),
                    )
                })?;
                if text.is_empty() {
                    return Err(Error::data(path, line, "empty text"));
                }
                Ok(Example {
                    text,
                    tokens: Vec::new(),
                    target: Target::Class(class),
                })
            }
            RawRow::Tokens {
                line,
                tokens,
                tags: row_tags,
            } => {
                let ids = row_tags
                    .iter()
                    .map(|t| {
                        tag_index.get(t.as_str()).copied().ok_or_else(|| {
                            Error::data(
                                path,
                                line,
                                format!("tag `{t}` is not in the tag set {tags:?}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Example {
                    text: tokens.join(" "),
                    tokens,
                    target: Target::Tags(ids),
                })
            }
        })
        .collect()
}

/// Picks `limit` items with a seeded shuffle, keeping file order among those kept.
fn subsample<T>(items: Vec<T>, limit: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    if limit == 0 || items.len() <= limit {
        return items;
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(rng);
    let mut keep = vec![false; items.len()];
    for &i in &order[..limit] {
        keep[i] = true;
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(item, k)| k.then_some(item))
        .collect()
}

impl Dataset {
    /// Loads the files of a definition; cuts missing splits with `seed`.
    pub fn load(def: &DatasetDef, seed: u64) -> Result<Self> {
        let tags = match def.task {
            Task::Ner => bio_tags(&def.labels.names),
            Task::Classification => Vec::new(),
        };
        let mut notes = Vec::new();
        let train_path = def.path(&def.files.train);
        let mut train = to_examples(def, &train_path, &tags)?;
        notes.push(format!("train pool from {}", def.files.train));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cut = |pool: &mut Vec<Example>, fraction: f64, what: &str| -> Vec<Example> {
            let n = ((pool.len() as f64) * fraction).round() as usize;
            let mut order: Vec<usize> = (0..pool.len()).collect();
            order.shuffle(&mut rng);
            let mut chosen = vec![false; pool.len()];
            for &i in &order[..n] {
                chosen[i] = true;
            }
            let (mut taken, mut kept) = (Vec::new(), Vec::new());
            for (example, c) in std::mem::take(pool).into_iter().zip(chosen) {
                if c {
                    taken.push(example)
                } else {
                    kept.push(example)
                }
            }
            *pool = kept;
            notes.push(format!(
                "{what}: {n} examples ({:.0}%) cut at random from {} (seed {seed})",
                fraction * 100.0,
                def.files.train
            ));
            taken
        };
        let test = match &def.files.test {
            Some(file) => to_examples(def, &def.path(file), &tags)?,
            None => {
                let fraction = def.split.as_ref().map_or(0.0, |s| s.test_fraction);
                cut(&mut train, fraction, "test")
            }
        };
        let dev = match &def.files.dev {
            Some(file) => to_examples(def, &def.path(file), &tags)?,
            None => match def.split.as_ref().map_or(0.0, |s| s.dev_fraction) {
                f if f > 0.0 => cut(&mut train, f, "dev"),
                _ => Vec::new(),
            },
        };
        if let Some(file) = &def.files.test {
            notes.push(format!("test from {file}"));
        }
        if let Some(file) = &def.files.dev {
            notes.push(format!("dev from {file}"));
        }
        Ok(Dataset {
            name: def.name.clone(),
            task: def.task,
            label_names: def.labels.names.clone(),
            verbalizers: def.verbalizers(),
            tags,
            split: SplitInfo {
                train: train.len(),
                dev: dev.len(),
                test: test.len(),
                notes,
            },
            train,
            dev,
            test,
        })
    }

    /// Keeps at most `train_limit` / `test_limit` examples (0 = all), chosen with `seed`.
    pub fn limit(mut self, train_limit: usize, test_limit: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_da7a);
        let (before_train, before_test) = (self.train.len(), self.test.len());
        self.train = subsample(self.train, train_limit, &mut rng);
        self.test = subsample(self.test, test_limit, &mut rng);
        if self.train.len() < before_train {
            self.split.notes.push(format!(
                "train pool subsampled to {} of {before_train} (data.seed {seed})",
                self.train.len()
            ));
        }
        if self.test.len() < before_test {
            self.split.notes.push(format!(
                "test subsampled to {} of {before_test} (data.seed {seed})",
                self.test.len()
            ));
        }
        self.split.train = self.train.len();
        self.split.test = self.test.len();
        self
    }

    /// Number of classes (or entity types).
    pub fn num_labels(&self) -> usize {
        self.label_names.len()
    }

    /// Count of examples per label in a split (classification).
    pub fn label_counts(examples: &[Example], num_labels: usize) -> Vec<usize> {
        let mut counts = vec![0; num_labels];
        for class in examples.iter().filter_map(Example::class) {
            counts[class] += 1;
        }
        counts
    }
}
