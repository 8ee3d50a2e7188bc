//! Store conformance: a leased trial's life after the lease: metric points,
//! complete, fail, release, reaping expired leases, truncating an abandoned
//! attempt's points, and extending leases after a restart.
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

use common::conformance::{
    assert_lease_lost, conformance_tests, counts, point, simple_grid, summary, trial_map, StoreExt, T0, TTL,
};
use common::Ctx;
use sweep_coordinator::store::{
    Completed, FinalOutcome, HeartbeatVerdict, LeaseOwner, Leaser, PointBatch, Progress, StateCounts, TrialState,
    TrialSummary,
};

conformance_tests!(
    put_metrics_stores_each_point_once,
    metrics_are_ordered,
    complete_records_outcome_and_is_idempotent,
    complete_with_stores_the_last_batch_and_provenance_with_the_result,
    complete_after_reap_is_lease_lost,
    fail_requeues_until_max_attempts,
    reap_expired_requeues_then_fails,
    release_hands_back_without_using_an_attempt,
    truncate_after_replaces_an_abandoned_attempts_points,
    analysis_points_survive_a_resume_and_the_latest_measurement_wins,
    extend_running_leases_after_a_restart,
    logs_keep_each_attempts_last_tail,
);

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

async fn complete_with_stores_the_last_batch_and_provenance_with_the_result(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("last", 1, 3, "max_attempts = 3"), T0).await.unwrap();
    let who = Leaser { worker_id: "wa", holder: "h", device: "cpu", threads: 1, ..Default::default() };
    let a = store.lease_for(who, T0, TTL).await.unwrap().unwrap();
    store.record_failure("h", "wa", T0).await.unwrap();
    store.record_failure("h", "wa", T0).await.unwrap();
    let prov = sweep_core::Provenance { code_version: "v9".into(), device_name: "cpu-x".into(), ..Default::default() };
    let points = [point("train_loss", 1, 1, 1.0), point("train_loss", 2, 1, 0.5), point("train_loss", 3, 1, 0.25)];
    let last = PointBatch { points: &points, truncate_after: None, checkpoint_step: Some(3) };
    let done = store
        .complete_with(&a.lease_id, FinalOutcome::Succeeded, &summary(0.8, 0.2), last, Some(&prov), T0 + 1)
        .await
        .unwrap();
    let owner =
        LeaseOwner { trial_id: a.trial_id.clone(), holder: "h".into(), worker_id: "wa".into(), failures_in_a_row: 2 };
    assert_eq!(done, Completed { added: 0, stored: 3, owner: Some(owner) });
    assert_eq!(store.metrics(&a.trial_id).await.unwrap(), points.to_vec());
    let t = &trial_map(store, "last").await[&a.trial_id];
    assert_eq!((t.state, t.checkpoint_step), (TrialState::Succeeded, Some(3)));
    let result = store.trial_results("last").await.unwrap().into_iter().find(|r| r.final_test_accuracy == Some(0.8));
    assert_eq!(result.expect("the result is stored").provenance.as_ref(), &prov);

    // Repeated (its answer was lost): nothing is stored again.
    let again = store
        .complete_with(&a.lease_id, FinalOutcome::Succeeded, &summary(0.8, 0.2), last, Some(&prov), T0 + 2)
        .await
        .unwrap();
    assert_eq!(again, Completed::default());
    assert_eq!(store.metrics(&a.trial_id).await.unwrap().len(), 3);

    // A lost lease stores neither the points nor the result.
    let b = store.lease("wb", T0, 1000).await.unwrap().unwrap();
    assert_eq!(store.reap_expired(T0 + 1001).await.unwrap(), 1);
    let late = PointBatch { points: &points[..1], ..Default::default() };
    assert_lease_lost(
        store.complete_with(&b.lease_id, FinalOutcome::Succeeded, &summary(0.9, 0.1), late, None, T0 + 1002).await,
        "complete_with after reap",
    );
    assert!(store.metrics(&b.trial_id).await.unwrap().is_empty(), "no point of the lost lease is stored");
    assert_eq!(store.trial_state(&b.trial_id, "last").await, TrialState::Queued);

    // `truncate_after` replaces an abandoned attempt's points, as in a batch.
    let c = store.lease("wc", T0 + 2000, TTL).await.unwrap().unwrap();
    let old: Vec<_> = (1..=5).map(|s| point("train_loss", s, 1, 9.0)).collect();
    store.put_metrics(&c.lease_id, &old, None).await.unwrap();
    let fresh = [point("train_loss", 3, 1, 0.3)];
    let resumed = PointBatch { points: &fresh, truncate_after: Some(2), checkpoint_step: None };
    let done = store
        .complete_with(&c.lease_id, FinalOutcome::Succeeded, &summary(0.7, 0.3), resumed, None, T0 + 2001)
        .await
        .unwrap();
    assert_eq!(done.stored, 1);
    let steps: Vec<(i64, f64)> = store.metrics(&c.trial_id).await.unwrap().iter().map(|p| (p.step, p.value)).collect();
    assert_eq!(steps, vec![(1, 9.0), (2, 9.0), (3, 0.3)]);
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

async fn logs_keep_each_attempts_last_tail(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("logs", 1, 1, ""), T0).await.unwrap();
    let first = store.lease("a", T0, TTL).await.unwrap().unwrap();
    store.save_log(&first.lease_id, "line 1\n", T0 + 1).await.unwrap();
    store.save_log(&first.lease_id, "line 1\nline 2\n", T0 + 2).await.unwrap();
    store.release(&first.lease_id, "SIGTERM").await.unwrap();
    assert_lease_lost(store.save_log(&first.lease_id, "late", T0 + 3).await, "a log after the lease ended");
    let second = store.lease("b", T0 + 4, TTL).await.unwrap().unwrap();
    store.save_log(&second.lease_id, "resumed\n", T0 + 5).await.unwrap();
    let (id, logs) = store.logs(&first.trial_id[..6].to_ascii_uppercase()).await.unwrap();
    assert_eq!(id, first.trial_id, "a prefix, in either case, names the trial");
    let got: Vec<(i64, &str, i64, &str)> =
        logs.iter().map(|l| (l.attempt, l.worker_id.as_str(), l.updated_ms, l.text.as_str())).collect();
    assert_eq!(got, vec![(1, "a", T0 + 2, "line 1\nline 2\n"), (2, "b", T0 + 5, "resumed\n")]);
    let unknown = if first.trial_id.starts_with('0') { "ffffffff" } else { "00000000" };
    assert!(matches!(store.logs(unknown).await, Err(sweep_coordinator::store::StoreError::NotFound(_))));
    for bad in ["abc", "not-hex!", "%", &"a".repeat(33)] {
        assert!(
            matches!(store.logs(bad).await, Err(sweep_coordinator::store::StoreError::InvalidArgument(_))),
            "{bad:?}"
        );
    }
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

/// Analysis points (`analysis/...`) have their own step axis: a resume at
/// training step 30 keeps them, and a re-measured point replaces the old
/// one (a training point keeps its first value).
async fn analysis_points_survive_a_resume_and_the_latest_measurement_wins(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&simple_grid("analysis", 1, 1, ""), T0).await.unwrap();
    let first = store.lease("a", T0, 1000).await.unwrap().unwrap();
    let pts = [
        point("train_loss", 40, 1, 1.0),
        point("analysis/variance/forward", 10_001, 1, 0.5),
        point("analysis/lesion/removed", 0, 1, 0.25),
    ];
    assert_eq!(store.put_metrics(&first.lease_id, &pts, Some(0)).await.unwrap(), 3);
    store.reap_expired(T0 + 2000).await.unwrap();
    let second = store.lease("b", T0 + 3000, TTL).await.unwrap().unwrap();
    store.put_metrics(&second.lease_id, &[], Some(30)).await.unwrap();
    let names: Vec<String> = store.metrics(&first.trial_id).await.unwrap().into_iter().map(|m| m.name).collect();
    assert!(!names.contains(&"train_loss".to_owned()), "step 40 is after the resume: {names:?}");
    assert!(names.contains(&"analysis/variance/forward".to_owned()), "{names:?}");
    let again = [point("analysis/variance/forward", 10_001, 1, 0.75), point("analysis/lesion/removed", 0, 1, 0.3)];
    assert_eq!(store.put_metrics(&second.lease_id, &again, None).await.unwrap(), 2);
    store.put_metrics(&second.lease_id, &[point("train_loss", 40, 1, 2.0)], None).await.unwrap();
    store.put_metrics(&second.lease_id, &[point("train_loss", 40, 1, 9.0)], None).await.unwrap();
    let value = |name: &str, rows: &[sweep_coordinator::store::MetricRow]| {
        rows.iter().find(|m| m.name == name).map(|m| m.value)
    };
    let rows = store.metrics(&first.trial_id).await.unwrap();
    assert_eq!(value("analysis/variance/forward", &rows), Some(0.75), "the latest measurement");
    assert_eq!(value("analysis/lesion/removed", &rows), Some(0.3));
    assert_eq!(value("train_loss", &rows), Some(2.0), "a training point keeps its first value");
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
