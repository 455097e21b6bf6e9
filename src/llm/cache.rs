//! Persistent LLM answer cache: SQLite (WAL mode) keyed by a hash of the backend, the model, the
//! decoding settings and the full rendered request, so it survives code changes that leave the
//! request alone and is safe with several processes (parallel cells) writing at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// An open cache file, optionally a shard in front of a read-only main cache.
pub struct LlmCache {
    conn: Connection,
    path: PathBuf,
    /// Sharded mode: the main cache, read-only, consulted after the shard.
    base: Option<Connection>,
}

/// The folder of per-cell shards of the cache at `main`.
pub fn shards_dir(main: &Path) -> PathBuf {
    let mut name = main.file_name().unwrap_or_default().to_os_string();
    name.push(".shards");
    main.with_file_name(name)
}

/// The cache key of a request: SHA-256 (hex) of the canonical JSON of everything that can
/// change the answer.
pub fn request_key(
    annotator: &str,
    decoding: &serde_json::Value,
    request: &impl Serialize,
) -> String {
    // serde_json writes struct fields in declaration order and `json!` maps sorted, so the
    // same request always serialises to the same bytes.
    let body = serde_json::json!({
        "annotator": annotator,
        "decoding": decoding,
        "request": request,
    });
    let mut hasher = Sha256::new();
    hasher.update(body.to_string().as_bytes());
    format!("{:x}", hasher.finalize())
}

/// What `LlmCache::audit` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// SQLite's `PRAGMA integrity_check` verdict ("ok" when sound).
    pub integrity: String,
    /// Entries read.
    pub entries: u64,
    /// Entries from before checksums (trusted, not checkable).
    pub unchecked: u64,
    /// Entries whose checksum does not match.
    pub bad: u64,
}

/// What guards an entry against torn or altered writes: SHA-256 (hex) of its key and value.
fn checksum(key: &str, value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update([0u8]);
    hasher.update(value.as_bytes());
    format!("{:x}", hasher.finalize())
}

/// Why a cache file could not be opened: damaged beyond use, or anything else.
enum OpenError {
    Damaged(rusqlite::Error),
    Other(rusqlite::Error),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match e.sqlite_error_code() {
            Some(DatabaseCorrupt | NotADatabase) => OpenError::Damaged(e),
            _ => OpenError::Other(e),
        }
    }
}

impl OpenError {
    fn into_error(self, path: &Path) -> Error {
        let (OpenError::Damaged(e) | OpenError::Other(e)) = self;
        Error::Results {
            path: path.to_path_buf(),
            message: format!("LLM cache: {e}"),
        }
    }
}

/// Moves a damaged cache (and its WAL files) aside; returns where it went.
fn quarantine(path: &Path) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let with_suffix = |p: &Path, suffix: &str| {
        let mut name = p.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    let aside = with_suffix(path, &format!(".corrupt-{stamp}"));
    std::fs::rename(path, &aside).map_err(|e| Error::io(path, e))?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::rename(with_suffix(path, suffix), with_suffix(&aside, suffix));
    }
    Ok(aside)
}

impl LlmCache {
    /// Opens (creating if needed) the cache at `path`. A file SQLite reports as damaged (not a
    /// database, or corrupt) is moved aside to `<path>.corrupt-<unix time>` with a warning and a
    /// fresh cache takes its place: its answers are asked again rather than trusted.
    pub fn open(path: &Path) -> Result<LlmCache> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        match Self::open_unchecked(path) {
            Err(OpenError::Damaged(e)) => {
                let aside = quarantine(path)?;
                eprintln!(
                    "warning: LLM cache {} is damaged ({e}); moved to {} and started afresh",
                    path.display(),
                    aside.display()
                );
                Self::open_unchecked(path).map_err(|e| e.into_error(path))
            }
            other => other.map_err(|e| e.into_error(path)),
        }
    }

    fn open_unchecked(path: &Path) -> std::result::Result<LlmCache, OpenError> {
        let conn = Connection::open(path)?;
        // Other cells' processes may hold the write lock for a moment: wait rather than fail.
        conn.busy_timeout(Duration::from_secs(60))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS answers (
                 key TEXT PRIMARY KEY,
                 annotator TEXT NOT NULL,
                 value TEXT NOT NULL,
                 created INTEGER NOT NULL,
                 checksum TEXT
             )",
        )?;
        // Caches written before checksums existed gain the column; their rows stay unchecked.
        let has_checksum = conn
            .prepare("SELECT 1 FROM pragma_table_info('answers') WHERE name = 'checksum'")?
            .exists([])?;
        if !has_checksum {
            conn.execute_batch("ALTER TABLE answers ADD COLUMN checksum TEXT")?;
        }
        Ok(LlmCache {
            conn,
            path: path.to_path_buf(),
            base: None,
        })
    }

    /// Sharded mode, for cells running on many machines against one shared folder, where
    /// SQLite's locks cannot be trusted (NFS): answers are written only to this cell's own
    /// shard (`<main>.shards/<shard>.sqlite`, one writer), and read from it, then from `main`
    /// opened immutable (no lock, no write). `merge_shards` folds shards into `main` later.
    pub fn open_shard(main: &Path, shard: &str) -> Result<LlmCache> {
        let mut cache = LlmCache::open(&shards_dir(main).join(format!("{shard}.sqlite")))?;
        if main.is_file() {
            let uri = format!("file:{}?immutable=1", main.display());
            let flags =
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
            cache.base =
                Some(
                    Connection::open_with_flags(uri, flags).map_err(|e| Error::Results {
                        path: main.to_path_buf(),
                        message: format!("LLM cache (read-only): {e}"),
                    })?,
                );
        }
        Ok(cache)
    }

    fn fail(&self, e: rusqlite::Error) -> Error {
        Error::Results {
            path: self.path.clone(),
            message: format!("LLM cache: {e}"),
        }
    }

    /// The stored answer (JSON) for `key`. An entry whose checksum does not match its bytes
    /// (a torn or altered write) is deleted with a warning and reported as absent, so it is
    /// asked again instead of being read as valid.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        let lookup = |conn: &Connection| {
            conn.query_row(
                "SELECT value, checksum FROM answers WHERE key = ?1",
                params![key],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()
            .map_err(|e| self.fail(e))
        };
        let valid = |(value, sum): (String, Option<String>)| {
            sum.is_none_or(|sum| sum == checksum(key, &value))
                .then_some(value)
        };
        if let Some(found) = lookup(&self.conn)? {
            if let Some(value) = valid(found) {
                return Ok(Some(value));
            }
            eprintln!(
                "warning: LLM cache {}: the entry {key} fails its checksum; discarded, it will \
                 be asked again",
                self.path.display()
            );
            self.conn
                .execute("DELETE FROM answers WHERE key = ?1", params![key])
                .map_err(|e| self.fail(e))?;
            return Ok(None);
        }
        match &self.base {
            Some(base) => Ok(lookup(base)?.and_then(valid)),
            None => Ok(None),
        }
    }

    /// Stores answers in one transaction (all or none survive a crash); an existing key keeps
    /// its first answer, so concurrent writers never disagree about what was cached.
    pub fn put_many(&mut self, annotator: &str, entries: &[(String, String)]) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let tx = self.conn.transaction().map_err(|e| Error::Results {
            path: self.path.clone(),
            message: format!("LLM cache: {e}"),
        })?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO answers (key, annotator, value, created, checksum)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| Error::Results {
                    path: self.path.clone(),
                    message: format!("LLM cache: {e}"),
                })?;
            for (key, value) in entries {
                stmt.execute(params![key, annotator, value, now, checksum(key, value)])
                    .map_err(|e| Error::Results {
                        path: self.path.clone(),
                        message: format!("LLM cache: {e}"),
                    })?;
            }
        }
        tx.commit().map_err(|e| self.fail(e))
    }

    /// Folds the shards of `main` whose name `done` accepts (cells that finished, so no
    /// process writes them any more) into it, first answer per key winning as with concurrent
    /// writers, and deletes them; returns the answers added.
    pub fn merge_shards(main: &Path, done: &dyn Fn(&str) -> bool) -> Result<u64> {
        let dir = shards_dir(main);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut shards: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
            .filter(|p| p.file_stem().and_then(|n| n.to_str()).is_some_and(done))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Ok(0);
        }
        let cache = LlmCache::open(main)?;
        let before = cache.len()?;
        for shard in &shards {
            // Opening brings a shard from an older version up to the current columns.
            drop(LlmCache::open(shard)?);
            cache
                .conn
                .execute(
                    "ATTACH DATABASE ?1 AS shard",
                    params![shard.display().to_string()],
                )
                .and_then(|_| {
                    cache.conn.execute_batch(
                        "BEGIN; INSERT OR IGNORE INTO answers (key, annotator, value, created, \
                         checksum) SELECT key, annotator, value, created, checksum FROM \
                         shard.answers; COMMIT; DETACH DATABASE shard;",
                    )
                })
                .map_err(|e| Error::Results {
                    path: shard.clone(),
                    message: format!("merging LLM cache shard: {e}"),
                })?;
            // A shard is deleted only once its answers are committed to the main cache.
            for suffix in ["", "-wal", "-shm"] {
                let mut name = shard.as_os_str().to_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(name));
            }
        }
        Ok(cache.len()? - before)
    }

    /// Checks the whole file: SQLite's own integrity check, then every entry against its
    /// checksum (nothing is deleted); for crash tests and for a user who distrusts a cache.
    pub fn audit(&self) -> Result<Audit> {
        let integrity: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.fail(e))?;
        let mut audit = Audit {
            integrity,
            ..Audit::default()
        };
        let mut stmt = self
            .conn
            .prepare("SELECT key, value, checksum FROM answers")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(|e| self.fail(e))?;
        for row in rows {
            let (key, value, sum) = row.map_err(|e| self.fail(e))?;
            audit.entries += 1;
            match sum {
                None => audit.unchecked += 1,
                Some(sum) if sum != checksum(&key, &value) => audit.bad += 1,
                Some(_) => {}
            }
        }
        Ok(audit)
    }

    /// Number of stored answers.
    pub fn len(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM answers", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.fail(e))
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_everything_that_changes_the_answer() {
        let d = serde_json::json!({"mode": "logprobs"});
        let k = request_key("a:m", &d, &"prompt");
        assert_eq!(k, request_key("a:m", &d, &"prompt"));
        assert_ne!(k, request_key("a:m2", &d, &"prompt"));
        assert_ne!(
            k,
            request_key("a:m", &serde_json::json!({"mode": "generate"}), &"prompt")
        );
        assert_ne!(k, request_key("a:m", &d, &"prompt "));
        assert_eq!(k.len(), 64);
    }

    #[test]
    fn answers_persist_and_first_writer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/cache.sqlite");
        {
            let mut c = LlmCache::open(&path).unwrap();
            assert!(c.is_empty().unwrap());
            c.put_many(
                "x",
                &[("k1".into(), "v1".into()), ("k2".into(), "v2".into())],
            )
            .unwrap();
            c.put_many("x", &[("k1".into(), "other".into())]).unwrap();
        }
        let c = LlmCache::open(&path).unwrap();
        assert_eq!(c.get("k1").unwrap().as_deref(), Some("v1"));
        assert_eq!(c.get("k3").unwrap(), None);
        assert_eq!(c.len().unwrap(), 2);
    }

    #[test]
    fn two_connections_write_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        LlmCache::open(&path).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut c = LlmCache::open(&path).unwrap();
                    for i in 0..50 {
                        c.put_many("x", &[(format!("{t}-{i}"), "v".into())])
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(LlmCache::open(&path).unwrap().len().unwrap(), 200);
    }

    #[test]
    fn shards_read_through_to_main_and_merge_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("cache.sqlite");
        LlmCache::open(&main)
            .unwrap()
            .put_many("x", &[("old".into(), "v0".into())])
            .unwrap();
        for cell in ["a", "b"] {
            let mut shard = LlmCache::open_shard(&main, cell).unwrap();
            assert_eq!(shard.get("old").unwrap().as_deref(), Some("v0"));
            shard
                .put_many(
                    "x",
                    &[
                        (format!("new-{cell}"), "v".into()),
                        ("both".into(), cell.into()),
                    ],
                )
                .unwrap();
        }
        // Nothing reached the main cache while the shards were written.
        assert_eq!(LlmCache::open(&main).unwrap().len().unwrap(), 1);
        // An unfinished cell's shard stays put.
        assert_eq!(
            LlmCache::merge_shards(&main, &|name| name == "a").unwrap(),
            2
        );
        assert_eq!(LlmCache::merge_shards(&main, &|_| true).unwrap(), 1);
        let merged = LlmCache::open(&main).unwrap();
        assert_eq!(merged.get("new-b").unwrap().as_deref(), Some("v"));
        // The first merged shard's answer to the shared key is kept.
        assert_eq!(merged.get("both").unwrap().as_deref(), Some("a"));
        assert!(
            std::fs::read_dir(shards_dir(&main))
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(LlmCache::merge_shards(&main, &|_| true).unwrap(), 0);
    }

    #[test]
    fn an_entry_that_fails_its_checksum_is_discarded_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let mut c = LlmCache::open(&path).unwrap();
        c.put_many("a:m", &[("k1".into(), "{\"label\":1}".into())])
            .unwrap();
        c.put_many("a:m", &[("k2".into(), "{\"label\":0}".into())])
            .unwrap();
        // A write torn half-way (or bytes altered on disk) leaves a value its checksum rejects.
        c.conn
            .execute("UPDATE answers SET value = '{\"lab' WHERE key = 'k1'", [])
            .unwrap();
        assert_eq!(c.audit().unwrap().bad, 1);
        assert_eq!(c.get("k1").unwrap(), None);
        assert_eq!(c.len().unwrap(), 1, "the bad entry is deleted");
        assert_eq!(c.get("k2").unwrap().as_deref(), Some("{\"label\":0}"));
        let audit = c.audit().unwrap();
        assert_eq!(
            (audit.integrity.as_str(), audit.entries, audit.bad),
            ("ok", 1, 0)
        );
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let garbage = b"not a database at all\n".repeat(500);
        std::fs::write(&path, &garbage).unwrap();
        let mut c = LlmCache::open(&path).unwrap();
        assert!(c.is_empty().unwrap());
        c.put_many("a:m", &[("k".into(), "v".into())]).unwrap();
        assert_eq!(c.get("k").unwrap().as_deref(), Some("v"));
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read(&aside[0]).unwrap(),
            garbage,
            "kept for inspection"
        );
    }

    #[test]
    fn a_cache_from_before_checksums_is_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE answers (key TEXT PRIMARY KEY, annotator TEXT NOT NULL, \
             value TEXT NOT NULL, created INTEGER NOT NULL);
             INSERT INTO answers VALUES ('old', 'a:m', 'v0', 0);",
        )
        .unwrap();
        drop(old);
        let mut c = LlmCache::open(&path).unwrap();
        assert_eq!(c.get("old").unwrap().as_deref(), Some("v0"));
        c.put_many("a:m", &[("new".into(), "v1".into())]).unwrap();
        assert_eq!(c.get("new").unwrap().as_deref(), Some("v1"));
    }
}
