//! SQLite backend: the embedded default.
//!
//! WAL mode so readers never block the writer; a busy timeout as a second
//! line of defence; and all writes go through a pool of exactly one
//! connection, so two writers never race for the file lock (the cause of
//! "database is locked" in tools that let every process write).

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::group_commit::GroupCommit;
use super::sqlite_guard as guard;
use super::StoreError;

pub struct SqliteStore {
    /// One connection: the only writer.
    write: SqlitePool,
    /// Readers (WAL lets them run beside the writer).
    read: SqlitePool,
    /// `store_meta.store_id`.
    store_id: String,
    /// Shared settings by hash ([`super::settings_cache`]).
    settings: super::settings_cache::SettingsCache,
    /// The hot writes' shared transactions ([`super::group_commit`]).
    group: GroupCommit<sqlx::Sqlite>,
    /// `<db>.lock`, held while a coordinator has the file open
    /// ([`SqliteStore::open_exclusive`]).
    _lock: Option<std::fs::File>,
}

impl SqliteStore {
    /// The queue's head: highest priority, then oldest (none for a
    /// quarantined caller). The single writer connection serialises leases.
    const LEASE_SQL: &'static str = lease_sql!(concat!(
        "SELECT id FROM trials WHERE state = 'queued' AND ",
        not_quarantined!(),
        " ORDER BY priority DESC, seq LIMIT 1"
    ));
    /// The next queued trial of the head's group (`$8` sweep, `$9` cell key,
    /// `$10` settings hash, `$11` checkpoint step; `IS`: NULL equals NULL).
    const LEASE_SAME_CELL_SQL: &'static str = lease_sql!(
        "SELECT id FROM trials WHERE state = 'queued' AND sweep_id = $8 AND cell_key = $9 \
         AND settings_hash IS $10 AND checkpoint_step IS $11 ORDER BY seq LIMIT 1"
    );

    /// An adaptive sweep's grid (the single writer connection serialises
    /// the transactions that judge its strata).
    const ADAPTIVE_SPEC_SQL: &'static str = adaptive_spec_sql!("");
    const ADAPTIVE_SPEC_OF_LEASE_SQL: &'static str = adaptive_spec_of_lease_sql!("");
    /// No row locks to order: a completion reads its sweep's plan only when
    /// the stored result says the sweep has one (one statement fewer).
    const PLAN_BEFORE_RESULT: bool = false;
    /// One writer: nothing to lock.
    const STATE_FOR_POINTS_SQL: &'static str = state_by_lease_sql!("");

    /// A read transaction in WAL mode is one snapshot already.
    const SNAPSHOT_SQL: Option<&'static str> = None;
    /// Without statistics SQLite's planner would walk every trial's points
    /// by the primary key: the report's points name their partial index.
    /// A context key's parts are measured in bytes: `length` of a text
    /// stops at a NUL, of a blob it does not.
    const TRIAL_ROWS_SQL: &'static str = super::analytics::sql::trial_rows_sql!("length(CAST(", " AS BLOB))");
    const KEY_LENGTH: super::rows::KeyLength = super::rows::KeyLength::Bytes;
    const REPORT_POINTS_SQL: &'static str = super::analytics::sql::report_points_sql!("INDEXED BY metrics_report");
    /// SQLite compares text byte by byte already.
    const ARCHIVE_POINTS_SQL: &'static str = super::archive::sql::points_page_sql!("");

    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`,
    /// or `sqlite::memory:` for a private in-memory store) and migrates it.
    ///
    /// Takes no lock: tools and tests may read a coordinator's database
    /// beside it. A coordinator opens with [`SqliteStore::open_exclusive`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = Self::options(url)?;
        Self::open_with(opts, url.contains(":memory:"), None).await
    }

    /// Opens the database for a coordinator: takes `<db>.lock` (a second
    /// coordinator on the same file is refused, naming the PID holding it),
    /// runs `PRAGMA quick_check` on an existing file, and refuses a database
    /// that lost the identity recorded in `<db>.id` (e.g. its `-wal` file was
    /// deleted). See [`super::sqlite_guard`].
    pub async fn open_exclusive(url: &str) -> Result<Self, StoreError> {
        let opts = Self::options(url)?;
        if url.contains(":memory:") {
            return Self::open_with(opts, true, None).await;
        }
        let db = opts.get_filename().to_owned();
        let lock = guard::lock(&db)?;
        let exists = std::fs::metadata(&db).is_ok();
        if exists {
            guard::check_existing(&db, &opts).await?;
        } else if let Some(old) = guard::recorded_id(&db)? {
            tracing::warn!(
                database = %db.display(),
                old_store = %old,
                "the database file is gone (deleted on purpose?): starting a fresh store with a new identity"
            );
        }
        let store = Self::open_with(opts, false, Some(lock)).await?;
        if guard::recorded_id(&db)?.as_deref() != Some(store.store_id.as_str()) {
            guard::record_id(&db, &store.store_id)?;
        }
        Ok(store)
    }

    fn options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
        let memory = url.contains(":memory:");
        Ok(SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory { SqliteJournalMode::Memory } else { SqliteJournalMode::Wal })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true))
    }

    async fn open_with(
        opts: SqliteConnectOptions,
        memory: bool,
        lock: Option<std::fs::File>,
    ) -> Result<Self, StoreError> {
        // A connection to a local file cannot go stale: no ping before
        // each use (it would be one more trip to the connection's thread).
        let write = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&write).await?;
        Self::upgrade_rows(&write).await?;
        sqlx::query(super::sql::STORE_ID_INSERT).bind(super::new_store_id()).execute(&write).await?;
        let (store_id,): (String,) = sqlx::query_as(super::sql::STORE_ID).fetch_one(&write).await?;
        // An in-memory database exists per connection: readers must share the
        // writer's connection.
        let read = if memory {
            write.clone()
        } else {
            // Reads may return 100,000 rows (a report): a deep row buffer
            // lets the connection's thread run ahead of the reader instead
            // of waiting for it every 50 rows (sqlx's default).
            SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(4)
                .connect_with(opts.read_only(true).row_buffer_size(4096))
                .await?
        };
        let group = GroupCommit::start(write.clone());
        Ok(Self { write, read, store_id, settings: Default::default(), group, _lock: lock })
    }
}

impl SqliteStore {
    /// Runs a hot write (a lease, heartbeat, metric batch or completion) in
    /// the group commit's next transaction ([`super::group_commit`]); every
    /// batch is one transaction, so `_atomic` asks for nothing more.
    async fn write_op<T, F>(&self, _atomic: bool, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        self.group.run(write).await
    }
}

impl_store!(SqliteStore, sqlx::Sqlite);
impl_analytics!(SqliteStore, sqlx::Sqlite);
impl_archive!(SqliteStore, sqlx::Sqlite);
impl_upgrade!(SqliteStore, sqlx::Sqlite);
