//! One process at a time per cell: an advisory lock on `<cell>/.lock`, held while the cell runs.
//!
//! Two runs of the same spec (two terminals, a local run beside a Slurm array, machines sharing
//! the results directory) then divide the cells instead of both running each one and racing on
//! its files. The lock is the operating system's (`flock`), so a killed process releases it;
//! the file only tells others who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The lock file in a cell directory. It stays after the run: deleting it would let a process
/// that opened it just before lock a file no one else sees any more.
pub const LOCK_FILE: &str = ".lock";

/// A held claim on a cell; dropping it releases the cell.
#[derive(Debug)]
pub struct CellLock {
    // Held for its lock, which closing the file releases.
    _file: File,
}

/// What trying to claim a cell gave.
#[derive(Debug)]
pub enum Claim {
    /// This process now runs the cell.
    Held(CellLock),
    /// Another process runs it; who, as far as the lock file says.
    Busy(String),
}

/// Claims the cell whose directory is `dir` (created if missing) without waiting.
pub fn claim(dir: &Path) -> Result<Claim> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // `holder` takes a shared lock for an instant; a claim that meets one tries again shortly
    // rather than call the cell busy.
    let mut attempt = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if attempt < 4 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => return Ok(Claim::Busy(read_holder(&mut file))),
            // A file system without locks (some network mounts) runs cells unguarded, as
            // before locks existed, rather than not at all.
            Err(TryLockError::Error(e)) if unsupported(&e) => break,
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
    }
    let mut note = || -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(describe_self().as_bytes())?;
        file.flush()
    };
    note().map_err(|e| Error::io(&path, e))?;
    Ok(Claim::Held(CellLock { _file: file }))
}

fn unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(libc::ENOLCK)
}

/// Who holds the cell in `dir` now, or `None` when no process does.
pub fn holder(dir: &Path) -> Option<String> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => Some(read_holder(&mut file)),
        // A file system without locks: nothing can be said, so nothing is claimed.
        Err(TryLockError::Error(_)) => None,
    }
}

fn describe_self() -> String {
    format!("{} {} {}\n", std::process::id(), host_name(), now_s())
}

/// Seconds since the Unix epoch (0 on a clock set before it).
fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "pid P on host H, for N min", from the holder's note; the holder may not have written it
/// yet, or written it on a machine whose clock differs.
fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [pid, host, since] = fields[..] else {
        return "another process".into();
    };
    let now = now_s();
    match since.parse::<u64>() {
        Ok(since) if since <= now => {
            format!("pid {pid} on {host}, for {} min", (now - since) / 60)
        }
        _ => format!("pid {pid} on {host}"),
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf, which outlives the call.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() && !name.contains(char::is_whitespace) => name.into(),
        _ => "unknown-host".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_cell_is_busy_to_others_and_free_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let cell = dir.path().join("cell");
        assert!(holder(&cell).is_none());
        let Claim::Held(lock) = claim(&cell).unwrap() else {
            panic!("a fresh cell must be free");
        };
        // A second open file description conflicts even within one process, as another
        // process's would.
        let who = holder(&cell).expect("held");
        assert!(
            who.starts_with(&format!("pid {} on ", std::process::id())),
            "{who}"
        );
        assert!(who.ends_with(", for 0 min"), "{who}");
        match claim(&cell).unwrap() {
            Claim::Busy(who) => assert!(who.starts_with("pid "), "{who}"),
            Claim::Held(_) => panic!("claimed twice"),
        }
        drop(lock);
        assert!(holder(&cell).is_none());
        assert!(matches!(claim(&cell).unwrap(), Claim::Held(_)));
    }

    #[test]
    fn an_unreadable_note_still_reports_a_holder() {
        let dir = tempfile::tempdir().unwrap();
        let Claim::Held(_lock) = claim(dir.path()).unwrap() else {
            panic!("free");
        };
        std::fs::write(dir.path().join(LOCK_FILE), b"garbage").unwrap();
        assert_eq!(holder(dir.path()).as_deref(), Some("another process"));
    }
}
