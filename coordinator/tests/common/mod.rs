//! The backend harness shared by the store test suites: a fresh store per
//! test on SQLite (temp file) or PostgreSQL (own schema, dropped afterwards
//! even when the test panics), and the runner that guarantees the cleanup;
//! and what the server tests share: a small grid, a SQLite store in a temp
//! folder, a loopback listener.
#![allow(dead_code)]

pub(crate) mod conformance;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::Arc;

use futures::FutureExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use sweep_coordinator::store::{PostgresStore, SqliteStore, Store};

pub(crate) const PG_URL_VAR: &str = "SWEEP_TEST_POSTGRES_URL";
pub(crate) const PG_REQUIRE_VAR: &str = "SWEEP_REQUIRE_POSTGRES";

/// What a test gets: the store under test, and a way to open a second store
/// on the same database (to check that state survives a restart).
#[derive(Clone)]
pub(crate) struct Ctx {
    pub store: Arc<dyn Store>,
    pub reopen: Reopen,
}

#[derive(Clone)]
pub(crate) enum Reopen {
    Sqlite { url: String },
    Postgres { url: String, schema: String },
}

impl Ctx {
    pub(crate) async fn reopen(&self) -> Arc<dyn Store> {
        match &self.reopen {
            Reopen::Sqlite { url } => Arc::new(SqliteStore::open(url).await.expect("reopen sqlite store")),
            Reopen::Postgres { url, schema } => {
                Arc::new(PostgresStore::open_with(pg_options(url, schema)).await.expect("reopen postgres store"))
            }
        }
    }
}

/// Owns what a backend needs while a test runs, and cleans it up afterwards.
pub(crate) enum Guard {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Guard {
    pub(crate) async fn cleanup(self) {
        match self {
            Guard::Sqlite(dir) => drop(dir),
            Guard::Postgres { url, schema } => {
                // Best effort: a leftover schema is harmless, only untidy.
                match sqlx::PgConnection::connect(&url).await {
                    Ok(mut conn) => {
                        if let Err(e) =
                            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await
                        {
                            eprintln!("warning: could not drop test schema {schema}: {e}");
                        }
                        let _ = conn.close().await;
                    }
                    Err(e) => eprintln!("warning: could not connect to drop test schema {schema}: {e}"),
                }
            }
        }
    }
}

pub(crate) fn pg_options(url: &str, schema: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(url)
        .unwrap_or_else(|e| panic!("{PG_URL_VAR}={url:?} is not a PostgreSQL URL: {e}"))
        .options([("search_path", schema)])
}

pub(crate) async fn make_sqlite_store() -> Option<(Ctx, Guard)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("sweep.db").display());
    let store = SqliteStore::open(&url).await.expect("open sqlite store");
    Some((Ctx { store: Arc::new(store), reopen: Reopen::Sqlite { url } }, Guard::Sqlite(dir)))
}

pub(crate) async fn make_pg_store() -> Option<(Ctx, Guard)> {
    let url = match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            if std::env::var(PG_REQUIRE_VAR).is_ok_and(|v| v == "1") {
                panic!("{PG_REQUIRE_VAR}=1 but {PG_URL_VAR} is not set: the PostgreSQL conformance tests cannot run");
            }
            println!("skipped: {PG_URL_VAR} not set");
            return None;
        }
    };
    let schema = format!("sweep_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {PG_URL_VAR}={url:?}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await.expect("create test schema");
    let _ = admin.close().await;
    let guard = Guard::Postgres { url: url.clone(), schema: schema.clone() };
    match PostgresStore::open_with(pg_options(&url, &schema)).await {
        Ok(store) => Some((Ctx { store: Arc::new(store), reopen: Reopen::Postgres { url, schema } }, guard)),
        Err(e) => {
            guard.cleanup().await;
            panic!("open postgres store: {e}");
        }
    }
}

/// Runs one test body against one backend, cleaning up whether it passes or
/// panics.
pub(crate) async fn run_test<M, MF, T, TF>(make: M, test: T)
where
    M: FnOnce() -> MF,
    MF: Future<Output = Option<(Ctx, Guard)>>,
    T: FnOnce(Ctx) -> TF,
    TF: Future<Output = ()>,
{
    let Some((ctx, guard)) = make().await else { return };
    let result = AssertUnwindSafe(test(ctx)).catch_unwind().await;
    guard.cleanup().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A small grid: `seeds` seeds over `depth` (a TOML value: `8`, `[8, 16]`),
/// skip connections, default init, batch norm, data at `path`.
pub(crate) fn grid_spec(name: &str, seeds: usize, depth: &str, path: &str) -> sweep_core::GridSpec {
    let toml = format!(
        "name = \"{name}\"\nseeds = {seeds}\n[grid]\ndepth = {depth}\nskip = true\ninit = \"default\"\nbatchnorm = true\n[data]\npath = \"{path}\"\n"
    );
    sweep_core::GridSpec::parse(&toml, std::path::Path::new("/g.toml")).unwrap()
}

/// A SQLite store (`s.db`) in a fresh temp folder, and the folder.
pub(crate) async fn temp_sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    (dir, store)
}

/// A listener on an ephemeral port of 127.0.0.1, and its address.
pub(crate) async fn loopback_listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}
