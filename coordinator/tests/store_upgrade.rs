//! Upgrading a database written before factors were data (schema v3,
//! migrations 0001-0003) on both backends: migration 0004 and the backfill
//! at open rewrite every old row (both old stored forms) without changing
//! its trial ID, metrics or state, and resubmitting the old grid afterwards
//! adds nothing.
//!
//! The old rows are the upgrade fixture (`cli/tests/fixtures/upgrade`):
//! sweep `lecture` (own part + shared settings) and sweep `legacy` (the
//! whole spec in `spec_json`), trials in every state, with metrics.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use common::{make_pg_store, pg_options, Reopen};
use sweep_coordinator::store::{PostgresStore, SqliteStore, Store, TrialState};
use sweep_core::GridSpec;

const FIXTURE: &str = include_str!("../../cli/tests/fixtures/upgrade/schema_v3.sql");
const SWEEPS: [&str; 2] = ["lecture", "legacy"];
const T0: i64 = 1_700_000_000_000;

/// The grid both fixture sweeps were submitted with.
fn old_grid(name: &str) -> GridSpec {
    let toml = format!(
        r#"
name = "{name}"
seeds = [0, 1, 2]
[grid]
depth = [8, 32]
skip = [true, false]
init = ["default", "kaiming_normal", "xavier_uniform"]
batchnorm = [true, false]
[train]
epochs = 2
batch_size = 4
optimizer = "sgd"
lr = 0.01
momentum = 0.9
weight_decay = 0.0
log_every = 2000
augment = false
[data]
dataset = "cifar10"
path = "/data/cifar-10-batches-bin"
train_subset = 512
test_subset = 256
"#
    );
    GridSpec::parse(&toml, Path::new("/g.toml")).unwrap()
}

/// The migrations up to schema v3, as sqlx records them (so the store's own
/// migrator later applies only 0004).
fn v3(mut m: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    m.migrations = m.migrations.iter().filter(|x| x.version <= 3).cloned().collect::<Vec<_>>().into();
    m
}

/// What the old database holds, read before the upgrade: trial ID -> (sweep,
/// state), and the number of metric points.
type Before = (HashMap<String, (String, String)>, i64);

const TRIAL_ROWS: &str = "SELECT id, sweep_id, state FROM trials";
const METRIC_COUNT: &str = "SELECT COUNT(*) FROM metrics";

async fn sqlite_v3(url: &str) -> Before {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;
    let opts = SqliteConnectOptions::from_str(url).unwrap().create_if_missing(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
    v3(sqlx::migrate!("../migrations/sqlite")).run(&pool).await.unwrap();
    sqlx::raw_sql(FIXTURE).execute(&pool).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(TRIAL_ROWS).fetch_all(&pool).await.unwrap();
    let (metrics,): (i64,) = sqlx::query_as(METRIC_COUNT).fetch_one(&pool).await.unwrap();
    pool.close().await;
    (rows.into_iter().map(|(id, sweep, state)| (id, (sweep, state))).collect(), metrics)
}

async fn postgres_v3(url: &str, schema: &str) -> Before {
    use sqlx::postgres::PgPoolOptions;
    let pool = PgPoolOptions::new().max_connections(1).connect_with(pg_options(url, schema)).await.unwrap();
    v3(sqlx::migrate!("../migrations/postgres")).run(&pool).await.unwrap();
    sqlx::raw_sql(FIXTURE).execute(&pool).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(TRIAL_ROWS).fetch_all(&pool).await.unwrap();
    let (metrics,): (i64,) = sqlx::query_as(METRIC_COUNT).fetch_one(&pool).await.unwrap();
    pool.close().await;
    (rows.into_iter().map(|(id, sweep, state)| (id, (sweep, state))).collect(), metrics)
}

async fn check_upgraded(before: Before, open: impl AsyncFn() -> Arc<dyn Store>) {
    let (old, metric_points) = before;
    assert_eq!(old.len(), 144, "the fixture's trials");
    let store = open().await;
    let mut points = 0;
    for sweep in SWEEPS {
        let grid = old_grid(sweep);
        let trials = store.trials(sweep).await.unwrap();
        assert_eq!(trials.len(), 72, "{sweep}");
        for t in &trials {
            let (s, state) = &old[&t.trial_id];
            assert_eq!(
                (s.as_str(), t.state.as_str()),
                (sweep, state.as_str()),
                "trial {} keeps its ID and state",
                t.trial_id
            );
            points += store.metrics(&t.trial_id).await.unwrap().len() as i64;
        }
        // Cells and cell keys in the current form: those of the grid.
        let results = store.trial_results(sweep).await.unwrap();
        assert_eq!(results.len(), 72);
        let want: HashMap<String, String> =
            grid.expand().iter().map(|t| (t.cell.canonical(), t.cell_key(sweep))).collect();
        for r in &results {
            assert_eq!(want.get(&r.cell.canonical()), Some(&r.cell_key), "{sweep}: cell {:?}", r.cell);
        }
        assert_eq!(results.iter().map(|r| r.cell.canonical()).collect::<BTreeSet<_>>().len(), 24);
        // Running trials read back in the current form.
        for r in &store.status(Some(sweep)).await.unwrap()[0].running {
            assert!(grid.expand().contains(&r.spec), "{sweep}: running {}: {:?}", r.trial_id, r.spec);
        }
        // The old grid, resubmitted: nothing added.
        let out = store.submit(&grid, T0).await.unwrap();
        assert_eq!((out.added_trials, out.total_trials), (0, 72), "{sweep}: resubmitting the old grid");
    }
    assert_eq!(points, metric_points, "every metric point kept, under the old trial IDs");

    // A queued old row leases under its old ID with the spec its identity
    // hashes (the whole spec, settings and all).
    let l = store.lease("w", T0, 30_000).await.unwrap().expect("queued trials remain");
    let grid = old_grid(&l.sweep_id);
    assert!(grid.expand().contains(&l.spec), "the leased spec is one of the grid's: {:?}", l.spec);
    assert!(old.contains_key(&l.trial_id), "leased under its old ID");
    assert_eq!(old[&l.trial_id].1, TrialState::Queued.as_str());

    // Opening again changes nothing (the backfill ran once).
    let snapshot: Vec<_> = [store.trials("lecture").await.unwrap(), store.trials("legacy").await.unwrap()].concat();
    drop(store);
    let again = open().await;
    let after: Vec<_> = [again.trials("lecture").await.unwrap(), again.trials("legacy").await.unwrap()].concat();
    assert_eq!(after, snapshot);
    for sweep in SWEEPS {
        assert_eq!(again.submit(&old_grid(sweep), T0 + 1).await.unwrap().added_trials, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_v3_database_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v3.db").display());
    let before = sqlite_v3(&url).await;
    check_upgraded(before, async || Arc::new(SqliteStore::open(&url).await.expect("open the v3 database")) as _).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_v3_database_upgrades_in_place() {
    // A fresh schema (the harness's store on it is dropped unused: the
    // schema is emptied and rebuilt at v3).
    let Some((ctx, guard)) = make_pg_store().await else { return };
    let Reopen::Postgres { url, schema } = ctx.reopen.clone() else { unreachable!() };
    drop(ctx);
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE; CREATE SCHEMA {schema}")).execute(&mut c).await.unwrap();
    }
    let before = postgres_v3(&url, &schema).await;
    let opts = pg_options(&url, &schema);
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(check_upgraded(before, async || {
        Arc::new(PostgresStore::open_with(opts.clone()).await.expect("open the v3 database")) as _
    })))
    .await;
    guard.cleanup().await;
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
