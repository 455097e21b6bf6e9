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

impl LlmCache {
    /// Opens (creating if needed) the cache at `path`.
    pub fn open(path: &Path) -> Result<LlmCache> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let fail = |e: rusqlite::Error| Error::Results {
            path: path.to_path_buf(),
            message: format!("LLM cache: {e}"),
        };
        let conn = Connection::open(path).map_err(fail)?;
        // Other cells' processes may hold the write lock for a moment: wait rather than fail.
        conn.busy_timeout(Duration::from_secs(60)).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS answers (
                 key TEXT PRIMARY KEY,
                 annotator TEXT NOT NULL,
                 value TEXT NOT NULL,
                 created INTEGER NOT NULL
             )",
        )
        .map_err(fail)?;
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

    /// The stored answer (JSON) for `key`.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        let lookup = |conn: &Connection| {
            conn.query_row(
                "SELECT value FROM answers WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))
        };
        match (lookup(&self.conn)?, &self.base) {
            (Some(found), _) => Ok(Some(found)),
            (None, Some(base)) => lookup(base),
            (None, None) => Ok(None),
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
                    "INSERT OR IGNORE INTO answers (key, annotator, value, created)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| Error::Results {
                    path: self.path.clone(),
                    message: format!("LLM cache: {e}"),
                })?;
            for (key, value) in entries {
                stmt.execute(params![key, annotator, value, now])
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
            cache
                .conn
                .execute("ATTACH DATABASE ?1 AS shard", params![shard.display().to_string()])
                .and_then(|_| {
                    cache.conn.execute_batch(
                        "BEGIN; INSERT OR IGNORE INTO answers SELECT key, annotator, value, created \
                         FROM shard.answers; COMMIT; DETACH DATABASE shard;",
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
}
