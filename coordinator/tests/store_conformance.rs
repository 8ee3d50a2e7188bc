//! The store conformance suite: every test here runs against every backend.
//!
//! `conformance_tests!(backend, factory)` expands each test function into one
//! `#[tokio::test]` per backend (`sqlite::submit_adds_every_cell`,
//! `postgres::submit_adds_every_cell`, ...), so the two backends are held to
//! exactly the same contract.
//!
//! - SQLite: a fresh database file in a temporary folder per test.
//! - PostgreSQL: the server named by `SWEEP_TEST_POSTGRES_URL`; each test gets
//!   its own schema (random name, dropped afterwards, even when the test
//!   fails). Without the variable the PostgreSQL variants print
//!   `skipped: SWEEP_TEST_POSTGRES_URL not set` and pass, unless
//!   `SWEEP_REQUIRE_POSTGRES=1` is set (as in CI), in which case they fail.
//!
//! Time is never slept through: every store call takes `now_ms`, and the tests
//! move the clock by arithmetic.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use common::{make_pg_store, make_sqlite_store, run_test, Ctx};
use sweep_coordinator::store::{
    self, FinalOutcome, HeartbeatVerdict, Leaser, MetricRow, Progress, SqliteStore, StateCounts, Store, StoreError,
    TrialState, TrialSummary,
};
use sweep_core::{GridSpec, Level, TrialSpec};

// ---------------------------------------------------------------------------
// Backends (the harness itself is in `tests/common`)
// ---------------------------------------------------------------------------

macro_rules! conformance_tests {
    ($backend:ident, $make:ident) => {
        mod $backend {
            conformance_tests!(@tests $make;
                submit_adds_every_cell,
                submit_accepts_single_values_and_seed_count,
                submit_invalid_spec_stores_nothing,
                state_survives_reopen,
                lease_order_priority_then_oldest,
                lease_never_hands_out_a_trial_twice,
                concurrent_leases_are_exclusive,
                heartbeat_verdicts,
                heartbeat_renews_the_lease,
                put_metrics_stores_each_point_once,
                metrics_are_ordered,
                complete_records_outcome_and_is_idempotent,
                complete_after_reap_is_lease_lost,
                fail_requeues_until_max_attempts,
                reap_expired_requeues_then_fails,
                release_hands_back_without_using_an_attempt,
                truncate_after_replaces_an_abandoned_attempts_points,
                extend_running_leases_after_a_restart,
                status_counts_and_running,
                cancel_and_resubmit,
                unknown_sweep_is_not_found,
                store_identity_is_fixed_at_creation,
                lease_carries_the_vouched_checkpoint_step,
                keep_weights_comes_from_the_run_settings,
                lease_records_holder_and_provenance,
                trial_results_carry_provenance_and_trainer_notes,
                quarantine_counts_are_kept_in_the_store,
                shared_settings_are_stored_once,
                training_settings_as_factors,
            );
        }
    };
    (@tests $make:ident; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                super::run_test(super::$make, super::$test).await;
            }
        )*
    };
}

conformance_tests!(sqlite, make_sqlite_store);
conformance_tests!(postgres, make_pg_store);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fixed "now": 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000;
const TTL: i64 = 30_000;

fn parse(toml: &str) -> GridSpec {
    GridSpec::parse(toml, Path::new("/tmp/grid.toml")).unwrap_or_else(|e| panic!("test grid is invalid: {e}\n{toml}"))
}

/// A grid with the given sweep name, factor values (TOML right-hand sides),
/// seeds and `[run]` settings.
fn grid(name: &str, depth: &str, skip: &str, init: &str, batchnorm: &str, seeds: &str, run: &str) -> GridSpec {
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
fn simple_grid(name: &str, cells: usize, seeds: usize, run: &str) -> GridSpec {
    let depths: Vec<String> = (1..=cells).map(|i| (i * 8).to_string()).collect();
    grid(name, &format!("[{}]", depths.join(", ")), "true", r#""default""#, "true", &seeds.to_string(), run)
}

/// The issue's example: 4 x 2 x 3 x 2 = 48 cells.
fn issue_example(seeds: &str) -> GridSpec {
    let example = include_str!("../../examples/skip-ablation.toml");
    assert!(example.contains("seeds = [0, 1, 2]"));
    parse(&example.replacen("seeds = [0, 1, 2]", &format!("seeds = {seeds}"), 1))
}

/// Replaces the levels of factor `name` (which the grid has).
fn set_levels(spec: &mut GridSpec, name: &str, levels: Vec<Level>) {
    spec.factors.iter_mut().find(|f| f.name == name).expect("the grid has the factor").levels = levels;
}

fn ids(spec: &GridSpec) -> Vec<String> {
    spec.expand().iter().map(|t| t.id(&spec.name).0).collect()
}

fn id_of(spec: &GridSpec, t: &TrialSpec) -> String {
    t.id(&spec.name).0
}

async fn counts(store: &dyn Store, sweep: &str) -> StateCounts {
    let status = store.status(Some(sweep)).await.expect("status");
    assert_eq!(status.len(), 1, "status of one sweep returns one entry");
    assert_eq!(status[0].sweep_id, sweep);
    status[0].counts
}

async fn trial_map(store: &dyn Store, sweep: &str) -> HashMap<String, store::TrialRecord> {
    store.trials(sweep).await.expect("trials").into_iter().map(|t| (t.trial_id.clone(), t)).collect()
}

fn point(name: &str, step: i64, epoch: u32, value: f64) -> MetricRow {
    MetricRow { step, epoch, name: name.to_owned(), value }
}

fn summary(acc: f64, loss: f64) -> TrialSummary {
    TrialSummary {
        final_train_loss: Some(loss),
        final_test_loss: Some(loss * 1.5),
        final_test_accuracy: Some(acc),
        best_test_accuracy: Some(acc + 0.01),
        wall_seconds: 12.5,
    }
}

fn assert_lease_lost<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::LeaseLost(_)) => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Submit
// ---------------------------------------------------------------------------

async fn submit_adds_every_cell(ctx: Ctx) {
    let store = &*ctx.store;
    let spec = issue_example("[0, 1, 2]");
    assert_eq!(spec.cell_count(), 48);

    let first = store.submit(&spec, T0).await.unwrap();
    assert_eq!(first.sweep_id, "skip-ablation");
    assert_eq!(first.added_trials, 144, "48 cells x 3 seeds");
    assert_eq!(first.total_trials, 144);

    let trials = store.trials("skip-ablation").await.unwrap();
    assert_eq!(trials.len(), 144);
    let stored: HashSet<String> = trials.iter().map(|t| t.trial_id.clone()).collect();
    assert_eq!(stored.len(), 144, "trial IDs are distinct");
    assert_eq!(stored, ids(&spec).into_iter().collect::<HashSet<_>>(), "stored IDs are the spec's IDs");
    for t in &trials {
        assert_eq!(t.state, TrialState::Queued);
        assert_eq!(t.sweep_id, "skip-ablation");
        assert_eq!((t.attempts, t.failures), (0, 0));
        assert_eq!(t.last_error, None);
        assert_eq!(t.worker_id, None);
    }
    assert_eq!(counts(store, "skip-ablation").await, StateCounts { queued: 144, ..Default::default() });

    // The same grid again: same sweep, nothing added.
    let again = store.submit(&spec, T0 + 1000).await.unwrap();
    assert_eq!(again, store::SubmitOutcome { sweep_id: "skip-ablation".into(), total_trials: 144, added_trials: 0 });

    // One more seed: exactly one new trial per cell.
    let more = issue_example("[0, 1, 2, 3]");
    let out = store.submit(&more, T0 + 2000).await.unwrap();
    assert_eq!(out.added_trials, 48, "adding a seed adds one trial per cell");
    assert_eq!(out.total_trials, 192);
    let after: HashSet<String> = store.trials("skip-ablation").await.unwrap().into_iter().map(|t| t.trial_id).collect();
    assert_eq!(after, ids(&more).into_iter().collect::<HashSet<_>>());
    assert!(stored.is_subset(&after), "the earlier trials keep their IDs");

    // Fewer seeds than stored: nothing added and nothing removed.
    let out = store.submit(&issue_example("[0]"), T0 + 3000).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (0, 192));
    assert_eq!(counts(store, "skip-ablation").await.total(), 192);
}

async fn submit_accepts_single_values_and_seed_count(ctx: Ctx) {
    let store = &*ctx.store;
    // Single values (held fixed) and a seed count n meaning 0..n-1.
    let a = grid("fixed", "[8, 16]", "true", r#""xavier_normal""#, "false", "3", "");
    assert_eq!(a.seeds, vec![0, 1, 2]);
    assert_eq!(a.cell_count(), 2);
    let out = store.submit(&a, T0).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (6, 6));

    // The same trials written as a list are the same trials.
    let b = grid("fixed", "[8, 16]", "[true]", r#"["xavier_normal"]"#, "[false]", "[0, 1, 2]", "");
    let out = store.submit(&b, T0 + 1).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (0, 6));

    // A new factor value adds its cells' trials only.
    let c = grid("fixed", "[8, 16]", "[true, false]", r#""xavier_normal""#, "false", "3", "");
    let out = store.submit(&c, T0 + 2).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (6, 12));

    // The same grid under another name is another sweep with its own trials.
    let d = grid("fixed-2", "[8, 16]", "true", r#""xavier_normal""#, "false", "3", "");
    let out = store.submit(&d, T0 + 3).await.unwrap();
    assert_eq!((out.sweep_id.as_str(), out.added_trials, out.total_trials), ("fixed-2", 6, 6));
    let a_ids: HashSet<String> = ids(&a).into_iter().collect();
    let d_ids: HashSet<String> = ids(&d).into_iter().collect();
    assert!(a_ids.is_disjoint(&d_ids), "trial IDs are scoped by sweep");
    assert_eq!(store.status(None).await.unwrap().len(), 2);
}

async fn submit_invalid_spec_stores_nothing(ctx: Ctx) {
    let store = &*ctx.store;
    let good = simple_grid("bad-grid", 2, 2, "");

    let mut bad_depth = good.clone();
    set_levels(&mut bad_depth, "depth", vec![Level::Int(8), Level::Int(12)]);
    let mut no_seeds = good.clone();
    no_seeds.seeds.clear();
    let mut empty_factor = good.clone();
    set_levels(&mut empty_factor, "init", Vec::new());
    let mut bad_name = good.clone();
    bad_name.name = "no spaces allowed".into();
    let mut dup_seed = good.clone();
    dup_seed.seeds = vec![1, 1];
    let mut zero_attempts = good.clone();
    zero_attempts.run.max_attempts = 0;

    for (what, spec) in [
        ("depth not a multiple of 8", bad_depth),
        ("no seeds", no_seeds),
        ("empty factor", empty_factor),
        ("bad name", bad_name),
        ("repeated seed", dup_seed),
        ("max_attempts 0", zero_attempts),
    ] {
        match store.submit(&spec, T0).await {
            Err(StoreError::InvalidArgument(msg)) => assert!(!msg.is_empty(), "{what}: empty message"),
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(store.status(None).await.unwrap().is_empty(), "no sweep stored");
    assert_not_found(store.status(Some("bad-grid")).await, "status of the refused sweep");
    assert!(store.trials("bad-grid").await.unwrap().is_empty(), "no trial stored");
    assert!(store.lease("w", T0, TTL).await.unwrap().is_none(), "nothing to lease");

    // A refused resubmit leaves an existing sweep as it was.
    store.submit(&good, T0).await.unwrap();
    let mut worse = simple_grid("bad-grid", 3, 3, "");
    let mut depths = worse.levels("depth").to_vec();
    depths.push(Level::Int(7));
    set_levels(&mut worse, "depth", depths);
    assert!(matches!(store.submit(&worse, T0 + 1).await, Err(StoreError::InvalidArgument(_))));
    assert_eq!(counts(store, "bad-grid").await, StateCounts { queued: 4, ..Default::default() });
}

async fn state_survives_reopen(ctx: Ctx) {
    let spec = simple_grid("durable", 2, 2, "");
    ctx.store.submit(&spec, T0).await.unwrap();
    let lease = ctx.store.lease("w1", T0, TTL).await.unwrap().unwrap();
    ctx.store.complete(&lease.lease_id, FinalOutcome::Succeeded, &summary(0.5, 1.0), T0 + 1).await.unwrap();
    let before = ctx.store.trials("durable").await.unwrap();

    // Opening the same database again runs the migrations again (a no-op)
    // and sees everything.
    let second = ctx.reopen().await;
    assert_eq!(second.trials("durable").await.unwrap(), before);
    assert_eq!(counts(&*second, "durable").await, StateCounts { queued: 3, succeeded: 1, ..Default::default() });
    let out = second.submit(&spec, T0 + 2).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (0, 4));
    // A lease taken through one handle is visible through the other.
    let l2 = second.lease("w2", T0 + 3, TTL).await.unwrap().unwrap();
    assert_ne!(l2.trial_id, lease.trial_id);
    assert_eq!(
        ctx.store.heartbeat(&l2.lease_id, Progress::default(), T0 + 4, TTL).await.unwrap(),
        HeartbeatVerdict::Continue
    );
}

// ---------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------

async fn lease_order_priority_then_oldest(ctx: Ctx) {
    let store = &*ctx.store;
    assert!(store.lease("w", T0, TTL).await.unwrap().is_none(), "empty store: no lease");

    let old = simple_grid("old", 2, 1, "priority = 0");
    let young = simple_grid("young", 2, 1, "priority = 0");
    let urgent = simple_grid("urgent", 1, 2, "priority = 5");
    store.submit(&old, T0).await.unwrap();
    store.submit(&young, T0 + 1).await.unwrap();
    store.submit(&urgent, T0 + 2).await.unwrap();
    // More seeds for "old" after the others: these trials are the youngest.
    let old_more = simple_grid("old", 2, 2, "priority = 0");
    assert_eq!(store.submit(&old_more, T0 + 3).await.unwrap().added_trials, 2);

    let new_old: Vec<String> = ids(&old_more).into_iter().filter(|id| !ids(&old).contains(id)).collect();
    let mut want: Vec<(String, String)> = Vec::new();
    want.extend(ids(&urgent).into_iter().map(|id| ("urgent".to_owned(), id))); // highest priority first
    want.extend(ids(&old).into_iter().map(|id| ("old".to_owned(), id))); // then oldest
    want.extend(ids(&young).into_iter().map(|id| ("young".to_owned(), id)));
    want.extend(new_old.into_iter().map(|id| ("old".to_owned(), id)));
    assert_eq!(want.len(), 8);

    let specs: HashMap<String, TrialSpec> = [&old_more, &young, &urgent]
        .into_iter()
        .flat_map(|g| g.expand().into_iter().map(move |t| (id_of(g, &t), t)))
        .collect();
    for (i, (sweep, id)) in want.iter().enumerate() {
        let lease = store
            .lease(&format!("w{i}"), T0 + 10 + i as i64, TTL)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("lease {i}: expected {sweep}/{id}, got None"));
        assert_eq!((&lease.sweep_id, &lease.trial_id), (sweep, id), "lease {i} out of order");
        assert_eq!(lease.attempt, 1);
        assert_eq!(&lease.spec, &specs[id], "lease carries the trial's spec");
        assert_eq!(lease.spec.id(&lease.sweep_id).0, lease.trial_id, "spec hashes to the trial ID");
        assert!(!lease.lease_id.is_empty());
    }
    assert!(store.lease("w", T0 + 100, TTL).await.unwrap().is_none(), "queue drained: no lease");
    for g in ["old", "young", "urgent"] {
        let c = counts(store, g).await;
        assert_eq!((c.queued, c.running), (0, c.total()));
    }
}

async fn lease_never_hands_out_a_trial_twice(ctx: Ctx) {
    let store = &*ctx.store;
    let spec = simple_grid("twice", 3, 4, "");
    store.submit(&spec, T0).await.unwrap();
    let mut trials = HashSet::new();
    let mut leases = Vec::new();
    for i in 0..12 {
        let l = store.lease(&format!("w{}", i % 3), T0 + i, TTL).await.unwrap().expect("a queued trial");
        assert!(trials.insert(l.trial_id.clone()), "trial {} leased twice", l.trial_id);
        assert!(!leases.iter().any(|x: &store::Lease| x.lease_id == l.lease_id), "lease ID {} reused", l.lease_id);
        leases.push(l);
    }
    assert_eq!(trials, ids(&spec).into_iter().collect::<HashSet<_>>());
    assert!(store.lease("w0", T0 + 20, TTL).await.unwrap().is_none(), "all held: nothing to lease");
    let stored = store.trials("twice").await.unwrap();
    assert!(stored.iter().all(|t| t.state == TrialState::Running && t.attempts == 1));

    // A trial that comes back after a failure gets a fresh lease ID, and is
    // again held by one lease only.
    let first = &leases[0];
    assert!(store.fail(&first.lease_id, "retry me", T0 + 21).await.unwrap());
    let again = store.lease("w9", T0 + 22, TTL).await.unwrap().expect("the re-queued trial");
    assert_eq!(again.trial_id, first.trial_id);
    assert_eq!(again.attempt, 2);
    assert!(leases.iter().all(|x| x.lease_id != again.lease_id), "lease IDs are never reused");
    assert!(store.lease("w9", T0 + 23, TTL).await.unwrap().is_none());
    assert_eq!(
        store.heartbeat(&first.lease_id, Progress::default(), T0 + 24, TTL).await.unwrap(),
        HeartbeatVerdict::LeaseLost
    );
    assert_eq!(
        store.heartbeat(&again.lease_id, Progress::default(), T0 + 24, TTL).await.unwrap(),
        HeartbeatVerdict::Continue
    );
}

async fn concurrent_leases_are_exclusive(ctx: Ctx) {
    const TASKS: usize = 16;
    let spec = simple_grid("race", 40, 5, "");
    assert_eq!(spec.expand().len(), 200);
    ctx.store.submit(&spec, T0).await.unwrap();

    let mut tasks = Vec::new();
    for w in 0..TASKS {
        let store = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut got = Vec::new();
            let mut now = T0;
            while let Some(lease) = store.lease(&worker, now, TTL).await.expect("lease") {
                now += 1;
                // Interleave the other writes a real worker makes.
                let verdict =
                    store.heartbeat(&lease.lease_id, Progress { epoch: 1, step: 10, loss: Some(1.0) }, now, TTL);
                assert_eq!(verdict.await.expect("heartbeat"), HeartbeatVerdict::Continue);
                let new = store
                    .put_metrics(&lease.lease_id, &[point("loss", 10, 1, 1.0), point("loss", 20, 1, 0.5)], None)
                    .await
                    .expect("put_metrics");
                assert_eq!(new, 2, "metric points of a fresh trial are new");
                store
                    .complete(&lease.lease_id, FinalOutcome::Succeeded, &summary(0.4, 0.5), now)
                    .await
                    .expect("complete");
                got.push((lease.trial_id, worker.clone(), lease.attempt));
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut by_worker = HashMap::new();
    for t in tasks {
        for (trial, worker, attempt) in t.await.expect("task panicked") {
            assert_eq!(attempt, 1);
            assert!(seen.insert(trial.clone()), "trial {trial} leased twice");
            by_worker.insert(trial, worker);
        }
    }
    assert_eq!(seen.len(), 200, "every trial leased");
    assert_eq!(seen, ids(&spec).into_iter().collect::<HashSet<_>>());

    let trials = ctx.store.trials("race").await.unwrap();
    assert_eq!(trials.len(), 200);
    for t in &trials {
        assert_eq!(t.attempts, 1, "trial {} leased {} times", t.trial_id, t.attempts);
        assert_eq!(t.failures, 0);
        assert_eq!(t.state, TrialState::Succeeded);
        assert_eq!(t.worker_id.as_ref(), Some(&by_worker[&t.trial_id]), "stored worker is the one that leased it");
        assert_eq!(ctx.store.metrics(&t.trial_id).await.unwrap().len(), 2);
    }
    assert_eq!(counts(&*ctx.store, "race").await, StateCounts { succeeded: 200, ..Default::default() });
}

// ---------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------

async fn heartbeat_verdicts(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("hb", 1, 3, ""), T0).await.unwrap();
    let progress = Progress { epoch: 2, step: 300, loss: Some(0.75) };

    let a = store.lease("w1", T0, TTL).await.unwrap().unwrap();
    assert_eq!(store.heartbeat(&a.lease_id, progress, T0 + 1000, TTL).await.unwrap(), HeartbeatVerdict::Continue);

    // Unknown lease.
    assert_eq!(store.heartbeat("no-such-lease", progress, T0 + 1000, TTL).await.unwrap(), HeartbeatVerdict::LeaseLost);

    // Expired (and reaped) lease: lost, and stays lost after the trial is
    // leased again under a new ID.
    let b = store.lease("w2", T0, 1000).await.unwrap().unwrap();
    assert_eq!(store.reap_expired(T0 + 2000).await.unwrap(), 1, "only b expired");
    assert_eq!(store.heartbeat(&b.lease_id, progress, T0 + 2001, TTL).await.unwrap(), HeartbeatVerdict::LeaseLost);
    let b2 = store.lease("w3", T0 + 2002, TTL).await.unwrap().unwrap();
    assert_eq!(b2.trial_id, b.trial_id, "the reaped trial is next in line again");
    assert_eq!(b2.attempt, 2);
    assert_ne!(b2.lease_id, b.lease_id);
    assert_eq!(store.heartbeat(&b.lease_id, progress, T0 + 2003, TTL).await.unwrap(), HeartbeatVerdict::LeaseLost);
    assert_eq!(store.heartbeat(&b2.lease_id, progress, T0 + 2003, TTL).await.unwrap(), HeartbeatVerdict::Continue);

    // A finished trial's lease is no longer held.
    store.complete(&b2.lease_id, FinalOutcome::Succeeded, &summary(0.5, 0.5), T0 + 3000).await.unwrap();
    assert_eq!(store.heartbeat(&b2.lease_id, progress, T0 + 3001, TTL).await.unwrap(), HeartbeatVerdict::LeaseLost);

    // Cancelled sweep: the worker is told to stop.
    store.cancel("hb", T0 + 4000).await.unwrap();
    assert_eq!(store.heartbeat(&a.lease_id, progress, T0 + 4001, TTL).await.unwrap(), HeartbeatVerdict::Cancel);
    assert_eq!(store.trial_state(&a.trial_id, "hb").await, TrialState::Cancelled, "heartbeat does not revive it");
}

async fn heartbeat_renews_the_lease(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("renew", 1, 1, ""), T0).await.unwrap();
    let l = store.lease("w", T0, 1000).await.unwrap().unwrap();
    let p = Progress { epoch: 1, step: 50, loss: Some(2.0) };
    assert_eq!(store.heartbeat(&l.lease_id, p, T0 + 900, 1000).await.unwrap(), HeartbeatVerdict::Continue);
    // Without the heartbeat the lease would have expired at T0 + 1000.
    assert_eq!(store.reap_expired(T0 + 1500).await.unwrap(), 0, "renewed lease is not reaped");
    assert_eq!(store.heartbeat(&l.lease_id, p, T0 + 1800, 1000).await.unwrap(), HeartbeatVerdict::Continue);
    assert_eq!(store.reap_expired(T0 + 2700).await.unwrap(), 0);
    assert_eq!(store.reap_expired(T0 + 2801).await.unwrap(), 1, "expires ttl after the last heartbeat");
    assert_eq!(store.heartbeat(&l.lease_id, p, T0 + 2802, 1000).await.unwrap(), HeartbeatVerdict::LeaseLost);
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

async fn put_metrics_stores_each_point_once(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("metrics", 1, 2, "max_attempts = 3"), T0).await.unwrap();
    let l = store.lease("w", T0, TTL).await.unwrap().unwrap();

    assert_eq!(store.put_metrics(&l.lease_id, &[], None).await.unwrap(), 0, "an empty batch is fine");
    let batch =
        [point("train_loss", 100, 1, 2.0), point("train_loss", 200, 1, 1.5), point("test_accuracy", 200, 1, 0.3)];
    assert_eq!(store.put_metrics(&l.lease_id, &batch, None).await.unwrap(), 3);
    // The whole batch re-sent (an upload whose answer was lost) plus one new point.
    let mut resent = batch.to_vec();
    resent.push(point("train_loss", 300, 2, 1.2));
    assert_eq!(store.put_metrics(&l.lease_id, &resent, None).await.unwrap(), 1, "only the new point counts");
    assert_eq!(store.put_metrics(&l.lease_id, &resent, None).await.unwrap(), 0, "nothing new");
    // A re-sent point with a different value does not overwrite the stored one.
    assert_eq!(store.put_metrics(&l.lease_id, &[point("train_loss", 100, 1, 99.0)], None).await.unwrap(), 0);

    let stored = store.metrics(&l.trial_id).await.unwrap();
    assert_eq!(
        stored,
        vec![
            point("test_accuracy", 200, 1, 0.3),
            point("train_loss", 100, 1, 2.0),
            point("train_loss", 200, 1, 1.5),
            point("train_loss", 300, 2, 1.2),
        ],
        "each point stored once"
    );

    // Stale leases are refused and store nothing.
    assert_lease_lost(store.put_metrics("no-such-lease", &[point("x", 1, 1, 1.0)], None).await, "unknown lease");
    assert!(store.fail(&l.lease_id, "oom", T0 + 1).await.unwrap(), "re-queued");
    assert_lease_lost(store.put_metrics(&l.lease_id, &[point("x", 1, 1, 1.0)], None).await, "lease given up");
    let retry = store.lease("w", T0 + 2, TTL).await.unwrap().unwrap();
    assert_eq!(retry.trial_id, l.trial_id, "the re-queued trial is the oldest queued one");
    assert_eq!(retry.attempt, 2);
    assert_lease_lost(
        store.put_metrics(&l.lease_id, &[point("x", 1, 1, 1.0)], None).await,
        "old lease of a re-leased trial",
    );
    assert_eq!(store.put_metrics(&retry.lease_id, &[point("x", 1, 1, 1.0)], None).await.unwrap(), 1);
    store.complete(&retry.lease_id, FinalOutcome::Succeeded, &summary(0.5, 1.0), T0 + 4).await.unwrap();
    assert_lease_lost(store.put_metrics(&retry.lease_id, &[point("x", 2, 1, 1.0)], None).await, "finished trial");
    assert_eq!(store.metrics(&l.trial_id).await.unwrap().len(), 5, "refused points were not stored");
    assert!(store.metrics("no-such-trial").await.unwrap().is_empty());
}

async fn metrics_are_ordered(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("ordered", 1, 1, ""), T0).await.unwrap();
    let l = store.lease("w", T0, TTL).await.unwrap().unwrap();
    let mut points = Vec::new();
    for step in [500i64, 20, 3000, 1, 400, 60] {
        points.push(point("zeta", step, (step / 1000) as u32, step as f64 / 7.0));
        points.push(point("alpha", step * 2, (step / 500) as u32, -(step as f64)));
    }
    points.push(point("mid", 0, 0, 0.125));
    // In two batches, the second before the first's steps.
    assert_eq!(store.put_metrics(&l.lease_id, &points[6..], None).await.unwrap(), 7);
    assert_eq!(store.put_metrics(&l.lease_id, &points[..6], None).await.unwrap(), 6);

    let got = store.metrics(&l.trial_id).await.unwrap();
    let mut want = points.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name).then(a.step.cmp(&b.step)));
    assert_eq!(got, want, "ordered by name, then step, with epoch and value intact");
}

// ---------------------------------------------------------------------------
// Complete, fail, reap
// ---------------------------------------------------------------------------

async fn complete_records_outcome_and_is_idempotent(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("done", 1, 3, ""), T0).await.unwrap();
    let a = store.lease("wa", T0, TTL).await.unwrap().unwrap();
    let b = store.lease("wb", T0, TTL).await.unwrap().unwrap();

    let sa = TrialSummary {
        final_train_loss: Some(0.25),
        final_test_loss: Some(0.5),
        final_test_accuracy: Some(0.875),
        best_test_accuracy: Some(0.9),
        wall_seconds: 42.0,
    };
    store.complete(&a.lease_id, FinalOutcome::Succeeded, &sa, T0 + 100).await.unwrap();
    // A diverged run has no meaningful accuracy.
    let sb = TrialSummary { final_train_loss: Some(f64::MAX), wall_seconds: 3.5, ..Default::default() };
    store.complete(&b.lease_id, FinalOutcome::Diverged, &sb, T0 + 100).await.unwrap();

    let trials = trial_map(store, "done").await;
    let ta = &trials[&a.trial_id];
    assert_eq!(ta.state, TrialState::Succeeded);
    assert_eq!(ta.summary, sa);
    assert_eq!((ta.attempts, ta.failures), (1, 0));
    assert_eq!(ta.worker_id.as_deref(), Some("wa"));
    let tb = &trials[&b.trial_id];
    assert_eq!(tb.state, TrialState::Diverged);
    assert_eq!(tb.summary, sb);

    // Repeating a complete (its answer was lost) is a no-op.
    store.complete(&a.lease_id, FinalOutcome::Succeeded, &sa, T0 + 200).await.unwrap();
    store.complete(&b.lease_id, FinalOutcome::Diverged, &sb, T0 + 200).await.unwrap();
    assert_eq!(trial_map(store, "done").await, trials, "repeated complete changes nothing");
    assert_eq!(counts(store, "done").await, StateCounts { queued: 1, succeeded: 1, diverged: 1, ..Default::default() });

    // Finished trials are not leased again; an unknown lease cannot complete.
    let c = store.lease("wc", T0 + 300, TTL).await.unwrap().unwrap();
    assert!(c.trial_id != a.trial_id && c.trial_id != b.trial_id);
    assert!(store.lease("wd", T0 + 300, TTL).await.unwrap().is_none());
    assert_lease_lost(
        store.complete("no-such-lease", FinalOutcome::Succeeded, &sa, T0 + 400).await,
        "complete with an unknown lease",
    );
    // A lease that failed cannot complete.
    assert!(store.fail(&c.lease_id, "boom", T0 + 400).await.unwrap());
    assert_lease_lost(store.complete(&c.lease_id, FinalOutcome::Succeeded, &sa, T0 + 401).await, "complete after fail");
    assert_eq!(store.trial_state(&c.trial_id, "done").await, TrialState::Queued);
}

async fn complete_after_reap_is_lease_lost(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("late", 1, 1, "max_attempts = 3"), T0).await.unwrap();
    let l = store.lease("slow", T0, 1000).await.unwrap().unwrap();
    assert_eq!(store.reap_expired(T0 + 1001).await.unwrap(), 1);
    assert_lease_lost(
        store.complete(&l.lease_id, FinalOutcome::Succeeded, &summary(0.9, 0.1), T0 + 1002).await,
        "complete after reap",
    );
    let t = &store.trials("late").await.unwrap()[0];
    assert_eq!(t.state, TrialState::Queued, "the late result is not recorded");
    assert_eq!(t.summary, TrialSummary::default());

    // The next attempt completes normally; the old lease stays refused.
    let l2 = store.lease("fast", T0 + 2000, TTL).await.unwrap().unwrap();
    assert_eq!((l2.trial_id.as_str(), l2.attempt), (l.trial_id.as_str(), 2));
    assert_lease_lost(
        store.complete(&l.lease_id, FinalOutcome::Succeeded, &summary(0.9, 0.1), T0 + 2001).await,
        "old lease while the trial runs again",
    );
    store.complete(&l2.lease_id, FinalOutcome::Succeeded, &summary(0.7, 0.3), T0 + 2002).await.unwrap();
    assert_lease_lost(
        store.complete(&l.lease_id, FinalOutcome::Succeeded, &summary(0.9, 0.1), T0 + 2003).await,
        "old lease after the new attempt finished",
    );
    let t = &store.trials("late").await.unwrap()[0];
    assert_eq!(t.state, TrialState::Succeeded);
    assert_eq!(t.summary, summary(0.7, 0.3), "the result of the current attempt is kept");
    assert_eq!((t.attempts, t.failures, t.infra_failures), (2, 0, 1));
    assert_eq!(t.worker_id.as_deref(), Some("fast"));
}

async fn fail_requeues_until_max_attempts(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("flaky", 1, 1, "max_attempts = 3"), T0).await.unwrap();
    for attempt in 1..=3u32 {
        let l = store.lease("w", T0 + attempt as i64, TTL).await.unwrap().expect("re-queued trial");
        assert_eq!(l.attempt, attempt);
        let requeued = store.fail(&l.lease_id, &format!("error #{attempt}"), T0 + 10 * attempt as i64).await.unwrap();
        let t = &store.trials("flaky").await.unwrap()[0];
        assert_eq!(t.failures, attempt);
        assert_eq!(t.attempts, attempt);
        assert_eq!(t.last_error.as_deref(), Some(format!("error #{attempt}").as_str()));
        if attempt < 3 {
            assert!(requeued, "attempt {attempt} of 3: re-queued");
            assert_eq!(t.state, TrialState::Queued);
            assert_eq!(t.worker_id, None);
        } else {
            assert!(!requeued, "attempt 3 of 3: failed for good");
            assert_eq!(t.state, TrialState::Failed);
        }
        // Failing twice under one lease is refused.
        assert_lease_lost(store.fail(&l.lease_id, "again", T0 + 100).await, "second fail");
    }
    assert!(store.lease("w", T0 + 200, TTL).await.unwrap().is_none(), "a failed trial is not leased");
    assert_eq!(counts(store, "flaky").await, StateCounts { failed: 1, ..Default::default() });
    assert_eq!(store.trials("flaky").await.unwrap()[0].last_error.as_deref(), Some("error #3"));
    assert_lease_lost(store.fail("no-such-lease", "x", T0).await, "unknown lease");

    // max_attempts = 1: the first failure is final.
    store.submit(&simple_grid("fragile", 1, 1, "max_attempts = 1"), T0).await.unwrap();
    let l = store.lease("w", T0, TTL).await.unwrap().unwrap();
    assert!(!store.fail(&l.lease_id, "fatal", T0 + 1).await.unwrap());
    assert_eq!(store.trial_state(&l.trial_id, "fragile").await, TrialState::Failed);
}

async fn reap_expired_requeues_then_fails(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("reap", 1, 2, "max_attempts = 2"), T0).await.unwrap();
    assert_eq!(store.reap_expired(T0).await.unwrap(), 0, "nothing running");

    let short = store.lease("crashy", T0, 1000).await.unwrap().unwrap();
    let long = store.lease("steady", T0, 100_000).await.unwrap().unwrap();
    assert_eq!(store.reap_expired(T0 + 999).await.unwrap(), 0, "not yet expired");
    assert_eq!(store.reap_expired(T0 + 1001).await.unwrap(), 1, "only the short lease expired");
    assert_eq!(store.reap_expired(T0 + 1002).await.unwrap(), 0, "reaping is done once");

    let t = trial_map(store, "reap").await;
    let s = &t[&short.trial_id];
    assert_eq!(s.state, TrialState::Queued);
    // An expired lease is an infrastructure failure: it does not use up
    // max_attempts (only trial failures do).
    assert_eq!((s.attempts, s.failures, s.infra_failures), (1, 0, 1));
    assert_eq!(s.worker_id, None);
    let err = s.last_error.as_deref().expect("reaping records a reason");
    assert!(err.contains("crashy"), "reason names the worker: {err:?}");
    assert_eq!(t[&long.trial_id].state, TrialState::Running, "the live lease is untouched");
    assert_eq!(
        store.heartbeat(&long.lease_id, Progress::default(), T0 + 1003, 100_000).await.unwrap(),
        HeartbeatVerdict::Continue
    );

    // Abandoned again and again (a trial that kills every worker, e.g. out
    // of memory): re-queued each time until MAX_INFRA_FAILURES, then failed.
    let max = sweep_coordinator::store::MAX_INFRA_FAILURES;
    let mut now = T0 + 5000;
    for n in 2..=max {
        let again = store.lease(&format!("crashy-{n}"), now, 1000).await.unwrap().unwrap();
        assert_eq!((again.trial_id.as_str(), again.attempt), (short.trial_id.as_str(), n));
        now += 2000;
        assert_eq!(store.reap_expired(now).await.unwrap(), 1);
    }
    let t = trial_map(store, "reap").await;
    let s = &t[&short.trial_id];
    assert_eq!(s.state, TrialState::Failed);
    assert_eq!((s.attempts, s.failures, s.infra_failures), (max, 0, max));
    assert!(s.last_error.as_deref().unwrap().contains(&format!("crashy-{max}")));
    assert!(store.lease("w", now + 1, TTL).await.unwrap().is_none(), "failed for good, long still running");
    assert_eq!(counts(store, "reap").await, StateCounts { running: 1, failed: 1, ..Default::default() });

    // Far in the future, the long lease expires too (first failure: re-queued).
    assert_eq!(store.reap_expired(T0 + 1_000_000).await.unwrap(), 1);
    assert_eq!(counts(store, "reap").await, StateCounts { queued: 1, failed: 1, ..Default::default() });
}

async fn release_hands_back_without_using_an_attempt(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("handback", 1, 1, "max_attempts = 1"), T0).await.unwrap();
    let l = store.lease("preempted", T0, TTL).await.unwrap().unwrap();
    store.release(&l.lease_id, "SIGTERM").await.unwrap();
    assert_lease_lost(store.release(&l.lease_id, "again").await, "release twice");
    let t = trial_map(store, "handback").await;
    let s = &t[&l.trial_id];
    assert_eq!(s.state, TrialState::Queued);
    assert_eq!((s.attempts, s.failures, s.infra_failures, s.handbacks), (1, 0, 0, 1));
    // max_attempts = 1, yet the trial runs again and can succeed.
    let again = store.lease("other", T0 + 1, TTL).await.unwrap().unwrap();
    assert_eq!(again.attempt, 2);
    store.complete(&again.lease_id, FinalOutcome::Succeeded, &TrialSummary::default(), T0 + 2).await.unwrap();
    assert_eq!(store.trial_state(&l.trial_id, "handback").await, TrialState::Succeeded);
}

async fn truncate_after_replaces_an_abandoned_attempts_points(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("resume", 1, 1, ""), T0).await.unwrap();
    let first = store.lease("a", T0, 1000).await.unwrap().unwrap();
    let pts: Vec<_> = (1..=6).map(|s| point("train_loss", s * 10, 1, 1.0)).collect();
    assert_eq!(store.put_metrics(&first.lease_id, &pts, Some(0)).await.unwrap(), 6);
    store.reap_expired(T0 + 2000).await.unwrap();
    // The second attempt resumes from a checkpoint at step 30: steps 40-60
    // of the first attempt go, 10-30 stay.
    let second = store.lease("b", T0 + 3000, TTL).await.unwrap().unwrap();
    assert_eq!(store.put_metrics(&second.lease_id, &[], Some(30)).await.unwrap(), 0);
    let steps: Vec<i64> = store.metrics(&first.trial_id).await.unwrap().iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![10, 20, 30]);
    let redo: Vec<_> = (4..=6).map(|s| point("train_loss", s * 10, 1, 2.0)).collect();
    assert_eq!(store.put_metrics(&second.lease_id, &redo, None).await.unwrap(), 3);
    let values: Vec<f64> = store.metrics(&first.trial_id).await.unwrap().iter().map(|m| m.value).collect();
    assert_eq!(values, vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0], "the new attempt's points, not a mix");
    let t = trial_map(store, "resume").await;
    assert_eq!(t[&first.trial_id].resumed_step, Some(30));
}

async fn extend_running_leases_after_a_restart(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("restart", 1, 2, ""), T0).await.unwrap();
    let a = store.lease("a", T0, 1000).await.unwrap().unwrap();
    let _b = store.lease("b", T0, 100_000).await.unwrap().unwrap();
    // The coordinator was down from T0 + 500 to T0 + 5000: a's lease ran out
    // meanwhile, through no fault of a's.
    assert_eq!(store.extend_running_leases(T0 + 5000, 2000).await.unwrap(), 1, "only the lease that would expire");
    assert_eq!(store.reap_expired(T0 + 6000).await.unwrap(), 0);
    assert_eq!(
        store.heartbeat(&a.lease_id, Progress::default(), T0 + 6500, 2000).await.unwrap(),
        HeartbeatVerdict::Continue,
        "the worker re-attaches"
    );
}

// ---------------------------------------------------------------------------
// Status, report, cancel
// ---------------------------------------------------------------------------

async fn status_counts_and_running(ctx: Ctx) {
    let store = &*ctx.store;
    assert!(store.status(None).await.unwrap().is_empty(), "no sweeps yet");
    let a = simple_grid("status-a", 3, 2, "max_attempts = 1"); // 6 trials
    let b = simple_grid("status-b", 1, 2, ""); // 2 trials
    store.submit(&a, T0).await.unwrap();
    store.submit(&b, T0 + 1).await.unwrap();

    let l1 = store.lease("w1", T0 + 10, TTL).await.unwrap().unwrap();
    let l2 = store.lease("w2", T0 + 11, TTL).await.unwrap().unwrap();
    let l3 = store.lease("w3", T0 + 12, TTL).await.unwrap().unwrap();
    let l4 = store.lease("w4", T0 + 13, TTL).await.unwrap().unwrap();
    assert!([&l1, &l2, &l3, &l4].iter().all(|l| l.sweep_id == "status-a"));
    store.complete(&l1.lease_id, FinalOutcome::Succeeded, &summary(0.5, 0.5), T0 + 20).await.unwrap();
    store.complete(&l2.lease_id, FinalOutcome::Diverged, &TrialSummary::default(), T0 + 20).await.unwrap();
    assert!(!store.fail(&l3.lease_id, "nope", T0 + 20).await.unwrap());
    let p = Progress { epoch: 3, step: 1234, loss: Some(0.625) };
    store.heartbeat(&l4.lease_id, p, T0 + 30, TTL).await.unwrap();
    let l5 = store.lease("w5", T0 + 40, TTL).await.unwrap().unwrap(); // no heartbeat yet

    let s = store.status(Some("status-a")).await.unwrap();
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!(s.sweep_id, "status-a");
    assert!(!s.cancelled);
    assert_eq!(s.counts, StateCounts { queued: 1, running: 2, succeeded: 1, diverged: 1, failed: 1, cancelled: 0 });
    assert_eq!(s.counts.total(), 6);
    assert!(!s.counts.finished());
    assert_eq!(s.running.len(), 2);
    let running: HashMap<&str, &store::RunningTrial> = s.running.iter().map(|r| (r.trial_id.as_str(), r)).collect();
    let r4 = running[l4.trial_id.as_str()];
    assert_eq!(r4.worker_id, "w4");
    assert_eq!(r4.attempt, 1);
    assert_eq!(r4.progress, p);
    assert_eq!(r4.spec, l4.spec);
    let r5 = running[l5.trial_id.as_str()];
    assert_eq!(r5.worker_id, "w5");
    assert_eq!(r5.progress, Progress::default(), "no progress reported yet");

    // All sweeps, oldest first.
    let all = store.status(None).await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.sweep_id.as_str()).collect();
    assert_eq!(names, ["status-a", "status-b"]);
    assert_eq!(all[0].counts, s.counts);
    assert_eq!(all[0].running.len(), 2);
    assert_eq!(all[1].counts, StateCounts { queued: 2, ..Default::default() });
    assert!(all[1].running.is_empty());

    // Drain "status-a": finished.
    store.complete(&l4.lease_id, FinalOutcome::Succeeded, &summary(0.5, 0.5), T0 + 50).await.unwrap();
    store.complete(&l5.lease_id, FinalOutcome::Succeeded, &summary(0.5, 0.5), T0 + 50).await.unwrap();
    let l6 = store.lease("w6", T0 + 60, TTL).await.unwrap().unwrap();
    assert_eq!(l6.sweep_id, "status-a");
    store.complete(&l6.lease_id, FinalOutcome::Succeeded, &summary(0.5, 0.5), T0 + 70).await.unwrap();
    let c = counts(store, "status-a").await;
    assert_eq!(c, StateCounts { succeeded: 4, diverged: 1, failed: 1, ..Default::default() });
    assert!(c.finished());
    assert!(store.status(Some("status-a")).await.unwrap()[0].running.is_empty());
}

async fn cancel_and_resubmit(ctx: Ctx) {
    let store = &*ctx.store;
    let spec = simple_grid("stop", 3, 2, ""); // 6 trials
    let other = simple_grid("bystander", 1, 1, "priority = -1");
    store.submit(&spec, T0).await.unwrap();
    store.submit(&other, T0).await.unwrap();

    let done = store.lease("w1", T0, TTL).await.unwrap().unwrap();
    store.complete(&done.lease_id, FinalOutcome::Succeeded, &summary(0.5, 0.5), T0 + 1).await.unwrap();
    let running = store.lease("w2", T0 + 2, TTL).await.unwrap().unwrap();
    assert_eq!(running.sweep_id, "stop");

    assert_eq!(store.cancel("stop", T0 + 3).await.unwrap(), 5, "4 queued + 1 running");
    let s = &store.status(Some("stop")).await.unwrap()[0];
    assert!(s.cancelled);
    assert_eq!(s.counts, StateCounts { succeeded: 1, cancelled: 5, ..Default::default() });
    assert!(s.running.is_empty());
    assert_eq!(store.trial_state(&done.trial_id, "stop").await, TrialState::Succeeded, "finished trials are kept");

    // The running trial's worker learns of it; its results are refused.
    assert_eq!(
        store.heartbeat(&running.lease_id, Progress::default(), T0 + 4, TTL).await.unwrap(),
        HeartbeatVerdict::Cancel
    );
    assert_lease_lost(
        store.put_metrics(&running.lease_id, &[point("loss", 1, 1, 1.0)], None).await,
        "metrics after cancel",
    );
    assert_lease_lost(
        store.complete(&running.lease_id, FinalOutcome::Succeeded, &summary(0.5, 0.5), T0 + 5).await,
        "complete after cancel",
    );
    assert_eq!(store.reap_expired(T0 + 10 * TTL).await.unwrap(), 0, "cancelled trials are not reaped");

    // Only the other sweep is still leasable.
    let l = store.lease("w3", T0 + 6, TTL).await.unwrap().unwrap();
    assert_eq!(l.sweep_id, "bystander");
    assert!(store.lease("w3", T0 + 7, TTL).await.unwrap().is_none());
    assert_eq!(store.cancel("stop", T0 + 8).await.unwrap(), 0, "cancelling again cancels nothing");
    assert_eq!(counts(store, "bystander").await, StateCounts { running: 1, ..Default::default() });

    // Resubmitting re-queues the cancelled trials and adds nothing.
    let out = store.submit(&spec, T0 + 9).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (0, 6));
    let s = &store.status(Some("stop")).await.unwrap()[0];
    assert!(!s.cancelled);
    assert_eq!(s.counts, StateCounts { queued: 5, succeeded: 1, ..Default::default() });
    // The old lease stays dead after the re-queue.
    assert_eq!(
        store.heartbeat(&running.lease_id, Progress::default(), T0 + 10, TTL).await.unwrap(),
        HeartbeatVerdict::LeaseLost
    );
    let mut leased = HashSet::new();
    while let Some(l) = store.lease("w4", T0 + 11, TTL).await.unwrap() {
        assert_eq!(l.sweep_id, "stop");
        assert_ne!(l.trial_id, done.trial_id, "the succeeded trial is not run again");
        store.complete(&l.lease_id, FinalOutcome::Succeeded, &summary(0.6, 0.4), T0 + 12).await.unwrap();
        leased.insert(l.trial_id);
    }
    assert_eq!(leased.len(), 5);
    assert!(leased.contains(&running.trial_id));
    assert_eq!(counts(store, "stop").await, StateCounts { succeeded: 6, ..Default::default() });
}

async fn unknown_sweep_is_not_found(ctx: Ctx) {
    let store = &*ctx.store;
    assert_not_found(store.status(Some("ghost")).await, "status");
    assert_not_found(store.trial_results("ghost").await, "trial results");
    assert_not_found(store.cancel("ghost", T0).await, "cancel");
    // With a sweep present, other names are still unknown.
    store.submit(&simple_grid("real", 1, 1, ""), T0).await.unwrap();
    assert_not_found(store.status(Some("ghost")).await, "status");
    assert_not_found(store.trial_results("ghost").await, "trial results");
    assert_not_found(store.cancel("ghost", T0).await, "cancel");
    assert!(store.trials("ghost").await.unwrap().is_empty());
    assert_eq!(counts(store, "real").await, StateCounts { queued: 1, ..Default::default() }, "real sweep untouched");
}

// ---------------------------------------------------------------------------
// Identity, vouched checkpoints, lease holders, provenance, quarantine
// ---------------------------------------------------------------------------

async fn store_identity_is_fixed_at_creation(ctx: Ctx) {
    let id = ctx.store.store_id().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "store_id {id:?} is a UUID");
    ctx.store.submit(&simple_grid("ident", 1, 1, ""), T0).await.unwrap();
    let again = ctx.reopen().await;
    assert_eq!(again.store_id(), id, "reopening keeps the identity");
    // Another database has another identity.
    let (other, guard) = common::make_sqlite_store().await.unwrap();
    assert_ne!(other.store.store_id(), id);
    guard.cleanup().await;
}

async fn lease_carries_the_vouched_checkpoint_step(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("vouch", 1, 1, ""), T0).await.unwrap();
    let a = store.lease("w", T0, TTL).await.unwrap().unwrap();
    assert_eq!(a.resume_step, None, "a fresh trial: nothing to resume from");
    async fn vouched(store: &dyn Store) -> Option<i64> {
        trial_map(store, "vouch").await.into_values().next().unwrap().checkpoint_step
    }
    // Points up to 100, then the barrier: the store vouches for step 100.
    let pts: Vec<_> = (1..=10).map(|s| point("train_loss", s * 10, 1, 1.0)).collect();
    assert_eq!(store.put_batch(&a.lease_id, &pts, Some(0), Some(100)).await.unwrap(), 10);
    assert_eq!(vouched(store).await, Some(100));
    store.release(&a.lease_id, "SIGTERM").await.unwrap();
    let b = store.lease("w", T0 + 1, TTL).await.unwrap().unwrap();
    assert_eq!(b.resume_step, Some(100), "the next lease may resume from step 100");
    // The attempt resumes from 60 (an older checkpoint): vouched = MIN(100, 60).
    store.put_batch(&b.lease_id, &[], Some(60), None).await.unwrap();
    assert_eq!(vouched(store).await, Some(60));
    // A later barrier moves it on; truncating past it leaves it.
    store.put_batch(&b.lease_id, &[point("train_loss", 200, 2, 0.5)], None, Some(200)).await.unwrap();
    store.put_batch(&b.lease_id, &[], Some(300), None).await.unwrap();
    assert_eq!(vouched(store).await, Some(200));
    // Starting over (T = 0) vouches for nothing.
    store.put_batch(&b.lease_id, &[], Some(0), None).await.unwrap();
    assert_eq!(vouched(store).await, None);
    // Nothing vouched stays nothing, whatever T.
    store.put_batch(&b.lease_id, &[], Some(50), None).await.unwrap();
    assert_eq!(vouched(store).await, None);
    // The vouched step survives a failure (the next attempt may resume) and
    // a reopen of the store.
    store.put_batch(&b.lease_id, &[], None, Some(70)).await.unwrap();
    store.fail(&b.lease_id, "boom", T0 + 2).await.unwrap();
    let c = ctx.reopen().await.lease("w", T0 + 3, TTL).await.unwrap().unwrap();
    assert_eq!(c.resume_step, Some(70));
    // A batch under a lost lease changes nothing.
    assert_lease_lost(store.put_batch(&b.lease_id, &[], None, Some(900)).await, "barrier under an old lease");
    assert_eq!(vouched(store).await, Some(70));
}

async fn keep_weights_comes_from_the_run_settings(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("keep", 1, 1, "keep_weights = true"), T0).await.unwrap();
    store.submit(&simple_grid("drop", 1, 1, "priority = -1"), T0).await.unwrap();
    let a = store.lease("w", T0, TTL).await.unwrap().unwrap();
    assert_eq!((a.sweep_id.as_str(), a.keep_weights), ("keep", true));
    let b = store.lease("w", T0, TTL).await.unwrap().unwrap();
    assert_eq!((b.sweep_id.as_str(), b.keep_weights), ("drop", false));
}

async fn lease_records_holder_and_provenance(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("held", 1, 2, ""), T0).await.unwrap();
    let who = Leaser { worker_id: "gpu-node-3", holder: "a1b2c3d4e5f60718", device: "cuda:0", threads: 8 };
    let a = store.lease_for(who, T0, TTL).await.unwrap().unwrap();
    let owner = store.lease_owner(&a.lease_id).await.unwrap().expect("a current lease has an owner");
    assert_eq!(
        (owner.trial_id.as_str(), owner.holder.as_str(), owner.worker_id.as_str()),
        (a.trial_id.as_str(), "a1b2c3d4e5f60718", "gpu-node-3")
    );
    let t = trial_map(store, "held").await;
    assert_eq!((t[&a.trial_id].device.as_deref(), t[&a.trial_id].threads), (Some("cuda:0"), Some(8)));
    // Without auth the holder is empty.
    let b = store.lease("plain", T0, TTL).await.unwrap().unwrap();
    assert_eq!(store.lease_owner(&b.lease_id).await.unwrap().unwrap().holder, "");
    // A lease that ended has no owner any more.
    store.release(&a.lease_id, "SIGTERM").await.unwrap();
    store.fail(&b.lease_id, "boom", T0 + 1).await.unwrap();
    assert_eq!(store.lease_owner(&a.lease_id).await.unwrap(), None);
    assert_eq!(store.lease_owner(&b.lease_id).await.unwrap(), None);
    assert_eq!(store.lease_owner("0123456789abcdef").await.unwrap(), None);
}

async fn trial_results_carry_provenance_and_trainer_notes(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("prov", 1, 2, ""), T0).await.unwrap();
    let a = store
        .lease_for(Leaser { worker_id: "w", holder: "", device: "cpu", threads: 4 }, T0, TTL)
        .await
        .unwrap()
        .unwrap();
    store
        .put_metrics(&a.lease_id, &[point("train_loss", 10, 1, 2.0), point("diverged_step", 17, 1, 17.0)], None)
        .await
        .unwrap();
    store.complete(&a.lease_id, FinalOutcome::Diverged, &TrialSummary::default(), T0 + 1).await.unwrap();
    let b = store
        .lease_for(Leaser { worker_id: "w", holder: "", device: "cuda:1", threads: 0 }, T0, TTL)
        .await
        .unwrap()
        .unwrap();
    store.put_metrics(&b.lease_id, &[point("train_images_used", 50, 1, 640.0)], None).await.unwrap();
    store.complete(&b.lease_id, FinalOutcome::Succeeded, &summary(0.5, 1.0), T0 + 1).await.unwrap();
    let finals = store.trial_results("prov").await.unwrap();
    assert_eq!(finals.len(), 2);
    let by_seed: HashMap<u64, _> = finals.iter().map(|f| (f.seed, f)).collect();
    let seed_of = |id: &str| {
        let spec = simple_grid("prov", 1, 2, "");
        spec.expand().into_iter().find(|t| id_of(&spec, t) == id).unwrap().seed
    };
    let fa = by_seed[&seed_of(&a.trial_id)];
    let fb = by_seed[&seed_of(&b.trial_id)];
    assert_eq!((fa.device.as_str(), fa.threads, fa.diverged_step, fa.train_images_used), ("cpu", 4, Some(17), None));
    assert_eq!(
        (fb.device.as_str(), fb.threads, fb.diverged_step, fb.train_images_used),
        ("cuda:1", 0, None, Some(640))
    );
    let spec = simple_grid("prov", 1, 2, "");
    assert!(finals.iter().all(|f| f.cell == spec.expand()[0].cell), "each result carries its cell");
}

async fn quarantine_counts_are_kept_in_the_store(ctx: Ctx) {
    let store = &*ctx.store;
    assert_eq!(store.failures_in_a_row("", "w").await.unwrap(), 0);
    for n in 1..=3 {
        assert_eq!(store.record_failure("", "w", T0 + n).await.unwrap(), n as u32);
    }
    // Keyed by identity and worker ID: the same worker ID under another
    // identity is another worker.
    assert_eq!(store.record_failure("other-identity", "w", T0).await.unwrap(), 1);
    let again = ctx.reopen().await;
    assert_eq!(again.failures_in_a_row("", "w").await.unwrap(), 3, "a restart forgives nobody");
    again.clear_failures("", "w").await.unwrap();
    assert_eq!(store.failures_in_a_row("", "w").await.unwrap(), 0, "a completed trial resets the count");
    assert_eq!(store.failures_in_a_row("other-identity", "w").await.unwrap(), 1);
}

/// Bytes of trial specs stored: (sum over trials of `spec_json`, sum over
/// `trial_settings` of `settings_json`, rows of `trial_settings`), read
/// through a connection of its own.
async fn stored_spec_bytes(ctx: &Ctx) -> (i64, i64, i64) {
    use sqlx::Connection;
    const TRIALS: &str = "SELECT CAST(COALESCE(SUM(LENGTH(spec_json)), 0) AS BIGINT) FROM trials";
    const SETTINGS: &str =
        "SELECT CAST(COALESCE(SUM(LENGTH(settings_json)), 0) AS BIGINT), CAST(COUNT(*) AS BIGINT) FROM trial_settings";
    match &ctx.reopen {
        common::Reopen::Sqlite { url } => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let (t,): (i64,) = sqlx::query_as(TRIALS).fetch_one(&mut c).await.unwrap();
            let (s, n): (i64, i64) = sqlx::query_as(SETTINGS).fetch_one(&mut c).await.unwrap();
            (t, s, n)
        }
        common::Reopen::Postgres { url, schema } => {
            use sqlx::ConnectOptions;
            let mut c = common::pg_options(url, schema).connect().await.unwrap();
            let (t,): (i64,) = sqlx::query_as(TRIALS).fetch_one(&mut c).await.unwrap();
            let (s, n): (i64, i64) = sqlx::query_as(SETTINGS).fetch_one(&mut c).await.unwrap();
            (t, s, n)
        }
    }
}

async fn shared_settings_are_stored_once(ctx: Ctx) {
    let store = &*ctx.store;
    // The longest data path a grid may name (4,096 bytes) and 1,000 seeds.
    let path = format!("/{}", "p".repeat(4095));
    let toml = |name: &str| {
        format!(
            "name = \"{name}\"\nseeds = 1000\n[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n[data]\npath = \"{path}\"\n"
        )
    };
    let spec = parse(&toml("long-path"));
    assert_eq!(store.submit(&spec, T0).await.unwrap().added_trials, 1000);
    let (trial_bytes, settings_bytes, settings_rows) = stored_spec_bytes(&ctx).await;
    assert_eq!(settings_rows, 1, "one copy of the shared settings");
    assert!(settings_bytes < 4096 + 1024, "the settings hold the path once: {settings_bytes} bytes");
    assert!(trial_bytes < 1000 * 200, "per trial only its own part is stored: {trial_bytes} bytes for 1,000 trials");
    // The same settings under another sweep name share the row too.
    store.submit(&parse(&toml("same-settings")), T0).await.unwrap();
    assert_eq!(stored_spec_bytes(&ctx).await.2, 1);
    // IDs are unchanged, and leases and status see the whole spec.
    let stored: HashSet<String> = store.trials("long-path").await.unwrap().into_iter().map(|t| t.trial_id).collect();
    assert_eq!(stored, ids(&spec).into_iter().collect::<HashSet<_>>());
    let l = store.lease("w", T0, TTL).await.unwrap().unwrap();
    let want = spec.expand().into_iter().find(|t| id_of(&spec, t) == l.trial_id).expect("a trial of the grid");
    assert_eq!(l.spec, want, "the leased spec is the submitted one, path and all");
    let running = &store.status(Some("long-path")).await.unwrap()[0].running;
    assert_eq!(running[0].spec, want);

    // Rows as databases before shared settings held them (the full spec in
    // spec_json, no settings reference) are upgraded when the store opens:
    // tests/store_upgrade.rs.
}

/// Any `[train]` key may be a factor: the trials' cells carry its levels,
/// their fixed settings no longer hold it, and resubmitting adds nothing.
async fn training_settings_as_factors(ctx: Ctx) {
    let store = &*ctx.store;
    let spec = parse(
        r#"
name = "opt-lr"
seeds = 2
[grid]
depth = 8
skip = [true, false]
init = "default"
batchnorm = true
optimizer = ["sgd", "adam"]
lr = [1e-3, 1e-2]
[data]
path = "data"
"#,
    );
    let out = store.submit(&spec, T0).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (16, 16), "2 x 2 x 2 cells x 2 seeds");
    let mut cells = BTreeSet::new();
    while let Some(l) = store.lease("w", T0, TTL).await.unwrap() {
        let cell = &l.spec.cell;
        assert!(matches!(cell.get("optimizer"), Some(Level::Str(o)) if o == "sgd" || o == "adam"), "{cell:?}");
        assert!(matches!(cell.get("lr"), Some(Level::Float(x)) if *x == 1e-3 || *x == 1e-2), "{cell:?}");
        assert!(!l.spec.train.contains_key("optimizer") && !l.spec.train.contains_key("lr"), "a factor, not a setting");
        assert_eq!(l.spec.id(&l.sweep_id).0, l.trial_id, "the leased spec hashes to its trial ID");
        store.complete(&l.lease_id, FinalOutcome::Succeeded, &summary(0.5, 1.0), T0 + 1).await.unwrap();
        cells.insert(cell.canonical());
    }
    let want: BTreeSet<String> = spec.expand().iter().map(|t| t.cell.canonical()).collect();
    assert_eq!(cells, want, "every cell was leased");
    assert_eq!(cells.len(), 8);
    let results = store.trial_results("opt-lr").await.unwrap();
    assert_eq!(results.len(), 16);
    assert!(results.iter().all(|r| r.cell.get("optimizer").is_some() && r.cell.get("lr").is_some()));
    let again = store.submit(&spec, T0 + 2).await.unwrap();
    assert_eq!((again.added_trials, again.total_trials), (0, 16), "resubmitting adds nothing");
}

// ---------------------------------------------------------------------------
// Backend-specific: opening
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_memory_opens_and_works() {
    for store in [
        Arc::new(SqliteStore::open("sqlite::memory:").await.expect("open sqlite::memory:")) as Arc<dyn Store>,
        store::open("sqlite::memory:").await.expect("store::open sqlite::memory:"),
    ] {
        let spec = simple_grid("mem", 2, 2, "");
        assert_eq!(store.submit(&spec, T0).await.unwrap().added_trials, 4);
        let l = store.lease("w", T0, TTL).await.unwrap().unwrap();
        assert_eq!(store.put_metrics(&l.lease_id, &[point("loss", 1, 1, 0.5)], None).await.unwrap(), 1);
        store.complete(&l.lease_id, FinalOutcome::Succeeded, &summary(0.7, 0.3), T0 + 1).await.unwrap();
        assert_eq!(store.metrics(&l.trial_id).await.unwrap(), vec![point("loss", 1, 1, 0.5)]);
        assert_eq!(counts(&*store, "mem").await, StateCounts { queued: 3, succeeded: 1, ..Default::default() });
        let results = store.trial_results("mem").await.unwrap();
        assert_eq!(results.iter().map(|r| &r.cell).collect::<BTreeSet<_>>().len(), 2, "two cells");
        assert_eq!(results.iter().filter(|r| r.final_test_accuracy.is_some()).count(), 1);
    }
    // Two in-memory stores are separate databases.
    let a = SqliteStore::open("sqlite::memory:").await.unwrap();
    let b = SqliteStore::open("sqlite::memory:").await.unwrap();
    a.submit(&simple_grid("only-a", 1, 1, ""), T0).await.unwrap();
    assert!(b.status(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn open_dispatches_on_url_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("new.db").display());
    let store = store::open(&url).await.expect("sqlite file is created");
    assert!(dir.path().join("new.db").exists());
    assert!(store.status(None).await.unwrap().is_empty());
    match store::open("mysql://localhost/sweep").await {
        Err(StoreError::InvalidArgument(msg)) => assert!(msg.contains("mysql"), "{msg}"),
        Err(e) => panic!("expected InvalidArgument, got {e}"),
        Ok(_) => panic!("expected InvalidArgument, got a store"),
    }
}

// ---------------------------------------------------------------------------
// Small extension used above.
// ---------------------------------------------------------------------------

trait StoreExt {
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
