//! Persistent LLM answer cache: SQLite (WAL mode) keyed by a hash of the backend, the model, the
//! decoding settings and the full rendered request, so it survives code changes that leave the
//! request alone and is safe with several processes (parallel cells) writing at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// An open cache file.
pub struct LlmCache {
    conn: Connection,
    path: PathBuf,
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
        })
    }

    fn fail(&self, e: rusqlite::Error) -> Error {
        Error::Results {
            path: self.path.clone(),
            message: format!("LLM cache: {e}"),
        }
    }

    /// The stored answer (JSON) for `key`.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM answers WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))
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
}
