//! What the store conformance suite (`tests/store_*.rs`) shares: the macro
//! that runs each test against both backends, the grids and records the
//! tests build, and small assertions.
//!
//! - SQLite: a fresh database file in a temporary folder per test.
//! - PostgreSQL: the server named by `SWEEP_TEST_POSTGRES_URL`; each test gets
//!   its own schema (random name, dropped afterwards, even when the test
//!   fails). Without the variable the PostgreSQL variants print
//!   `skipped: SWEEP_TEST_POSTGRES_URL not set` and pass, unless
//!   `SWEEP_REQUIRE_POSTGRES=1` is set (as in CI), in which case they fail.

use std::collections::HashMap;
use std::path::Path;

use sweep_coordinator::store::{self, MetricRow, StateCounts, Store, StoreError, TrialState, TrialSummary};
use sweep_core::{GridSpec, Level, TrialSpec};

// Every test file that includes `common` compiles this module; only the
// store conformance files use the macro.
/// `conformance_tests!(test_a, test_b, ...)` expands each listed test function
/// of the calling file (an `async fn(Ctx)`) into one `#[tokio::test]` per
/// backend: `sqlite::test_a` and `postgres::test_a`, each on a fresh store
/// (see [`super::run_test`]).
#[allow(unused_macros)]
macro_rules! conformance_tests {
    ($($test:ident),* $(,)?) => {
        $crate::common::conformance::conformance_tests!(@backend sqlite, make_sqlite_store; $($test),*);
        $crate::common::conformance::conformance_tests!(@backend postgres, make_pg_store; $($test),*);
    };
    (@backend $backend:ident, $make:ident; $($test:ident),*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    $crate::common::run_test($crate::common::$make, super::$test).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use conformance_tests;

/// A fixed "now": 2023-11-14T22:13:20Z.
pub(crate) const T0: i64 = 1_700_000_000_000;
pub(crate) const TTL: i64 = 30_000;

pub(crate) fn parse(toml: &str) -> GridSpec {
    GridSpec::parse(toml, Path::new("/tmp/grid.toml")).unwrap_or_else(|e| panic!("test grid is invalid: {e}\n{toml}"))
}

/// A grid with the given sweep name, factor values (TOML right-hand sides),
/// seeds and `[run]` settings.
pub(crate) fn grid(
    name: &str,
    depth: &str,
    skip: &str,
    init: &str,
    batchnorm: &str,
    seeds: &str,
    run: &str,
) -> GridSpec {
    parse(&format!(
        r#"
name = "{name}"
seeds = {seeds}

[grid]
depth = {depth}
skip = {skip}
init = {init}
batchnorm = {batchnorm}

[train]
epochs = 2
batch_size = 4
optimizer = "sgd"
lr = 1e-3
momentum = 0.9
weight_decay = 0.0
log_every = 100
augment = false

[data]
dataset = "cifar10"
path = "data/cifar-10-batches-bin"
train_subset = 1000
test_subset = 500

[run]
{run}
"#
    ))
}

/// `cells` cells (depths 8, 16, ...; every other factor fixed) x `seeds` seeds.
pub(crate) fn simple_grid(name: &str, cells: usize, seeds: usize, run: &str) -> GridSpec {
    let depths: Vec<String> = (1..=cells).map(|i| (i * 8).to_string()).collect();
    grid(name, &format!("[{}]", depths.join(", ")), "true", r#""default""#, "true", &seeds.to_string(), run)
}

/// The issue's example: 4 x 2 x 3 x 2 = 48 cells.
pub(crate) fn issue_example(seeds: &str) -> GridSpec {
    let example = include_str!("../../../examples/skip-ablation.toml");
    assert!(example.contains("seeds = [0, 1, 2]"));
    parse(&example.replacen("seeds = [0, 1, 2]", &format!("seeds = {seeds}"), 1))
}

/// Replaces the levels of factor `name` (which the grid has).
pub(crate) fn set_levels(spec: &mut GridSpec, name: &str, levels: Vec<Level>) {
    spec.factors.iter_mut().find(|f| f.name == name).expect("the grid has the factor").levels = levels;
}

pub(crate) fn ids(spec: &GridSpec) -> Vec<String> {
    spec.expand().iter().map(|t| t.id(&spec.name).0).collect()
}

pub(crate) fn id_of(spec: &GridSpec, t: &TrialSpec) -> String {
    t.id(&spec.name).0
}

pub(crate) async fn counts(store: &dyn Store, sweep: &str) -> StateCounts {
    let status = store.status(Some(sweep)).await.expect("status");
    assert_eq!(status.len(), 1, "status of one sweep returns one entry");
    assert_eq!(status[0].sweep_id, sweep);
    status[0].counts
}

pub(crate) async fn trial_map(store: &dyn Store, sweep: &str) -> HashMap<String, store::TrialRecord> {
    store.trials(sweep).await.expect("trials").into_iter().map(|t| (t.trial_id.clone(), t)).collect()
}

pub(crate) fn point(name: &str, step: i64, epoch: u32, value: f64) -> MetricRow {
    MetricRow { step, epoch, name: name.to_owned(), value }
}

pub(crate) fn summary(acc: f64, loss: f64) -> TrialSummary {
    TrialSummary {
        final_train_loss: Some(loss),
        final_test_loss: Some(loss * 1.5),
        final_test_accuracy: Some(acc),
        best_test_accuracy: Some(acc + 0.01),
        wall_seconds: 12.5,
    }
}

pub(crate) fn assert_lease_lost<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::LeaseLost(_)) => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

pub(crate) fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// A trial's state, looked up by ID.
pub(crate) trait StoreExt {
    async fn trial_state(&self, trial_id: &str, sweep: &str) -> TrialState;
}

impl StoreExt for dyn Store {
    async fn trial_state(&self, trial_id: &str, sweep: &str) -> TrialState {
        self.trials(sweep)
            .await
            .expect("trials")
            .into_iter()
            .find(|t| t.trial_id == trial_id)
            .unwrap_or_else(|| panic!("trial {trial_id} not in sweep {sweep}"))
            .state
    }
}
