//! Dataset definitions: the TOML that tells the generic loader how to read a dataset's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::locate::{key_location, line_of};
use crate::error::{Error, Result};

/// Whether a dataset labels whole texts or tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One label per text.
    Classification,
    /// One BIO tag per token (named-entity recognition).
    Ner,
}

/// File layouts the generic loader reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    /// Comma-separated values with quoting.
    Csv,
    /// Tab-separated values, no quoting.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// `<label> <text>` per line (the label is the first space-separated field).
    LabelText,
    /// CoNLL columns: one token per line, blank line between sentences.
    Conll,
}

/// Text encodings of data files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Encoding {
    /// Strict UTF-8: invalid bytes are an error.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Windows-1252 (MR, SUBJ, TREC): never fails; bytes such as 0x85 are characters, not breaks.
    #[serde(rename = "windows-1252")]
    Windows1252,
}

/// A column given by header name or 0-based index (negative counts from the end).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Column {
    /// 0-based index; -1 is the last column.
    Index(i64),
    /// Header name (needs `header = true`) or JSON field name.
    Name(String),
}

/// BIO tagging schemes found in NER files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TagScheme {
    /// IOB2: every entity starts with `B-`.
    Bio,
    /// IOB1 (CoNLL-2003 files): `B-` only where two entities of one type touch.
    Iob1,
}

/// How to read the files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FormatDef {
    /// Layout.
    pub kind: FormatKind,
    /// Encoding of every file.
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
    /// Whether csv/tsv files start with a header row.
    #[serde(default)]
    pub header: bool,
    /// Text column or field (csv, tsv, jsonl).
    #[serde(default)]
    pub text: Option<Column>,
    /// Label column or field (csv, tsv, jsonl).
    #[serde(default)]
    pub label: Option<Column>,
    /// Token column (conll).
    #[serde(default)]
    pub token_column: Option<Column>,
    /// Tag column (conll).
    #[serde(default)]
    pub tag_column: Option<Column>,
    /// Tag scheme of the file (conll); converted to BIO on load.
    #[serde(default)]
    pub scheme: Option<TagScheme>,
    /// Lines starting with this are document separators and skipped (conll).
    #[serde(default)]
    pub skip_prefix: Option<String>,
}

fn default_encoding() -> Encoding {
    Encoding::Utf8
}

/// Paths of the splits, relative to the definition file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilesDef {
    /// Training pool (always required).
    pub train: String,
    /// The training file holds texts only (no label column or label word): a pool to label,
    /// not to score. Skipped when false so that existing cells keep their ids.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub train_unlabeled: bool,
    /// Development split, if the dataset has one.
    #[serde(default)]
    pub dev: Option<String>,
    /// Test split; when absent, `[split]` cuts one from `train`.
    #[serde(default)]
    pub test: Option<String>,
}

/// Label names, their spelling in the files and their verbalizers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelsDef {
    /// Label (or entity type) names, in index order.
    pub names: Vec<String>,
    /// How each label is written in the files (defaults to `0`, `1`, ...; for NER unused).
    #[serde(default)]
    pub raw: Option<Vec<String>>,
    /// Words an LLM may answer for each label (defaults to the name).
    #[serde(default)]
    pub verbalizers: BTreeMap<String, Vec<String>>,
    /// Natural-language description of each label (used by prompts).
    #[serde(default)]
    pub descriptions: BTreeMap<String, String>,
}

/// Deterministic split of `train` into train/dev/test when files for them are missing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitDef {
    /// Fraction of the file that becomes the test split (when `files.test` is absent).
    #[serde(default)]
    pub test_fraction: f64,
    /// Fraction that becomes the dev split (when `files.dev` is absent).
    #[serde(default)]
    pub dev_fraction: f64,
}

/// A dataset definition (`datasets/NAME/dataset.toml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetDef {
    /// Short name used in tables.
    pub name: String,
    /// Provenance and caveats.
    #[serde(default)]
    pub description: String,
    /// Classification or NER.
    pub task: Task,
    /// File layout.
    pub format: FormatDef,
    /// Split files.
    pub files: FilesDef,
    /// Labels.
    pub labels: LabelsDef,
    /// How to cut missing splits.
    #[serde(default)]
    pub split: Option<SplitDef>,
    /// Directory of the definition file (relative paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl DatasetDef {
    /// Reads and checks a definition file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut def: DatasetDef = toml::from_str(&text).map_err(|e| Error::Config {
            location: format!(
                "{}:{}",
                path.display(),
                e.span().map(|s| line_of(&text, s.start)).unwrap_or(0)
            ),
            key: "(dataset)".into(),
            message: e.message().trim().to_string(),
        })?;
        def.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        def.check().map_err(|(key, message)| Error::Config {
            location: key_location(&[path.to_path_buf()], &key, path),
            key,
            message,
        })?;
        Ok(def)
    }

    /// Absolute path of a split file.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.base_dir.join(relative)
    }

    /// The raw spelling of each label in the files.
    pub fn raw_labels(&self) -> Vec<String> {
        self.labels.raw.clone().unwrap_or_else(|| {
            (0..self.labels.names.len())
                .map(|i| i.to_string())
                .collect()
        })
    }

    /// Verbalizer words of each label, in label order.
    pub fn verbalizers(&self) -> Vec<Vec<String>> {
        self.labels
            .names
            .iter()
            .map(|name| {
                self.labels
                    .verbalizers
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| vec![name.clone()])
            })
            .collect()
    }

    fn check(&self) -> std::result::Result<(), (String, String)> {
        let names = &self.labels.names;
        if names.is_empty() {
            return Err(("labels.names".into(), "needs at least one label".into()));
        }
        if self.task == Task::Classification && names.len() < 2 {
            return Err((
                "labels.names".into(),
                "a classification dataset needs at least two labels".into(),
            ));
        }
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        if unique.len() != names.len() {
            return Err(("labels.names".into(), "label names must be distinct".into()));
        }
        if let Some(raw) = &self.labels.raw
            && raw.len() != names.len()
        {
            return Err((
                "labels.raw".into(),
                format!(
                    "has {} entries but labels.names has {}",
                    raw.len(),
                    names.len()
                ),
            ));
        }
        if let Some(raw) = &self.labels.raw
            && raw.iter().collect::<std::collections::BTreeSet<_>>().len() != raw.len()
        {
            return Err((
                "labels.raw".into(),
                "raw labels must be distinct: each names one label".into(),
            ));
        }
        // Both tables are keyed by label name, so a typo in either is the same mistake.
        let verbalized = self.labels.verbalizers.keys().map(|l| ("verbalizers", l));
        let described = self.labels.descriptions.keys().map(|l| ("descriptions", l));
        if let Some((table, label)) = verbalized
            .chain(described)
            .find(|(_, label)| !names.contains(label))
        {
            return Err((
                format!("labels.{table}.{label}"),
                format!("`{label}` is not in labels.names {names:?}"),
            ));
        }
        if let Some(label) = self
            .labels
            .verbalizers
            .iter()
            .find(|(_, words)| words.is_empty() || words.iter().any(|w| w.trim().is_empty()))
            .map(|(label, _)| label)
        {
            return Err((
                format!("labels.verbalizers.{label}"),
                "needs at least one non-empty word".into(),
            ));
        }
        let tabular = matches!(
            self.format.kind,
            FormatKind::Csv | FormatKind::Tsv | FormatKind::Jsonl
        );
        if tabular && (self.format.text.is_none() || self.format.label.is_none()) {
            return Err((
                "format".into(),
                "csv, tsv and jsonl need `text` and `label` (column name or index)".into(),
            ));
        }
        if (self.task == Task::Ner) != (self.format.kind == FormatKind::Conll) {
            return Err((
                "format.kind".into(),
                "NER datasets use kind = \"conll\", classification datasets any other kind".into(),
            ));
        }
        if let Some(split) = &self.split {
            let ok = |f: f64| (0.0..1.0).contains(&f);
            if !ok(split.test_fraction)
                || !ok(split.dev_fraction)
                || split.test_fraction + split.dev_fraction >= 1.0
            {
                return Err((
                    "split".into(),
                    "fractions must be in [0, 1) and sum to less than 1".into(),
                ));
            }
        }
        if self.files.train_unlabeled {
            if self.files.test.is_none() {
                return Err((
                    "files.test".into(),
                    "an unlabeled pool needs a labelled test file: it is how a run measures the \
                     labels it makes ([split] test_fraction would cut it from the unlabeled pool)"
                        .into(),
                ));
            }
            if self.split.as_ref().is_some_and(|s| s.dev_fraction > 0.0) {
                return Err((
                    "split.dev_fraction".into(),
                    "a dev split cut from an unlabeled pool would have no labels: give \
                     files.dev or leave dev_fraction out"
                        .into(),
                ));
            }
        }
        if self.files.test.is_none() && self.split.as_ref().is_none_or(|s| s.test_fraction <= 0.0) {
            return Err((
                "files.test".into(),
                "no test file: give files.test or [split] test_fraction".into(),
            ));
        }
        Ok(())
    }
}

/// Resolves a dataset reference: a name under `datasets/` or a path to a definition file
/// (relative to the spec's directory).
pub fn resolve(project_root: &Path, spec_dir: &Path, reference: &str) -> Result<PathBuf> {
    if reference.ends_with(".toml") {
        let path = spec_dir.join(reference);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Config {
                location: "spec".into(),
                key: "dataset".into(),
                message: format!("dataset file {} does not exist", path.display()),
            })
        };
    }
    let path = project_root
        .join("datasets")
        .join(reference)
        .join("dataset.toml");
    if path.is_file() {
        return Ok(path);
    }
    let known: Vec<String> = std::fs::read_dir(project_root.join("datasets"))
        .map(|entries| {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("dataset.toml").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        })
        .unwrap_or_default();
    Err(Error::Config {
        location: "spec".into(),
        key: "dataset".into(),
        message: format!(
            "unknown dataset `{reference}`; known: {}; or give a path ending in .toml",
            known.join(", ")
        ),
    })
}
