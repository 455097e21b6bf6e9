//! Maps a dotted key path back to the file and line that set it, for error messages.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Where a key was found: the file and the 1-based line of the deepest matching key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLocation {
    /// File that contains the key.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// How many leading segments of the path matched (== path length when the key itself exists).
    pub depth: usize,
}

impl KeyLocation {
    /// `file:line`.
    pub fn display(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Finds `path` in one TOML file; returns the deepest match (None when even the first segment is
/// absent or the file does not parse).
pub fn locate_in_file(file: &Path, path: &[String]) -> Option<KeyLocation> {
    let text = std::fs::read_to_string(file).ok()?;
    let root = DeTable::parse(&text).ok()?;
    let mut table: &DeTable = root.get_ref();
    let mut best: Option<KeyLocation> = None;
    for (depth, segment) in path.iter().enumerate() {
        let Some((key, value)) = table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == segment.as_str())
        else {
            break;
        };
        best = Some(KeyLocation {
            file: file.to_path_buf(),
            line: line_of(&text, key.span().start),
            depth: depth + 1,
        });
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    best
}

/// `file:line` of the dotted `key` in `files` (highest priority first), or of its deepest
/// enclosing table that is set (a quoted `"slm.lr"` under `[sweep]` is found at `[sweep]`);
/// `fallback` when not even the first segment is.
pub fn key_location(files: &[PathBuf], key: &str, fallback: &Path) -> String {
    located(files, key, |_| 1, fallback)
}

/// As [`key_location`], but a match must reach the table that holds the key: under a table of
/// names such as `[methods.*]`, a shallower match is another entry's line, unrelated to `key`
/// (a method defined in the defaults is not at the spec's first `[methods.x]`).
pub fn key_or_table_location(files: &[PathBuf], key: &str, fallback: &Path) -> String {
    located(
        files,
        key,
        |segments| segments.saturating_sub(1).max(1),
        fallback,
    )
}

fn located(
    files: &[PathBuf],
    key: &str,
    least_depth: impl Fn(usize) -> usize,
    fallback: &Path,
) -> String {
    let path: Vec<String> = key.split('.').map(str::to_string).collect();
    locate(files, &path)
        .filter(|l| l.depth >= least_depth(path.len()))
        .map(|l| l.display())
        .unwrap_or_else(|| fallback.display().to_string())
}

/// Finds `path` in the first of `files` (highest priority first) that has it whole, else the
/// deepest partial match.
pub fn locate(files: &[PathBuf], path: &[String]) -> Option<KeyLocation> {
    let mut best: Option<KeyLocation> = None;
    for file in files {
        if let Some(found) = locate_in_file(file, path) {
            if found.depth == path.len() {
                return Some(found);
            }
            if best.as_ref().is_none_or(|b| found.depth > b.depth) {
                best = Some(found);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_key_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "seed = 1\n\n[slm]\nlr = 1e-3\nmax_lenn = 3\n").unwrap();
        let loc = locate_in_file(&file, &["slm".into(), "max_lenn".into()]).unwrap();
        assert_eq!(loc.line, 5);
        assert_eq!(loc.depth, 2);
        let partial = locate_in_file(&file, &["slm".into(), "nope".into()]).unwrap();
        assert_eq!((partial.line, partial.depth), (3, 1));
        assert!(locate_in_file(&file, &["nope".into()]).is_none());
    }

    #[test]
    fn a_key_is_located_at_itself_or_its_table_and_no_shallower() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "[methods.f]\nkind = \"freeal\"\nknn = 3\n").unwrap();
        let files = [file.clone()];
        let fallback = Path::new("spec.toml");
        let at = |key: &str| key_or_table_location(&files, key, fallback);
        let shown = file.display();
        assert_eq!(at("methods.f.knn"), format!("{shown}:3"));
        assert_eq!(at("methods.f.rounds"), format!("{shown}:1"));
        // `methods` matches, but another method's table is not where `s` is defined.
        assert_eq!(at("methods.s.kind"), "spec.toml");
        // The permissive form takes any enclosing table, and falls back only without one.
        assert_eq!(
            key_location(&files, "methods.s.kind", fallback),
            format!("{shown}:1")
        );
        assert_eq!(key_location(&files, "slm.lr", fallback), "spec.toml");
    }

    #[test]
    fn prefers_file_with_full_path() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        std::fs::write(&a, "[slm]\nlr = 1\n").unwrap();
        std::fs::write(&b, "x = 1\n[slm]\nbatch_size = 2\n").unwrap();
        let loc = locate(&[a, b.clone()], &["slm".into(), "batch_size".into()]).unwrap();
        assert_eq!(loc.file, b);
        assert_eq!(loc.line, 3);
    }
}
