//! A loaded dataset: labelled train pool, dev and test splits, label names and verbalizers.

use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::def::{DatasetDef, Task};
use super::read::{RawRow, read_rows};
use crate::config::spec::Duplicates;
use crate::error::{Error, Result};

/// What an example is labelled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Index into the label names.
    Class(usize),
    /// One index into [`Dataset::tags`] per token.
    Tags(Vec<usize>),
    /// No gold label: a pool read with `files.train_unlabeled = true`, to be labelled.
    Unlabeled,
}

/// One example with its gold target (if it has one).
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
    /// The class label, for labelled classification examples.
    pub fn class(&self) -> Option<usize> {
        match self.target {
            Target::Class(c) => Some(c),
            Target::Tags(_) | Target::Unlabeled => None,
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
    /// What the user should know before trusting the numbers (e.g. repeated texts kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
    /// Natural-language description of each label (empty where the definition gives none).
    pub descriptions: Vec<String>,
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

fn to_examples(
    def: &DatasetDef,
    path: &Path,
    tags: &[String],
    labeled: bool,
) -> Result<Vec<Example>> {
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
    read_rows(def, path, labeled)?
        .into_iter()
        .map(|row| match row {
            RawRow::Text { line, text, label } => {
                let target = match label {
                    Some(label) => {
                        Target::Class(*label_index.get(label.as_str()).ok_or_else(|| {
                            Error::data(
                                path,
                                line,
                                format!(
                                    "label `{label}` is not one of {raw:?} (labels.raw, or the \
                                     indices of labels.names)"
                                ),
                            )
                        })?)
                    }
                    None => Target::Unlabeled,
                };
                if text.is_empty() {
                    return Err(Error::data(path, line, "empty text"));
                }
                Ok(Example {
                    text,
                    tokens: Vec::new(),
                    target,
                })
            }
            RawRow::Tokens {
                tokens, tags: None, ..
            } => Ok(Example {
                text: tokens.join(" "),
                tokens,
                target: Target::Unlabeled,
            }),
            RawRow::Tokens {
                line,
                tokens,
                tags: Some(row_tags),
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
        let mut train = to_examples(def, &train_path, &tags, !def.files.train_unlabeled)?;
        notes.push(match def.files.train_unlabeled {
            true => format!("train pool from {} (unlabeled)", def.files.train),
            false => format!("train pool from {}", def.files.train),
        });
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
            Some(file) => to_examples(def, &def.path(file), &tags, true)?,
            None => {
                let fraction = def.split.as_ref().map_or(0.0, |s| s.test_fraction);
                cut(&mut train, fraction, "test")
            }
        };
        let dev = match &def.files.dev {
            Some(file) => to_examples(def, &def.path(file), &tags, true)?,
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
            descriptions: def
                .labels
                .names
                .iter()
                .map(|n| def.labels.descriptions.get(n).cloned().unwrap_or_default())
                .collect(),
            tags,
            split: SplitInfo {
                train: train.len(),
                dev: dev.len(),
                test: test.len(),
                notes,
                warnings: Vec::new(),
            },
            train,
            dev,
            test,
        })
    }

    /// Applies the duplicate-text policy: repeated pool texts and pool texts that are also test
    /// texts are kept (and described in `split.warnings`), dropped (noted), or refused with an
    /// error naming `train_file` and the first repeated text.
    pub fn handle_duplicates(mut self, policy: Duplicates, train_file: &Path) -> Result<Self> {
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut repeats = Vec::new();
        let mut conflicting = 0;
        for (row, example) in self.train.iter().enumerate() {
            match first.get(example.text.as_str()) {
                Some(&earlier) => {
                    if self.train[earlier].target != example.target {
                        conflicting += 1;
                    }
                    repeats.push((earlier, row));
                }
                None => {
                    first.insert(&example.text, row);
                }
            }
        }
        let test: std::collections::HashSet<&str> =
            self.test.iter().map(|e| e.text.as_str()).collect();
        let leaked: Vec<usize> = first
            .iter()
            .filter(|(text, _)| test.contains(*text))
            .map(|(_, &row)| row)
            .collect();
        if repeats.is_empty() && leaked.is_empty() {
            return Ok(self);
        }
        let conflicting = match self.pool_labeled() {
            true => format!(" ({conflicting} with a different label)"),
            false => String::new(),
        };
        let summary = format!(
            "{} repeated text(s) in the training pool{conflicting}, {} pool text(s) also in the \
             test split",
            repeats.len(),
            leaked.len()
        );
        match policy {
            Duplicates::Error => {
                let (text, where_) = match repeats.first() {
                    Some(&(a, b)) => (
                        &self.train[b].text,
                        format!("pool examples {} and {}", a + 1, b + 1),
                    ),
                    None => {
                        let row = *leaked.iter().min().expect("a leaked row");
                        (&self.train[row].text, "the pool and the test split".into())
                    }
                };
                Err(Error::data(
                    train_file,
                    0,
                    format!(
                        "{summary}; e.g. {text:?} is in {where_}. Set data.duplicates = \
                         \"keep\" to use the data as it is or \"drop\" to remove them"
                    ),
                ))
            }
            Duplicates::Keep => {
                self.split.warnings.push(format!(
                    "{summary}; kept (data.duplicates = \"drop\" removes them)"
                ));
                Ok(self)
            }
            Duplicates::Drop => {
                let mut drop = vec![false; self.train.len()];
                for &(_, row) in &repeats {
                    drop[row] = true;
                }
                for &row in &leaked {
                    drop[row] = true;
                }
                let before = self.train.len();
                let train = std::mem::take(&mut self.train);
                self.train = train
                    .into_iter()
                    .zip(drop)
                    .filter_map(|(e, d)| (!d).then_some(e))
                    .collect();
                let note = format!(
                    "{summary}; dropped: pool {before} -> {} (data.duplicates = \"drop\")",
                    self.train.len()
                );
                self.split.train = self.train.len();
                self.split.notes.push(note);
                Ok(self)
            }
        }
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

    /// Tag names of tag indices (NER).
    pub fn tag_names(&self, ids: &[usize]) -> Vec<&str> {
        ids.iter()
            .map(|&t| self.tags.get(t).map_or("O", String::as_str))
            .collect()
    }

    /// The gold entities `(words, type index)` of an NER example; `None` for classification.
    pub fn entities(&self, example: &Example) -> Option<Vec<(String, usize)>> {
        let Target::Tags(ids) = &example.target else {
            return None;
        };
        let spans = crate::metrics::spans::spans_strict(&self.tag_names(ids));
        Some(
            spans
                .into_iter()
                .filter_map(|s| {
                    let kind = self.label_names.iter().position(|n| *n == s.kind)?;
                    Some((example.tokens[s.start..s.end].join(" "), kind))
                })
                .collect(),
        )
    }

    /// Whether the training pool has gold labels (false for `files.train_unlabeled`).
    pub fn pool_labeled(&self) -> bool {
        self.train.iter().all(|e| e.target != Target::Unlabeled)
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
