//! PostgreSQL backend, for coordinators that want a server database.
//!
//! Leasing uses `FOR UPDATE SKIP LOCKED`, so concurrent lease calls never
//! block on (or hand out) the same row. A group lease skips a cell-mate
//! another call is leasing: a cell may be split between callers, but no
//! trial goes to two.

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::StoreError;

pub struct PostgresStore {
    write: PgPool,
    /// The same pool as `write`: PostgreSQL handles concurrent writers itself.
    read: PgPool,
    /// `store_meta.store_id`.
    store_id: String,
    /// Shared settings by hash ([`super::settings_cache`]).
    settings: super::settings_cache::SettingsCache,
}

impl PostgresStore {
    /// The queue's head: highest priority, then oldest (none for a
    /// quarantined caller); a row another transaction is leasing is
    /// skipped, never waited for.
    const LEASE_SQL: &'static str = lease_sql!(concat!(
        "SELECT id FROM trials WHERE state = 'queued' AND ",
        not_quarantined!(),
        " ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED"
    ));
    /// The next queued trial of the head's group (`$8` sweep, `$9` cell key,
    /// `$10` settings hash, `$11` checkpoint step; NULL equals NULL).
    const LEASE_SAME_CELL_SQL: &'static str = lease_sql!(
        "SELECT id FROM trials WHERE state = 'queued' AND sweep_id = $8 AND cell_key = $9 \
         AND settings_hash IS NOT DISTINCT FROM $10 AND checkpoint_step IS NOT DISTINCT FROM $11 \
         ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
    );

    /// An adaptive sweep's grid, its row locked until the transaction ends:
    /// the trials of one stratum that finish at the same time are judged
    /// one after the other, each seeing the others' results (under READ
    /// COMMITTED each statement after the lock sees what committed before
    /// it), so the last one to finish always sees the stratum finished.
    const ADAPTIVE_SPEC_SQL: &'static str = adaptive_spec_sql!(" FOR UPDATE");
    const ADAPTIVE_SPEC_OF_LEASE_SQL: &'static str = adaptive_spec_of_lease_sql!(" FOR UPDATE OF s");
    /// A completion locks its sweep's row before the trial's, the order
    /// `cancel` and `submit` take them in, so they cannot deadlock.
    const PLAN_BEFORE_RESULT: bool = true;
    /// A metric batch locks its trial's row before its points, the order a
    /// completion takes them in (the row, then the last batch's points), so
    /// a batch and a completion of one trial cannot deadlock.
    const STATE_FOR_POINTS_SQL: &'static str = state_by_lease_sql!(" FOR UPDATE");

    /// An export, or a report's rows, read one snapshot (statements under
    /// READ COMMITTED would each see newer rows).
    const SNAPSHOT_SQL: Option<&'static str> = Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    /// PostgreSQL's planner finds the partial index by itself.
    /// A context key's parts are measured in characters (PostgreSQL's text
    /// holds no NUL; its bytes are the server's encoding).
    const TRIAL_ROWS_SQL: &'static str = super::analytics::sql::trial_rows_sql!("length(", ")");
    const KEY_LENGTH: super::rows::KeyLength = super::rows::KeyLength::Chars;
    const REPORT_POINTS_SQL: &'static str = super::analytics::sql::report_points_sql!("");
    /// Points in byte order of their text (not the database's collation).
    const ARCHIVE_POINTS_SQL: &'static str = super::archive::sql::points_page_sql!(" COLLATE \"C\"");

    /// Connects to `url` and migrates the database.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with explicit options (tests use this to pick a schema).
    pub async fn open_with(opts: PgConnectOptions) -> Result<Self, StoreError> {
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(30)).connect_with(opts).await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Self::upgrade_rows(&pool).await?;
        sqlx::query(super::sql::STORE_ID_INSERT).bind(super::new_store_id()).execute(&pool).await?;
        let (store_id,): (String,) = sqlx::query_as(super::sql::STORE_ID).fetch_one(&pool).await?;
        Ok(Self { write: pool.clone(), read: pool, store_id, settings: Default::default() })
    }
}

impl PostgresStore {
    /// Runs a hot write on a pooled connection, in a transaction of its own
    /// when `atomic` (PostgreSQL's own concurrency and commit batching
    /// serve concurrent writers: no group commit here).
    async fn write_op<T, F>(&self, atomic: bool, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        if atomic {
            let mut tx = self.write.begin().await?;
            let done = write(&mut tx).await?;
            tx.commit().await?;
            Ok(done)
        } else {
            let mut conn = self.write.acquire().await?;
            write(&mut conn).await
        }
    }
}

impl_store!(PostgresStore, sqlx::Postgres);
impl_analytics!(PostgresStore, sqlx::Postgres);
impl_archive!(PostgresStore, sqlx::Postgres);
impl_upgrade!(PostgresStore, sqlx::Postgres);
