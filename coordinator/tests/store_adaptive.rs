//! Store conformance: adaptive seeds (`[run] target_halfwidth`). A trial
//! that finishes (completed, failed for good, or reaped out of attempts)
//! has its stratum judged in the same transaction, so the seed it calls for
//! is queued before anyone can see the sweep finished; `status` shows each
//! stratum's verdict; a resubmit with a higher `max_seeds` continues.
//!
//! Part of the store conformance suite: every test runs against both
//! backends (see `tests/common/conformance.rs`).

mod common;

use common::conformance::{conformance_tests, grid, summary, T0, TTL};
use common::Ctx;
use sweep_coordinator::store::{FinalOutcome, Lease, Store, MAX_INFRA_FAILURES};
use sweep_core::adaptive::{Next, Stop};
use sweep_core::{GridSpec, Level};

conformance_tests!(
    a_finished_stratum_gets_its_next_seed_in_the_same_transaction,
    failed_and_reaped_trials_are_judged_too,
    a_stratum_whose_trials_finish_together_gets_its_seed_once,
);

/// depth 8 and 16 x skip on/off, 2 seeds, a target no stratum meets.
fn adaptive_grid(name: &str, max_seeds: u32) -> GridSpec {
    grid(
        name,
        "[8, 16]",
        "[true, false]",
        r#""default""#,
        "true",
        "2",
        &format!("max_attempts = 1\ntarget_halfwidth = 0.001\nmax_seeds = {max_seeds}"),
    )
}

/// Leases every queued trial, keyed by (depth, skip, seed).
async fn lease_all(store: &dyn Store, now: i64) -> Vec<((i64, bool, u64), Lease)> {
    let mut out = Vec::new();
    while let Some(l) = store.lease("w", now, TTL).await.unwrap() {
        let depth = l.spec.cell.get("depth").and_then(Level::as_int).unwrap();
        let skip = l.spec.cell.get("skip").and_then(Level::as_bool).unwrap();
        out.push(((depth, skip, l.spec.seed), l));
    }
    out.sort_by_key(|(k, _)| *k);
    out
}

async fn stratum_next(store: &dyn Store, sweep: &str, depth: i64) -> (Next, usize) {
    let s = store.strata(sweep).await.unwrap().expect("an adaptive sweep");
    let st = s.strata.iter().find(|s| s.at.get("depth") == Some(&Level::Int(depth))).unwrap();
    (st.next, st.seeds.len())
}

async fn a_finished_stratum_gets_its_next_seed_in_the_same_transaction(ctx: Ctx) {
    let store = &*ctx.store;
    let spec = adaptive_grid("adaptive", 4);
    assert_eq!(store.submit(&spec, T0).await.unwrap().total_trials, 8);
    let leases = lease_all(store, T0 + 1).await;
    assert_eq!(leases.len(), 8);
    // Depth 16: skip +40 points on both seeds (resolved). Depth 8: +-5
    // points (open).
    let acc = |depth: i64, skip: bool, seed: u64| match (depth, skip, seed) {
        (16, true, s) => 0.9 + 0.01 * s as f64,
        (16, false, s) => 0.5 + 0.02 * s as f64,
        (8, true, s) => [0.50, 0.60][s as usize],
        (8, false, s) => [0.55, 0.52][s as usize],
        _ => unreachable!(),
    };
    let (last, rest) = leases.split_first().unwrap(); // (8, false, 0) last
    for ((d, k, s), l) in rest {
        assert_eq!(finish(store, l, acc(*d, *k, *s)).await, 0, "depth {d}: its stratum is not finished, or resolved");
    }
    assert_eq!(stratum_next(store, "adaptive", 8).await, (Next::Waiting, 2));
    assert_eq!(stratum_next(store, "adaptive", 16).await, (Next::Stopped(Stop::Resolved), 2));
    // The stratum's last trial: seed 2 is added to both of its cells in
    // the same call, so the sweep is never seen finished in between.
    let ((d, k, s), l) = last;
    assert_eq!(finish(store, l, acc(*d, *k, *s)).await, 2);
    let status = store.status(Some("adaptive")).await.unwrap().remove(0);
    assert_eq!((status.counts.queued, status.counts.finished()), (2, false));
    assert_eq!(Some(store.strata("adaptive").await.unwrap().unwrap().plan), spec.run.adaptive);
    // A repeated Complete (its answer lost) adds nothing more.
    assert_eq!(finish(store, l, acc(*d, *k, *s)).await, 0);

    let round = lease_all(store, T0 + 4).await;
    let keys: Vec<_> = round.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, vec![(8, false, 2), (8, true, 2)]);
    assert_eq!(finish(store, &round[0].1, 0.50).await, 0);
    assert_eq!(finish(store, &round[1].1, 0.51).await, 2);
    let round = lease_all(store, T0 + 6).await;
    assert_eq!(round.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![(8, false, 3), (8, true, 3)]);
    for (_, l) in &round {
        assert_eq!(finish(store, l, 0.5).await, 0);
    }
    // Four seeds: max_seeds. Nothing queued; the sweep is finished.
    assert_eq!(stratum_next(store, "adaptive", 8).await, (Next::Stopped(Stop::MaxSeeds), 4));
    let status = store.status(Some("adaptive")).await.unwrap().remove(0);
    assert!(status.counts.finished());
    assert_eq!(status.counts.total(), 12);

    // A higher bound continues the open stratum at once; the resolved one
    // stays as it is.
    let out = store.submit(&adaptive_grid("adaptive", 5), T0 + 8).await.unwrap();
    assert_eq!((out.added_trials, out.total_trials), (2, 14));
    assert_eq!(stratum_next(store, "adaptive", 8).await, (Next::Waiting, 5));
    assert_eq!(stratum_next(store, "adaptive", 16).await, (Next::Stopped(Stop::Resolved), 2));

    // Narrowing the grid to depth 16: the depth-8 cells are no longer
    // judged, and get no more seeds when their queued trials finish.
    let mut narrow = adaptive_grid("adaptive", 6);
    narrow.factors.iter_mut().find(|f| f.name == "depth").unwrap().levels = vec![Level::Int(16)];
    assert_eq!(store.submit(&narrow, T0 + 9).await.unwrap().added_trials, 0);
    let strata = store.strata("adaptive").await.unwrap().unwrap().strata;
    assert_eq!(strata.len(), 1);
    for (_, l) in lease_all(store, T0 + 10).await {
        assert_eq!(finish(store, &l, 0.9).await, 0, "a depth-8 trial outside the grid");
    }

    // A sweep without a plan has no strata; an unknown sweep is not found.
    store.submit(&grid("plain", "8", "[true, false]", r#""default""#, "true", "2", ""), T0 + 11).await.unwrap();
    assert_eq!(store.strata("plain").await.unwrap(), None);
    assert!(store.strata("nope").await.is_err());
}

async fn failed_and_reaped_trials_are_judged_too(ctx: Ctx) {
    let store = &*ctx.store;
    store.submit(&adaptive_grid("judged", 4), T0).await.unwrap();
    let leases = lease_all(store, T0 + 1).await;
    let mut depth8: Vec<&Lease> = Vec::new();
    for ((d, k, s), l) in &leases {
        if *d == 16 {
            assert_eq!(finish(store, l, if *k { 0.9 } else { 0.5 } + 0.01 * *s as f64).await, 0);
        } else {
            depth8.push(l);
        }
    }
    // Depth 8: seed 0 a pair (+5), seed 1 completes on one side and fails
    // for good on the other (max_attempts = 1): one pair, no interval, so
    // the failure adds seed 2.
    assert_eq!(finish(store, depth8[0], 0.55).await, 0); // (8, false, 0)
    assert_eq!(finish(store, depth8[2], 0.60).await, 0); // (8, true, 0)
    assert_eq!(finish(store, depth8[1], 0.50).await, 0); // (8, false, 1)
    assert!(!store.fail(&depth8[3].lease_id, "boom", T0 + 2).await.unwrap(), "failed for good");
    let round = lease_all(store, T0 + 3).await;
    assert_eq!(round.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![(8, false, 2), (8, true, 2)]);

    // Seed 2: one side completes, the other's worker vanishes until the
    // trial is out of infrastructure attempts; the reaper's failure adds
    // seed 3.
    assert_eq!(finish(store, &round[0].1, 0.52).await, 0);
    let mut now = T0 + 10;
    for attempt in 1..=MAX_INFRA_FAILURES {
        if attempt > 1 {
            let l = store.lease("gone", now, TTL).await.unwrap().expect("requeued after the reap");
            assert_eq!((l.spec.seed, l.attempt), (2, attempt));
        }
        now += TTL + 1;
        assert_eq!(store.reap_expired(now).await.unwrap(), 1);
    }
    let status = store.status(Some("judged")).await.unwrap().remove(0);
    assert_eq!((status.counts.failed, status.counts.queued), (2, 2));
    let round = lease_all(store, now + 1).await;
    assert_eq!(round.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![(8, false, 3), (8, true, 3)]);
}

/// The last two trials of a stratum completed at the same time, round
/// after round: exactly one of the two calls queues the next seed (on
/// PostgreSQL the second waits for the sweep's row, then sees the first's
/// result).
async fn a_stratum_whose_trials_finish_together_gets_its_seed_once(ctx: Ctx) {
    let store = &*ctx.store;
    let spec =
        grid("together", "8", "[true, false]", r#""default""#, "true", "2", "target_halfwidth = 0.001\nmax_seeds = 10");
    store.submit(&spec, T0).await.unwrap();
    for round in 0..10u64 {
        let leases = lease_all(store, T0 + 1).await;
        let expected: Vec<u64> = if round == 0 { vec![0, 0, 1, 1] } else { vec![round + 1; 2] };
        let mut seeds: Vec<u64> = leases.iter().map(|((_, _, s), _)| *s).collect();
        seeds.sort();
        assert_eq!(seeds, expected, "round {round}");
        let (last, rest) = leases.split_last().unwrap();
        let (other, before) = rest.split_last().unwrap();
        for (_, l) in before {
            finish(store, l, 0.5).await;
        }
        // On and off within noise: the effect stays open.
        let wiggle = if round % 2 == 0 { 0.05 } else { -0.05 };
        let (a, b) = tokio::join!(finish(store, &other.1, 0.5), finish(store, &last.1, 0.5 + wiggle));
        let due = if round < 8 { 2 } else { 0 };
        assert_eq!(a + b, due, "round {round}: the seed is queued once ({a} + {b})");
        if due == 0 {
            assert_eq!(stratum_next(store, "together", 8).await, (Next::Stopped(Stop::MaxSeeds), 10));
            return;
        }
    }
}

/// Completes `lease` with test accuracy `acc`; returns the trials its
/// stratum's verdict added.
async fn finish(store: &dyn Store, lease: &Lease, acc: f64) -> u64 {
    store.complete(&lease.lease_id, FinalOutcome::Succeeded, &summary(acc, 1.0), T0 + 2).await.unwrap()
}
