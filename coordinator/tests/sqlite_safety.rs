//! A coordinator's SQLite file, guarded (issue 8, acceptance 6): a second
//! coordinator on the same file is refused naming the PID that holds it; a
//! database that lost its `-wal` file (everything since the last checkpoint)
//! or was corrupted is refused with what to do, instead of being served as
//! if it were empty. Real files, real second opens.

mod common;

use std::path::Path;
use std::sync::Arc;

use sweep_coordinator::store::{self, SqliteStore, Store, StoreError};

fn grid() -> sweep_core::GridSpec {
    common::grid_spec("safe", 3, "[8, 16]", "/data")
}

fn url(db: &Path) -> String {
    format!("sqlite://{}", db.display())
}

/// Moves everything in `db`'s WAL into the main file (as SQLite does when
/// its last connection closes cleanly), so the file alone holds the data.
async fn checkpoint(db: &Path) {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).connect().await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

fn refusal(r: Result<Arc<dyn Store>, StoreError>) -> StoreError {
    match r {
        Ok(_) => panic!("the open should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_second_coordinator_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sweep.db");
    let first = store::open(&url(&db)).await.expect("first coordinator");
    first.submit(&grid(), 1).await.unwrap();

    let err = refusal(store::open(&url(&db)).await);
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&db.display().to_string()), "names the database: {msg}");
    assert!(msg.contains(&std::process::id().to_string()), "names the PID holding it: {msg}");
    assert!(msg.contains("another coordinator"), "{msg}");
    let lock = std::fs::read_to_string(dir.path().join("sweep.db.lock")).unwrap();
    assert_eq!(lock.trim(), std::process::id().to_string());

    // Readers beside the coordinator (tools, tests) still open it.
    let reader = SqliteStore::open(&url(&db)).await.expect("an unlocked reader");
    assert_eq!(reader.trials("safe").await.unwrap().len(), 6);

    // Once the first coordinator is gone the file is free again, with its data.
    drop(first);
    let second = store::open(&url(&db)).await.expect("the lock is released with the store");
    assert_eq!(second.trials("safe").await.unwrap().len(), 6);
}

#[tokio::test]
async fn a_database_whose_wal_was_deleted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sweep.db");
    let store = store::open(&url(&db)).await.unwrap();
    let id = store.store_id().to_owned();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sweep.db.id")).unwrap().trim(),
        id,
        "the identity is recorded beside the file"
    );
    store.submit(&grid(), 1).await.unwrap();
    let wal = dir.path().join("sweep.db-wal");
    assert!(std::fs::metadata(&wal).map(|m| m.len() > 0).unwrap_or(false), "the sweep is still in the WAL");

    // The machine dies; what is left on disk is the main file without its
    // WAL (a backup that forgot it, a cleanup that removed it). Copy the
    // files as they are at this instant, leaving the -wal behind.
    let moved = tempfile::tempdir().unwrap();
    let db2 = moved.path().join("sweep.db");
    std::fs::copy(&db, &db2).unwrap();
    std::fs::copy(dir.path().join("sweep.db.id"), moved.path().join("sweep.db.id")).unwrap();
    assert!(!moved.path().join("sweep.db-wal").exists());

    let err = refusal(store::open(&url(&db2)).await);
    assert!(matches!(err, StoreError::Unsafe { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("database was emptied or replaced"), "{msg}");
    assert!(msg.contains("-wal"), "{msg}");
    assert!(msg.contains(&moved.path().join("sweep.db.id").display().to_string()), "says which file to remove: {msg}");
    // Refused again on the next try: nothing was silently re-created.
    let again = refusal(store::open(&url(&db2)).await);
    assert!(again.to_string().contains("database was emptied or replaced"), "{again}");

    // The way out the message names: remove <db>.id to start fresh.
    std::fs::remove_file(moved.path().join("sweep.db.id")).unwrap();
    let fresh = store::open(&url(&db2)).await.expect("starts fresh once the identity file is removed");
    assert_ne!(fresh.store_id(), id);
    assert!(fresh.status(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_replaced_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sweep.db");
    let other = dir.path().join("other.db");
    drop(store::open(&url(&db)).await.unwrap());
    drop(store::open(&url(&other)).await.unwrap());
    checkpoint(&other).await;
    checkpoint(&db).await;
    std::fs::copy(&other, &db).unwrap();
    let err = refusal(store::open(&url(&db)).await);
    assert!(err.to_string().contains("the file was replaced"), "{err}");
}

#[tokio::test]
async fn a_deleted_database_starts_fresh() {
    // Deleting the database (all of it) is how a user asks for a fresh start.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sweep.db");
    let first = store::open(&url(&db)).await.unwrap();
    let id = first.store_id().to_owned();
    drop(first);
    for f in ["sweep.db", "sweep.db-wal", "sweep.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let fresh = store::open(&url(&db)).await.expect("a fresh database");
    assert_ne!(fresh.store_id(), id);
    assert_eq!(std::fs::read_to_string(dir.path().join("sweep.db.id")).unwrap().trim(), fresh.store_id());
}

#[tokio::test]
async fn a_corrupted_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sweep.db");
    {
        let store = store::open(&url(&db)).await.unwrap();
        store.submit(&grid(), 1).await.unwrap();
    }
    // Everything into the main file, then overwrite its pages past the first.
    checkpoint(&db).await;
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "the database has several pages");
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("sweep.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("sweep.db-shm"));
    let err = refusal(store::open(&url(&db)).await);
    assert!(matches!(err, StoreError::Unsafe { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&db.display().to_string()) && msg.contains("backup"), "{msg}");
}
