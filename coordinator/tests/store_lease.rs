//! Store conformance: leasing (order, exclusivity, concurrency), heartbeats,
//! the vouched checkpoint step a lease carries, and who holds a lease.
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
    assert_lease_lost, conformance_tests, counts, id_of, ids, point, simple_grid, summary, trial_map, StoreExt, T0, TTL,
};
use common::Ctx;
use sweep_coordinator::store::{
    self, FinalOutcome, HeartbeatVerdict, Leaser, Progress, StateCounts, Store, TrialState,
};
use sweep_core::TrialSpec;

conformance_tests!(
    lease_order_priority_then_oldest,
    lease_never_hands_out_a_trial_twice,
    concurrent_leases_are_exclusive,
    heartbeat_verdicts,
    heartbeat_renews_the_lease,
    lease_carries_the_vouched_checkpoint_step,
    keep_weights_comes_from_the_run_settings,
    lease_records_holder_and_provenance,
    a_quarantined_caller_is_leased_nothing,
    group_lease_takes_one_cell_at_one_checkpoint_step,
    group_lease_keeps_other_settings_apart,
    group_lease_of_one_is_a_plain_lease,
    concurrent_group_leases_are_exclusive_and_homogeneous,
);

// ---------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------

async fn a_quarantined_caller_is_leased_nothing(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("q", 1, 2, ""), T0).await.unwrap();
    for n in 1..=3 {
        store.record_failure("h", "w", T0 + n).await.unwrap();
    }
    let at = |limit| Leaser { worker_id: "w", holder: "h", quarantine_after: Some(limit), ..Default::default() };
    assert!(store.lease_group(at(3), 1, T0 + 10, TTL).await.unwrap().is_empty(), "3 failures, limit 3");
    assert!(store.lease_group(at(3), 2, T0 + 10, TTL).await.unwrap().is_empty(), "a group lease too");
    let other = Leaser { worker_id: "w2", holder: "h", quarantine_after: Some(3), ..Default::default() };
    assert_eq!(
        store.lease_group(other, 1, T0 + 10, TTL).await.unwrap().len(),
        1,
        "another worker ID is not quarantined"
    );
    assert_eq!(store.lease_group(at(4), 1, T0 + 10, TTL).await.unwrap().len(), 1, "under a higher limit");
    let none_yet = Leaser { worker_id: "w3", holder: "h", quarantine_after: Some(0), ..Default::default() };
    assert!(store.lease_group(none_yet, 1, T0 + 10, TTL).await.unwrap().is_empty(), "a limit of 0 refuses everyone");
    store.clear_failures("h", "w").await.unwrap();
    store.submit(&simple_grid("q", 1, 3, ""), T0 + 20).await.unwrap();
    assert_eq!(store.lease_group(at(1), 1, T0 + 30, TTL).await.unwrap().len(), 1, "cleared");
}

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
// Group leases
// ---------------------------------------------------------------------------

/// Asserts what every group lease must be: 1 to `max` trials of one sweep
/// and one cell at one resume step, each under its own lease ID.
fn assert_one_group(group: &[store::Lease], max: usize) {
    assert!((1..=max).contains(&group.len()), "a group of {} trials, asked for at most {max}", group.len());
    let head = &group[0];
    for l in group {
        assert_eq!(l.sweep_id, head.sweep_id, "one sweep per group");
        assert_eq!(l.spec.cell, head.spec.cell, "one cell per group");
        assert_eq!((&l.spec.train, &l.spec.data), (&head.spec.train, &head.spec.data), "one set of settings");
        assert_eq!(l.resume_step, head.resume_step, "one resume step per group");
    }
    let leases: HashSet<&str> = group.iter().map(|l| l.lease_id.as_str()).collect();
    assert_eq!(leases.len(), group.len(), "each trial has its own lease ID");
}

async fn group_lease_takes_one_cell_at_one_checkpoint_step(ctx: Ctx) {
    let store = &*ctx.store;
    let who = Leaser { worker_id: "fused", holder: "h", device: "cuda:0", threads: 4, ..Default::default() };
    assert!(store.lease_group(who, 4, T0, TTL).await.unwrap().is_empty(), "empty store: nothing");
    // Two cells (depth 8, then 16) x 5 seeds, queued in that order.
    let spec = simple_grid("grp", 2, 5, "");
    store.submit(&spec, T0).await.unwrap();
    let order = ids(&spec);
    // The head trial gets a vouched checkpoint (step 100) and goes back.
    let first = store.lease("w", T0, TTL).await.unwrap().unwrap();
    assert_eq!(first.trial_id, order[0]);
    store.put_batch(&first.lease_id, &[point("train_loss", 100, 1, 1.0)], Some(0), Some(100)).await.unwrap();
    store.release(&first.lease_id, "SIGTERM").await.unwrap();

    // The head resumes from step 100; its fresh cell-mates do not: alone.
    let g = store.lease_group(who, 4, T0 + 1, TTL).await.unwrap();
    assert_one_group(&g, 4);
    assert_eq!(g.iter().map(|l| l.trial_id.as_str()).collect::<Vec<_>>(), [order[0].as_str()]);
    assert_eq!((g[0].resume_step, g[0].attempt), (Some(100), 2));
    // The fresh trials of the first cell, at most `max`, in queue order.
    let g = store.lease_group(who, 3, T0 + 2, TTL).await.unwrap();
    assert_one_group(&g, 3);
    assert_eq!(g.iter().map(|l| l.trial_id.clone()).collect::<Vec<_>>(), order[1..4]);
    assert!(g.iter().all(|l| l.resume_step.is_none() && l.attempt == 1));
    let t = trial_map(store, "grp").await;
    for l in &g {
        let r = &t[&l.trial_id];
        assert_eq!(r.state, TrialState::Running);
        assert_eq!((r.worker_id.as_deref(), r.device.as_deref(), r.threads), (Some("fused"), Some("cuda:0"), Some(4)));
        assert_eq!(store.lease_owner(&l.lease_id).await.unwrap().unwrap().trial_id, l.trial_id, "its own lease");
    }
    // The other cell is left queued.
    for id in &order[5..] {
        assert_eq!(t[id].state, TrialState::Queued, "a trial of another cell was taken");
    }
    // The first cell's last trial: a group of one, however much is asked.
    let g = store.lease_group(who, 4, T0 + 3, TTL).await.unwrap();
    assert_eq!(g.iter().map(|l| l.trial_id.clone()).collect::<Vec<_>>(), order[4..5]);
    // Then the whole second cell.
    let g = store.lease_group(who, 256, T0 + 4, TTL).await.unwrap();
    assert_one_group(&g, 256);
    assert_eq!(g.iter().map(|l| l.trial_id.clone()).collect::<Vec<_>>(), order[5..]);
    assert!(store.lease_group(who, 4, T0 + 5, TTL).await.unwrap().is_empty(), "queue drained: nothing");
    assert_eq!(counts(store, "grp").await, StateCounts { running: 10, ..Default::default() });
    // Each trial of a group lives on its own: one fails, the others hold.
    assert!(store.fail(&g[0].lease_id, "boom", T0 + 6).await.unwrap());
    assert_eq!(
        store.heartbeat(&g[1].lease_id, Progress::default(), T0 + 7, TTL).await.unwrap(),
        HeartbeatVerdict::Continue
    );
    assert_eq!(store.trial_state(&g[0].trial_id, "grp").await, TrialState::Queued);
}

async fn group_lease_keeps_other_settings_apart(ctx: Ctx) {
    let store = &*ctx.store;
    // The same sweep and cell resubmitted with other data settings: new
    // trials of the same cell key under another settings hash.
    let spec = simple_grid("settings", 1, 2, "");
    let mut other = spec.clone();
    other.data.train_subset = Some(2000);
    store.submit(&spec, T0).await.unwrap();
    assert_eq!(store.submit(&other, T0 + 1).await.unwrap().added_trials, 2);
    let g = store.lease_group(Leaser { worker_id: "w", ..Default::default() }, 4, T0 + 2, TTL).await.unwrap();
    assert_one_group(&g, 4);
    assert_eq!(g.iter().map(|l| l.trial_id.clone()).collect::<Vec<_>>(), ids(&spec));
    let g = store.lease_group(Leaser { worker_id: "w", ..Default::default() }, 4, T0 + 3, TTL).await.unwrap();
    assert_eq!(g.iter().map(|l| l.trial_id.clone()).collect::<Vec<_>>(), ids(&other));
    assert!(g.iter().all(|l| l.spec.data.train_subset == Some(2000)));
}

async fn group_lease_of_one_is_a_plain_lease(ctx: Ctx) {
    let store = &*ctx.store;
    let spec = simple_grid("single", 1, 3, "keep_weights = true");
    store.submit(&spec, T0).await.unwrap();
    let order = ids(&spec);
    let who = Leaser { worker_id: "w", holder: "h", device: "cpu", threads: 1, ..Default::default() };
    for (i, max) in [1u32, 0].into_iter().enumerate() {
        let g = store.lease_group(who, max, T0 + i as i64, TTL).await.unwrap();
        assert_eq!(g.len(), 1, "max {max}: one trial");
        assert_eq!((&g[0].trial_id, g[0].attempt, g[0].keep_weights), (&order[i], 1, true), "max {max}");
    }
    let last = store.lease_for(who, T0 + 2, TTL).await.unwrap().expect("the third trial");
    assert_eq!(last.trial_id, order[2]);
    assert!(store.lease_group(who, 1, T0 + 3, TTL).await.unwrap().is_empty());
    assert!(store.lease_for(who, T0 + 3, TTL).await.unwrap().is_none());
}

async fn concurrent_group_leases_are_exclusive_and_homogeneous(ctx: Ctx) {
    const TASKS: usize = 6;
    const MAX: u32 = 4;
    // 6 cells x 8 seeds: groups of 4 race for every cell.
    let spec = simple_grid("grace", 6, 8, "");
    assert_eq!(spec.expand().len(), 48);
    ctx.store.submit(&spec, T0).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..TASKS {
        let store = ctx.store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let who = Leaser { worker_id: &worker, ..Default::default() };
            let mut groups = Vec::new();
            loop {
                let g = store.lease_group(who, MAX, T0, TTL).await.expect("lease_group");
                if g.is_empty() {
                    return groups;
                }
                groups.push(g);
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut leases = HashSet::new();
    let (mut groups, mut largest) = (0, 0);
    for t in tasks {
        for g in t.await.expect("task panicked") {
            assert_one_group(&g, MAX as usize);
            groups += 1;
            largest = largest.max(g.len());
            for l in g {
                assert!(seen.insert(l.trial_id.clone()), "trial {} leased twice", l.trial_id);
                assert!(leases.insert(l.lease_id), "a lease ID given twice");
                assert_eq!(l.attempt, 1);
            }
        }
    }
    assert_eq!(seen, ids(&spec).into_iter().collect::<HashSet<_>>(), "every trial leased once");
    assert!(groups >= 12, "48 trials in groups of at most 4: {groups} groups");
    assert!(largest > 1, "no group held more than one trial");
    let trials = ctx.store.trials("grace").await.unwrap();
    assert!(trials.iter().all(|t| t.state == TrialState::Running && t.attempts == 1));
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
// Vouched checkpoints, run settings, lease holders
// ---------------------------------------------------------------------------

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
    let who = Leaser {
        worker_id: "gpu-node-3",
        holder: "a1b2c3d4e5f60718",
        device: "cuda:0",
        threads: 8,
        ..Default::default()
    };
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
