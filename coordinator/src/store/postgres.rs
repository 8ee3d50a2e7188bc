//! PostgreSQL backend, for coordinators that want a server database.
//!
//! Leasing uses `FOR UPDATE SKIP LOCKED`, so concurrent lease calls never
//! block on (or hand out) the same row.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::StoreError;

pub struct PostgresStore {
    write: PgPool,
    /// The same pool as `write`: PostgreSQL handles concurrent writers itself.
    read: PgPool,
    /// `store_meta.store_id`.
    store_id: String,
}

impl PostgresStore {
    const LEASE_SQL: &'static str = "UPDATE trials SET state = 'running', lease_id = $1, worker_id = $2, lease_expires_ms = $3, \
         attempts = attempts + 1, started_ms = COALESCE(started_ms, $4), holder = $5, device = $6, threads = $7, \
         progress_epoch = NULL, progress_step = NULL, progress_loss = NULL \
         WHERE id = (SELECT id FROM trials WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
         AND state = 'queued' \
         RETURNING id, sweep_id, spec_json, settings_hash, attempts, checkpoint_step";

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
        Ok(Self { write: pool.clone(), read: pool, store_id })
    }
}

impl_store!(PostgresStore, sqlx::Postgres);
impl_analytics!(PostgresStore, sqlx::Postgres);
impl_upgrade!(PostgresStore, sqlx::Postgres);
