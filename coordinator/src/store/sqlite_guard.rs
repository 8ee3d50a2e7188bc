//! What keeps a coordinator's SQLite file safe, beside the database itself:
//!
//! - `<db>.lock`: an exclusive lock (`flock`) held for as long as the store
//!   is open, with the holder's PID inside. A second coordinator on the same
//!   file is refused with a message naming that PID, instead of the two
//!   fighting over "database is locked".
//! - `<db>.id`: the store's identity (`store_meta.store_id`). When the
//!   database exists but no longer carries that identity (its `-wal` file
//!   was deleted, so everything written since the last checkpoint is gone,
//!   or the file was replaced), the coordinator refuses to start rather than
//!   serve an empty or foreign database as if it were this one.
//! - `PRAGMA quick_check` on open: a corrupted file is refused with what to
//!   do, not discovered by the first query that trips over it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::StoreError;

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(crate) fn lock_path(db: &Path) -> PathBuf {
    sibling(db, ".lock")
}

pub(crate) fn id_path(db: &Path) -> PathBuf {
    sibling(db, ".id")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

/// Takes `<db>.lock` for this process (held until the returned file is
/// dropped) and writes our PID into it.
pub(crate) fn lock(db: &Path) -> Result<File, StoreError> {
    let path = lock_path(db);
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io(&path))?;
            writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
            file.flush().map_err(io(&path))?;
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            Err(StoreError::Locked {
                path: db.display().to_string(),
                lock: path.display().to_string(),
                pid: if pid.is_empty() { "unknown".into() } else { pid.chars().take(20).collect() },
            })
        }
        Err(TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// The identity recorded next to the database, if any.
pub(crate) fn recorded_id(db: &Path) -> Result<Option<String>, StoreError> {
    let path = id_path(db);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Records `id` next to the database (write to a temporary file, then rename).
pub(crate) fn record_id(db: &Path, id: &str) -> Result<(), StoreError> {
    let path = id_path(db);
    let tmp = sibling(db, ".id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

fn unsafe_db(db: &Path, reason: String) -> StoreError {
    StoreError::Unsafe { path: db.display().to_string(), reason }
}

/// Checks an existing database file before anything is written to it:
/// integrity (`PRAGMA quick_check`) and, when `<db>.id` exists, that the
/// database still carries that identity.
pub(crate) async fn check_existing(db: &Path, opts: &SqliteConnectOptions) -> Result<(), StoreError> {
    let recorded = recorded_id(db)?;
    let opts = opts.clone().create_if_missing(false);
    let mut conn = opts.connect().await.map_err(|e| {
        unsafe_db(
            db,
            format!(
                "cannot open it as SQLite ({e}); restore it from a backup, or move it aside to start a fresh database"
            ),
        )
    })?;
    let checked: Result<Vec<(String,)>, sqlx::Error> =
        sqlx::query_as("PRAGMA quick_check(5)").fetch_all(&mut conn).await;
    let problems = match checked {
        Ok(rows) if rows.len() == 1 && rows[0].0 == "ok" => None,
        Ok(rows) => Some(rows.into_iter().map(|(r,)| r).collect::<Vec<_>>().join("; ")),
        Err(e) => Some(e.to_string()),
    };
    if let Some(p) = problems {
        let _ = conn.close().await;
        return Err(unsafe_db(
            db,
            format!(
                "the integrity check failed ({}); restore it from a backup, or move it aside to start a fresh database",
                p.chars().take(500).collect::<String>()
            ),
        ));
    }
    let has_meta: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'store_meta'")
            .fetch_optional(&mut conn)
            .await?;
    let found: Option<String> = if has_meta.is_some() {
        sqlx::query_as::<_, (String,)>(super::sql::STORE_ID).fetch_optional(&mut conn).await?.map(|(v,)| v)
    } else {
        None
    };
    let _ = conn.close().await;
    let Some(recorded) = recorded else { return Ok(()) };
    let id_file = id_path(db);
    match found {
        Some(f) if f == recorded => Ok(()),
        Some(f) => Err(unsafe_db(
            db,
            format!(
                "it is store {f}, but {} says this database is store {recorded}: the file was replaced. \
                 Restore the right file, or remove {} to adopt this one",
                id_file.display(),
                id_file.display()
            ),
        )),
        None => Err(unsafe_db(
            db,
            format!(
                "database was emptied or replaced: its -wal file may have been deleted (it held everything written since \
                 the last checkpoint, and {} records store {recorded}). Restore it (with its -wal file) from a backup, \
                 or remove {} to start fresh",
                id_file.display(),
                id_file.display()
            ),
        )),
    }
}
