//! Store conformance: submitting grids (cells, seeds, invalid specs, shared
//! settings stored once, `[train]` keys as factors), state surviving a
//! reopen, and opening stores by URL.
//!
//! Part of the store conformance suite (with `store_submit.rs`,
//! `store_lease.rs`, `store_lifecycle.rs` and `store_status.rs`): every test
//! here runs against both backends. `conformance_tests!` (in
//! `tests/common/conformance.rs`, with the shared helpers) expands each test
//! function into one `#[tokio::test]` per backend (`sqlite::NAME`,
//! `postgres::NAME`), so the two are held to exactly the same contract;
//! PostgreSQL runs need `SWEEP_TEST_POSTGRES_URL` (see `tests/common`).
//! Time is never slept through: every store call takes `now_ms`, and the
//! tests move the clock by arithmetic.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use common::conformance::{
    assert_not_found, conformance_tests, counts, grid, id_of, ids, issue_example, parse, point, set_levels,
    simple_grid, summary, T0, TTL,
};
use common::Ctx;
use sweep_coordinator::store::{
    self, FinalOutcome, HeartbeatVerdict, Progress, SqliteStore, StateCounts, Store, StoreError, TrialState,
};
use sweep_core::Level;

conformance_tests!(
    submit_adds_every_cell,
    submit_accepts_single_values_and_seed_count,
    submit_invalid_spec_stores_nothing,
    state_survives_reopen,
    shared_settings_are_stored_once,
    training_settings_as_factors,
);

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
// Shared settings, training settings as factors
// ---------------------------------------------------------------------------

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
