//! Reads one data file into raw rows (text or tokens plus the label as written), with line numbers.

use std::path::Path;

use super::def::{Column, DatasetDef, Encoding, FormatKind, TagScheme};
use crate::error::{Error, Result};

/// One row as found in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum RawRow {
    /// A text and its label as written in the file.
    Text {
        /// 1-based line of the row.
        line: usize,
        /// The text.
        text: String,
        /// The label as written; `None` in a file read as unlabeled.
        label: Option<String>,
    },
    /// A tokenised sentence with BIO tags (already converted from IOB1 where needed).
    Tokens {
        /// 1-based line of the sentence's first token.
        line: usize,
        /// Tokens.
        tokens: Vec<String>,
        /// One tag per token (`O`, `B-X`, `I-X`); `None` in a file read as unlabeled.
        tags: Option<Vec<String>>,
    },
}

/// Decodes a file's bytes; UTF-8 is strict so that a wrong encoding is reported, not guessed.
pub fn decode(path: &Path, bytes: &[u8], encoding: Encoding) -> Result<String> {
    match encoding {
        Encoding::Windows1252 => {
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            Ok(text.into_owned())
        }
        Encoding::Utf8 => String::from_utf8(bytes.to_vec()).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
            Error::data(
                path,
                line,
                format!(
                    "byte 0x{:02X} is not UTF-8; set format.encoding = \"windows-1252\" if the \
                     file is Windows-1252",
                    bytes[offset]
                ),
            )
        }),
    }
}

/// Splits on `\n` only (0x85 decoded from Windows-1252 is U+2026, a character, never a break) and
/// drops a trailing `\r`.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
}

/// Reads every row of a file according to the definition; `labeled = false` reads texts only
/// (no label column is looked up; a `label_text` line is all text; a CoNLL line needs only its
/// token column).
pub fn read_rows(def: &DatasetDef, path: &Path, labeled: bool) -> Result<Vec<RawRow>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = decode(path, &bytes, def.format.encoding)?;
    let rows = match def.format.kind {
        FormatKind::LabelText => read_label_text(path, &text, labeled)?,
        FormatKind::Csv => read_delimited(def, path, &text, b',', true, labeled)?,
        FormatKind::Tsv => read_delimited(def, path, &text, b'\t', false, labeled)?,
        FormatKind::Jsonl => read_jsonl(def, path, &text, labeled)?,
        FormatKind::Conll => read_conll(def, path, &text, labeled)?,
    };
    if rows.is_empty() {
        return Err(Error::data(path, 0, "the file has no rows"));
    }
    Ok(rows)
}

fn read_label_text(path: &Path, text: &str, labeled: bool) -> Result<Vec<RawRow>> {
    let mut rows = Vec::new();
    for (line, content) in lines(text) {
        if content.trim().is_empty() {
            continue;
        }
        if !labeled {
            rows.push(RawRow::Text {
                line,
                text: content.trim().to_string(),
                label: None,
            });
            continue;
        }
        let (label, rest) = content.split_once(' ').ok_or_else(|| {
            Error::data(path, line, "expected `<label> <text>` separated by a space")
        })?;
        rows.push(RawRow::Text {
            line,
            text: rest.trim().to_string(),
            label: Some(label.trim().to_string()),
        });
    }
    Ok(rows)
}

fn column_index(
    path: &Path,
    column: &Column,
    header: Option<&csv::StringRecord>,
    width: usize,
) -> Result<usize> {
    match column {
        Column::Index(i) => {
            let idx = if *i < 0 { width as i64 + i } else { *i };
            if idx < 0 || idx as usize >= width {
                return Err(Error::data(
                    path,
                    1,
                    format!("column index {i} is out of range for {width} columns"),
                ));
            }
            Ok(idx as usize)
        }
        Column::Name(name) => {
            let header = header.ok_or_else(|| {
                Error::data(
                    path,
                    1,
                    format!("column `{name}` is named but format.header is false"),
                )
            })?;
            header.iter().position(|h| h.trim() == name).ok_or_else(|| {
                Error::data(
                    path,
                    1,
                    format!(
                        "no column `{name}` in the header {:?}",
                        header.iter().collect::<Vec<_>>()
                    ),
                )
            })
        }
    }
}

fn read_delimited(
    def: &DatasetDef,
    path: &Path,
    text: &str,
    delimiter: u8,
    quoting: bool,
    labeled: bool,
) -> Result<Vec<RawRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(quoting)
        .has_headers(def.format.header)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header = if def.format.header {
        Some(
            reader
                .headers()
                .map_err(|e| Error::data(path, 1, e.to_string()))?
                .clone(),
        )
    } else {
        None
    };
    let (text_col, label_col) = (
        def.format.text.as_ref().expect("checked by DatasetDef"),
        def.format.label.as_ref().expect("checked by DatasetDef"),
    );
    let mut rows = Vec::new();
    let mut indices = None;
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            Error::data(path, line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let (ti, li) = match indices {
            Some(pair) => pair,
            None => {
                let label = match labeled {
                    true => Some(column_index(
                        path,
                        label_col,
                        header.as_ref(),
                        record.len(),
                    )?),
                    false => None,
                };
                let pair = (
                    column_index(path, text_col, header.as_ref(), record.len())?,
                    label,
                );
                indices = Some(pair);
                pair
            }
        };
        rows.push(RawRow::Text {
            line,
            text: record[ti].trim().to_string(),
            label: li.map(|li| record[li].trim().to_string()),
        });
    }
    Ok(rows)
}

fn read_jsonl(def: &DatasetDef, path: &Path, text: &str, labeled: bool) -> Result<Vec<RawRow>> {
    let field = |column: &Column| match column {
        Column::Name(name) => Ok(name.clone()),
        Column::Index(_) => Err(Error::data(
            path,
            0,
            "jsonl needs field names for `text` and `label`, not indices",
        )),
    };
    let text_field = field(def.format.text.as_ref().expect("checked by DatasetDef"))?;
    let label_field = field(def.format.label.as_ref().expect("checked by DatasetDef"))?;
    let mut rows = Vec::new();
    for (line, content) in lines(text) {
        if content.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(content)
            .map_err(|e| Error::data(path, line, format!("invalid JSON: {e}")))?;
        let get = |name: &str| -> Result<String> {
            match value.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
                _ => Err(Error::data(
                    path,
                    line,
                    format!("field `{name}` is missing or not a string/number"),
                )),
            }
        };
        rows.push(RawRow::Text {
            line,
            text: get(&text_field)?.trim().to_string(),
            label: match labeled {
                true => Some(get(&label_field)?),
                false => None,
            },
        });
    }
    Ok(rows)
}

/// Converts IOB1 tags to BIO: an `I-X` that does not continue an `X` entity starts one.
pub fn iob1_to_bio(tags: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(tags.len());
    let mut previous_type: Option<&str> = None;
    for tag in tags {
        let converted = match tag.split_once('-') {
            Some(("I", kind)) if previous_type != Some(kind) => format!("B-{kind}"),
            _ => tag.clone(),
        };
        previous_type = tag.split_once('-').map(|(_, kind)| kind);
        out.push(converted);
    }
    out
}

fn read_conll(def: &DatasetDef, path: &Path, text: &str, labeled: bool) -> Result<Vec<RawRow>> {
    let token_col = def.format.token_column.clone().unwrap_or(Column::Index(0));
    let tag_col = def.format.tag_column.clone().unwrap_or(Column::Index(-1));
    let pick = |column: &Column, fields: &[&str], line: usize| -> Result<String> {
        let Column::Index(i) = column else {
            return Err(Error::data(path, line, "conll columns are given by index"));
        };
        let idx = if *i < 0 { fields.len() as i64 + i } else { *i };
        fields
            .get(usize::try_from(idx).unwrap_or(usize::MAX))
            .map(|s| s.to_string())
            .ok_or_else(|| {
                Error::data(
                    path,
                    line,
                    format!("column {i} missing in a line of {} fields", fields.len()),
                )
            })
    };
    let mut rows = Vec::new();
    let (mut tokens, mut tags, mut start) = (Vec::new(), Vec::new(), 0);
    let mut flush = |tokens: &mut Vec<String>, tags: &mut Vec<String>, start: usize| {
        if tokens.is_empty() {
            return;
        }
        let tags_bio = match def.format.scheme {
            Some(TagScheme::Iob1) => iob1_to_bio(tags),
            _ => tags.clone(),
        };
        rows.push(RawRow::Tokens {
            line: start,
            tokens: std::mem::take(tokens),
            tags: labeled.then_some(tags_bio),
        });
        tags.clear();
    };
    for (line, content) in lines(text) {
        if let Some(prefix) = &def.format.skip_prefix
            && content.starts_with(prefix.as_str())
        {
            flush(&mut tokens, &mut tags, start);
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.is_empty() {
            flush(&mut tokens, &mut tags, start);
            continue;
        }
        if tokens.is_empty() {
            start = line;
        }
        if labeled && fields.len() < 2 {
            // With one field the token would be read as its own tag.
            return Err(Error::data(
                path,
                line,
                format!(
                    "`{}` is the line's only column: a labelled CoNLL file needs a token and a                      tag on each line (a training pool without tags is read with                      files.train_unlabeled = true)",
                    fields[0]
                ),
            ));
        }
        tokens.push(pick(&token_col, &fields, line)?);
        if labeled {
            tags.push(pick(&tag_col, &fields, line)?);
        }
    }
    flush(&mut tokens, &mut tags, start);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn iob1_becomes_bio() {
        let tags = s(&["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-LOC"]);
        assert_eq!(
            iob1_to_bio(&tags),
            s(&["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-LOC"])
        );
    }

    #[test]
    fn unlabeled_conll_needs_only_the_token_column() {
        let def: DatasetDef = toml::from_str(
            "name = \"n\"\ntask = \"ner\"\n[format]\nkind = \"conll\"\n[files]\n\
             train = \"t\"\n[labels]\nnames = [\"PER\"]\n",
        )
        .unwrap();
        // A tag column, where present, is ignored; blank lines still end sentences.
        let text = "Ann\nsat\n\nBob B-PER\n";
        let rows = read_conll(&def, Path::new("p"), text, false).unwrap();
        assert_eq!(
            rows,
            [
                RawRow::Tokens {
                    line: 1,
                    tokens: s(&["Ann", "sat"]),
                    tags: None
                },
                RawRow::Tokens {
                    line: 4,
                    tokens: s(&["Bob"]),
                    tags: None
                },
            ]
        );
        // Read as labelled, a line without its tag column is named, not read as its own tag.
        let err = read_conll(&def, Path::new("p"), "Ann O\nO\n", true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("p:2: `O` is the line's only column"),
            "{err}"
        );
        let rows = read_conll(&def, Path::new("p"), "Ann B-PER\nsat O\n", true).unwrap();
        assert!(
            matches!(&rows[..], [RawRow::Tokens { tags: Some(t), .. }] if *t == s(&["B-PER", "O"]))
        );
    }

    #[test]
    fn windows_1252_keeps_0x85_inside_the_line() {
        let bytes = b"1 wait\x85 what\n0 bad\n";
        let text = decode(Path::new("x"), bytes, Encoding::Windows1252).unwrap();
        assert_eq!(lines(&text).filter(|(_, l)| !l.is_empty()).count(), 2);
        assert!(text.contains('\u{2026}'));
    }

    #[test]
    fn strict_utf8_names_the_line() {
        let err = decode(Path::new("f.txt"), b"ok\nbad \x85\n", Encoding::Utf8).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("f.txt:2:"), "{text}");
        assert!(text.contains("windows-1252"));
    }
}
