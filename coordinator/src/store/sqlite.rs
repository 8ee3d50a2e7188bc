//! SQLite backend: the embedded default.
//!
//! WAL mode so readers never block the writer; a busy timeout as a second
//! line of defence; and all writes go through a pool of exactly one
//! connection, so two writers never race for the file lock (the cause of
//! "database is locked" in tools that let every process write).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::StoreError;

pub struct SqliteStore {
    /// One connection: the only writer.
    write: SqlitePool,
    /// Readers (WAL lets them run beside the writer).
    read: SqlitePool,
}

impl SqliteStore {
    const LEASE_SQL: &'static str = "UPDATE trials SET state = 'running', lease_id = $1, worker_id = $2, lease_expires_ms = $3, \
         attempts = attempts + 1, started_ms = COALESCE(started_ms, $4), \
         progress_epoch = NULL, progress_step = NULL, progress_loss = NULL \
         WHERE id = (SELECT id FROM trials WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT 1) AND state = 'queued' \
         RETURNING id, sweep_id, spec_json, attempts";

    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`,
    /// or `sqlite::memory:` for a private in-memory store) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:");
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&write).await?;
        // An in-memory database exists per connection: readers must share the
        // writer's connection.
        let read = if memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.read_only(true))
                .await?
        };
        Ok(Self { write, read })
    }
}

impl_store!(SqliteStore, sqlx::Sqlite);
impl_analytics!(SqliteStore, sqlx::Sqlite);
