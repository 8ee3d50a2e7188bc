//! Conformance tests of the set-based `Analytics` queries, against SQLite and
//! PostgreSQL alike (one `#[tokio::test]` per backend and test).
//!
//! PostgreSQL: the server named by `SWEEP_TEST_POSTGRES_URL`, one fresh schema
//! per test (dropped afterwards). Without the variable the PostgreSQL
//! variants print `skipped: ...` and pass, unless `SWEEP_REQUIRE_POSTGRES=1`.
//! (The harness is shared with the store conformance suite (`store_*.rs`): `tests/common`.)

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{make_pg_store, make_sqlite_store, run_test, Ctx};
use sweep_coordinator::store::{FinalOutcome, MetricRow, Store, StoreError, TrialState, TrialSummary};
use sweep_core::{Cell, GridSpec, Level, TrialResult};

macro_rules! analytics_tests {
    ($backend:ident, $make:ident; $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::run_test(super::$make, |ctx: super::Ctx| super::$test(ctx.store)).await;
                }
            )*
        }
    };
}

analytics_tests!(sqlite, make_sqlite_store;
    trial_results_has_one_row_per_trial,
    curves_aggregate_succeeded_trials_per_cell_and_step,
    grad_flow_takes_each_trials_first_and_last_step,
    unknown_sweep_is_not_found,
);
analytics_tests!(postgres, make_pg_store;
    trial_results_has_one_row_per_trial,
    curves_aggregate_succeeded_trials_per_cell_and_step,
    grad_flow_takes_each_trials_first_and_last_step,
    unknown_sweep_is_not_found,
);

// ---------------------------------------------------------------------------

const T0: i64 = 1_700_000_000_000;
const TTL: i64 = 60_000;

fn grid(name: &str) -> GridSpec {
    let text = format!(
        r#"
name = "{name}"
seeds = 3
[grid]
depth = [8, 16]
skip = [true, false]
init = "default"
batchnorm = true
[data]
path = "data"
"#
    );
    GridSpec::parse(&text, Path::new("/tmp/grid.toml")).expect("valid grid")
}

fn point(name: &str, step: i64, value: f64) -> MetricRow {
    MetricRow { step, epoch: 1, name: name.to_owned(), value }
}

/// A value that depends on the cell and seed, so every aggregate is checkable.
fn value(depth: u32, skip: bool, seed: u64, step: i64) -> f64 {
    depth as f64 / 10.0 + if skip { 0.0 } else { 1.0 } + seed as f64 * 0.25 + step as f64 * 0.01
}

/// Submits the grid and finishes its 12 trials: depth 16 without skips,
/// seed 2, diverges; depth 16 without skips, seed 1, stays running; every
/// other trial succeeds. Points are stored for every leased trial (so the
/// queries must filter on state).
async fn populate(store: &Arc<dyn Store>, name: &str, points: impl Fn(u32, bool, u64) -> Vec<MetricRow>) {
    store.submit(&grid(name), T0).await.unwrap();
    while let Some(lease) = store.lease("w", T0 + 1, TTL).await.unwrap() {
        let s = &lease.spec;
        let (d, k) = (depth(&s.cell), skip(&s.cell));
        store.put_metrics(&lease.lease_id, &points(d, k, s.seed), None).await.unwrap();
        if d == 16 && !k && s.seed == 1 {
            continue;
        }
        let outcome = if d == 16 && !k && s.seed == 2 { FinalOutcome::Diverged } else { FinalOutcome::Succeeded };
        let summary = TrialSummary {
            final_train_loss: Some(value(d, k, s.seed, 0)),
            final_test_loss: None,
            final_test_accuracy: Some(value(d, k, s.seed, 1) / 10.0),
            best_test_accuracy: Some(value(d, k, s.seed, 2) / 10.0),
            wall_seconds: 3.5,
        };
        store.complete(&lease.lease_id, outcome, &summary, T0 + 2).await.unwrap();
    }
}

/// The grid's cell with these levels of its two varied factors.
fn levels(depth: u32, skip: bool) -> Cell {
    [
        ("batchnorm".to_owned(), Level::Bool(true)),
        ("depth".to_owned(), Level::Int(depth.into())),
        ("init".to_owned(), Level::Str("default".into())),
        ("skip".to_owned(), Level::Bool(skip)),
    ]
    .into_iter()
    .collect()
}

fn depth(c: &Cell) -> u32 {
    c.get("depth").and_then(Level::as_int).expect("an integer depth") as u32
}

fn skip(c: &Cell) -> bool {
    c.get("skip").and_then(Level::as_bool).expect("a boolean skip")
}

#[track_caller]
fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
}

async fn trial_results_has_one_row_per_trial(store: Arc<dyn Store>) {
    populate(&store, "finals", |_, _, _| Vec::new()).await;
    let rows = store.trial_results("finals").await.unwrap();
    assert_eq!(rows.len(), 12);
    // Grouped by cell (in the order of its canonical JSON), then by seed.
    let order: Vec<(String, u64)> = rows.iter().map(|r| (r.cell.canonical(), r.seed)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert!(rows.iter().all(|r| grid("finals").expand().iter().any(|t| t.cell == *r.cell)), "the grid's cells");
    let by: BTreeMap<(u32, bool, u64), &TrialResult> =
        rows.iter().map(|r| ((depth(&r.cell), skip(&r.cell), r.seed), r)).collect();
    assert_eq!(by[&(16, false, 1)].state, TrialState::Running);
    assert_eq!(by[&(16, false, 1)].final_test_accuracy, None);
    assert_eq!(by[&(16, false, 2)].state, TrialState::Diverged);
    let r = by[&(8, true, 2)];
    assert_eq!(r.state, TrialState::Succeeded);
    assert_eq!(*r.cell, levels(8, true));
    close(r.final_train_loss.unwrap(), value(8, true, 2, 0));
    close(r.final_test_accuracy.unwrap(), value(8, true, 2, 1) / 10.0);
    close(r.best_test_accuracy.unwrap(), value(8, true, 2, 2) / 10.0);
    assert_eq!(r.final_test_loss, None);
    assert_eq!(r.wall_seconds, Some(3.5));
    // Seeds of one cell share the cell key; cells differ.
    assert_eq!(by[&(8, true, 0)].cell_key, by[&(8, true, 1)].cell_key);
    assert_ne!(by[&(8, true, 0)].cell_key, by[&(8, false, 0)].cell_key);
}

async fn curves_aggregate_succeeded_trials_per_cell_and_step(store: Arc<dyn Store>) {
    populate(&store, "curves", |d, s, seed| {
        let mut v: Vec<MetricRow> = (1..=3).map(|k| point("train_loss", k * 10, value(d, s, seed, k * 10))).collect();
        v.push(point("test_loss", 30, 9.0));
        // Seed 0 logged one more step than the others.
        if seed == 0 {
            v.push(point("train_loss", 40, value(d, s, seed, 40)));
        }
        v
    })
    .await;
    let curve = store.curve("curves", "train_loss", false).await.unwrap();
    // 4 cells x steps 10, 20, 30, 40.
    assert_eq!(curve.len(), 16);
    for c in &curve {
        let seeds: Vec<u64> = match (depth(&c.cell), skip(&c.cell), c.step) {
            (16, false, 40) => vec![0],
            (16, false, _) => vec![0], // seed 1 running, seed 2 diverged
            (_, _, 40) => vec![0],
            _ => vec![0, 1, 2],
        };
        let xs: Vec<f64> = seeds.iter().map(|&s| value(depth(&c.cell), skip(&c.cell), s, c.step)).collect();
        assert_eq!(c.n, xs.len() as u64, "{c:?}");
        close(c.sum, xs.iter().sum());
        close(c.sum_sq, xs.iter().map(|x| x * x).sum());
    }
    let steps: Vec<i64> = curve.iter().filter(|c| c.cell == levels(8, true)).map(|c| c.step).collect();
    assert_eq!(steps, vec![10, 20, 30, 40]);
    assert!(store.curve("curves", "no_such_metric", false).await.unwrap().is_empty());
}

async fn grad_flow_takes_each_trials_first_and_last_step(store: Arc<dyn Store>) {
    populate(&store, "grads", |d, s, seed| {
        let mut v = Vec::new();
        // Seed 2 logs from step 20 on; the others from step 10. Block01 is
        // logged once only (first = last).
        let first = if seed == 2 { 2 } else { 1 };
        for k in first..=3 {
            v.push(point("grad_norm/stem", k * 10, value(d, s, seed, k * 10)));
        }
        v.push(point("grad_norm/block01", 50, 2.0));
        // Look-alikes that must not count.
        v.push(point("grad_normX/stem", 10, 99.0));
        v.push(point("grad_norm_total", 10, 99.0));
        v.push(point("train_loss", 10, 99.0));
        v
    })
    .await;
    let g = store.grad_flow("grads").await.unwrap();
    // 4 cells x 2 blocks x 2 phases.
    assert_eq!(g.len(), 16, "{g:#?}");
    for a in &g {
        let seeds: Vec<u64> = if a.cell == levels(16, false) { vec![0] } else { vec![0, 1, 2] };
        assert_eq!(a.n, seeds.len() as u64, "{a:?}");
        match a.block.as_str() {
            "block01" => {
                close(a.sum, 2.0 * seeds.len() as f64);
                close(a.mean_step, 50.0);
            }
            "stem" => {
                let steps: Vec<i64> = seeds
                    .iter()
                    .map(|&s| {
                        if a.last {
                            30
                        } else if s == 2 {
                            20
                        } else {
                            10
                        }
                    })
                    .collect();
                let xs: Vec<f64> =
                    seeds.iter().zip(&steps).map(|(&s, &k)| value(depth(&a.cell), skip(&a.cell), s, k)).collect();
                close(a.sum, xs.iter().sum());
                close(a.sum_sq, xs.iter().map(|x| x * x).sum());
                close(a.mean_step, steps.iter().sum::<i64>() as f64 / steps.len() as f64);
            }
            other => panic!("unexpected block {other:?}"),
        }
    }
    assert!(g.iter().any(|a| a.last) && g.iter().any(|a| !a.last));
}

async fn unknown_sweep_is_not_found(store: Arc<dyn Store>) {
    assert!(matches!(store.trial_results("nope").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.curve("nope", "train_loss", false).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.grad_flow("nope").await, Err(StoreError::NotFound(_))));
    // A known sweep without metrics is empty, not an error.
    store.submit(&grid("empty"), T0).await.unwrap();
    assert!(store.curve("empty", "train_loss", false).await.unwrap().is_empty());
    assert!(store.grad_flow("empty").await.unwrap().is_empty());
    assert_eq!(store.trial_results("empty").await.unwrap().len(), 12);
}
