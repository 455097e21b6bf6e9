//! The replay annotator: labels (and optional augmentations) read from a file, e.g. the FreeAL
//! paper's own GPT-3.5 labels for MR. Texts missing from the file, or labelled with something
//! that is not a label (the paper's -1), come back unlabelled: masked, never guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::llm::annotator::{
    Annotation, Annotator, ClassifyRequest, GenerateRequest, Generation, Tick, refuse_all,
};

/// Where the columns of a replay CSV are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// CSV file (relative paths: to the dataset directory).
    pub file: String,
    /// Whether the first row is a header.
    #[serde(default)]
    pub header: bool,
    /// Column of the label (spelled as in the dataset's files).
    #[serde(default)]
    pub label: usize,
    /// Column of the text.
    #[serde(default = "one")]
    pub text: usize,
    /// Column of an augmented view (e.g. a back-translation), if any.
    #[serde(default)]
    pub augmentation: Option<usize>,
}

fn one() -> usize {
    1
}

/// A replay file, read.
#[derive(Debug, Clone, Default)]
pub struct ReplayTable {
    /// Text -> label (`None`: present but unusable).
    pub labels: HashMap<String, Option<usize>>,
    /// Text -> augmented view.
    pub augmentations: HashMap<String, String>,
}

/// Reads a replay file; `raw_labels[i]` is how label `i` is spelled in it.
pub fn read_replay(path: &Path, spec: &ReplaySpec, raw_labels: &[String]) -> Result<ReplayTable> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(spec.header)
        .flexible(true)
        .from_path(path)
        .map_err(|e| Error::data(path, 0, e.to_string()))?;
    let mut table = ReplayTable::default();
    for (i, row) in reader.records().enumerate() {
        let line = i + 1 + usize::from(spec.header);
        let row = row.map_err(|e| Error::data(path, line, e.to_string()))?;
        let field = |col: usize, what: &str| {
            row.get(col).ok_or_else(|| {
                Error::data(
                    path,
                    line,
                    format!("no column {col} ({what}); row has {}", row.len()),
                )
            })
        };
        let text = field(spec.text, "text")?.trim().to_string();
        let raw = field(spec.label, "label")?.trim();
        let label = raw_labels.iter().position(|r| r == raw);
        if let Some(col) = spec.augmentation {
            table
                .augmentations
                .insert(text.clone(), field(col, "augmentation")?.trim().to_string());
        }
        table.labels.insert(text, label);
    }
    Ok(table)
}

/// Answers from a [`ReplayTable`].
pub struct ReplayAnnotator {
    table: ReplayTable,
    file: PathBuf,
}

impl ReplayAnnotator {
    /// Replays `table`, read from `file`.
    pub fn new(table: ReplayTable, file: PathBuf) -> Self {
        ReplayAnnotator { table, file }
    }
}

impl Annotator for ReplayAnnotator {
    fn id(&self) -> String {
        format!(
            "replay:{}",
            self.file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        )
    }

    fn decoding(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    fn classify(&mut self, requests: &[ClassifyRequest], tick: Tick) -> Vec<Result<Annotation>> {
        let out = requests
            .iter()
            .map(|r| {
                let label = self.table.labels.get(r.query.trim()).copied().flatten();
                Ok(Annotation::certain(label, r.verbalizers.len()))
            })
            .collect();
        tick(requests.len() as u64);
        out
    }

    fn generate(&mut self, requests: &[GenerateRequest], _tick: Tick) -> Vec<Result<Generation>> {
        refuse_all(
            self.id(),
            requests.len(),
            "a replay file holds labels, not generations; use an LLM backend for \
                     methods that generate demonstrations",
        )
    }

    fn cacheable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::annotator::{ChatMessage, Role};

    #[test]
    fn reads_labels_masks_minus_one_and_keeps_augmentations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(
            &path,
            "0,bad film,a bad movie\n1,\"good, fun\",great\n-1,meh,so-so\n",
        )
        .unwrap();
        let spec = ReplaySpec {
            file: "r.csv".into(),
            header: false,
            label: 0,
            text: 1,
            augmentation: Some(2),
        };
        let table = read_replay(&path, &spec, &["0".into(), "1".into()]).unwrap();
        assert_eq!(table.labels["good, fun"], Some(1));
        assert_eq!(table.labels["meh"], None);
        assert_eq!(table.augmentations["bad film"], "a bad movie");
        let mut replay = ReplayAnnotator::new(table, path);
        let req = |t: &str| ClassifyRequest {
            query: t.into(),
            messages: vec![ChatMessage::new(Role::User, t)],
            verbalizers: vec![vec!["n".into()], vec!["p".into()]],
        };
        let got: Vec<Annotation> = replay
            .classify(&[req("bad film"), req("meh"), req("unseen")], &|_| {})
            .into_iter()
            .map(|a| a.unwrap())
            .collect();
        assert_eq!(
            got.iter().map(|a| a.label).collect::<Vec<_>>(),
            [Some(0), None, None]
        );
        assert_eq!(got[0].probs, vec![1.0, 0.0]);
    }

    #[test]
    fn the_papers_mr_file_matches_its_documented_accuracy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let spec = ReplaySpec {
            file: "raw/freeal/train_chat_bt.csv".into(),
            header: false,
            label: 0,
            text: 1,
            augmentation: Some(2),
        };
        let table = read_replay(
            &root.join("datasets/mr/raw/freeal/train_chat_bt.csv"),
            &spec,
            &["0".into(), "1".into()],
        )
        .unwrap();
        let gold = read_replay(
            &root.join("datasets/mr/raw/freeal/train.csv"),
            &ReplaySpec {
                augmentation: None,
                ..spec
            },
            &["0".into(), "1".into()],
        )
        .unwrap();
        let (mut right, mut labelled) = (0usize, 0usize);
        for (text, label) in &table.labels {
            if let (Some(l), Some(Some(g))) = (label, gold.labels.get(text)) {
                labelled += 1;
                right += usize::from(l == g);
            }
        }
        let acc = right as f64 / labelled as f64;
        // SOURCE.md: 93.7% correct where labelled.
        assert!(
            (acc - 0.937).abs() < 0.005,
            "accuracy where labelled: {acc}"
        );
    }
}
