//! Store conformance: what the store reports: status counts and running
//! trials, cancel and resubmit, unknown sweeps, trial results with their
//! provenance, the store's own identity, and quarantine counts.
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

use std::collections::{HashMap, HashSet};

use common::conformance::{
    assert_lease_lost, assert_not_found, conformance_tests, counts, id_of, point, simple_grid, summary, StoreExt, T0,
    TTL,
};
use common::Ctx;
use sweep_coordinator::store::{
    self, FinalOutcome, HeartbeatVerdict, Leaser, Progress, StateCounts, TrialState, TrialSummary,
};

conformance_tests!(
    status_counts_and_running,
    cancel_and_resubmit,
    unknown_sweep_is_not_found,
    store_identity_is_fixed_at_creation,
    trial_results_carry_provenance_and_trainer_notes,
    quarantine_counts_are_kept_in_the_store,
);

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
// Identity, provenance, quarantine
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

async fn trial_results_carry_provenance_and_trainer_notes(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("prov", 1, 2, ""), T0).await.unwrap();
    let a = store
        .lease_for(Leaser { worker_id: "w", holder: "", device: "cpu", threads: 4, ..Default::default() }, T0, TTL)
        .await
        .unwrap()
        .unwrap();
    store
        .put_metrics(&a.lease_id, &[point("train_loss", 10, 1, 2.0), point("diverged_step", 17, 1, 17.0)], None)
        .await
        .unwrap();
    store.complete(&a.lease_id, FinalOutcome::Diverged, &TrialSummary::default(), T0 + 1).await.unwrap();
    // A device name with the report key's separator and wide characters
    // (and, on SQLite, whose text can hold one, a NUL) reads back whole.
    let device = match ctx.reopen {
        common::Reopen::Sqlite { .. } => "cuda:1 Ünï:9\0x",
        common::Reopen::Postgres { .. } => "cuda:1 Ünï:9",
    };
    let b = store
        .lease_for(Leaser { worker_id: "w", holder: "", device, threads: 0, ..Default::default() }, T0, TTL)
        .await
        .unwrap()
        .unwrap();
    let points = [
        point("train_images_used", 50, 1, 640.0),
        point("final/f1", 2, 1, 2.0),
        point("final/f1", 1, 1, 1.0),
        point("final/f0", 1, 1, 0.5),
    ];
    store.put_metrics(&b.lease_id, &points, None).await.unwrap();
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
    assert_eq!((fb.device.as_str(), fb.threads, fb.diverged_step, fb.train_images_used), (device, 0, None, Some(640)));
    let newest: std::collections::BTreeMap<String, f64> = [("f0".to_owned(), 0.5), ("f1".to_owned(), 2.0)].into();
    assert_eq!(fb.finals, newest, "each final value at its newest step");
    assert!(fa.finals.is_empty());
    let spec = simple_grid("prov", 1, 2, "");
    assert!(finals.iter().all(|f| *f.cell == spec.expand()[0].cell), "each result carries its cell");
    assert!(finals.iter().all(|f| *f.settings == spec.expand()[0].train), "each result carries its fixed settings");
    assert!(finals[0].settings.contains_key("lr"), "{:?}", finals[0].settings);
    assert!(!finals[0].settings.contains_key("precision"), "fp32 is left out: {:?}", finals[0].settings);
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
