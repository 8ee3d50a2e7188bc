//! Orchestration acceptance tests (issue 2): real coordinator, real worker
//! processes, real gRPC over loopback, the simulated trainer as test double.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use sweep_core::TrialState;

/// 5 depths x 2 skip x 5 init x 2 batchnorm x 5 seeds = 500 trials. Each
/// trial: 2 epochs of 2 batches (8 images, batch 4), a train loss logged per
/// batch, test loss and accuracy per epoch: 8 metric points (plus gradient
/// norms).
const RACE_GRID: &str = r#"
name = "race"
seeds = 5
[grid]
depth = [8, 16, 24, 32, 40]
skip = [true, false]
init = ["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
batchnorm = [true, false]
[train]
epochs = 2
batch_size = 4
optimizer = "sgd"
lr = 0.0001
momentum = 0.9
weight_decay = 0.0
log_every = 1
augment = false
[data]
dataset = "cifar10"
path = "data"
train_subset = 8
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_workers_race_and_every_trial_runs_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(30))).await;
    let spec = grid(RACE_GRID);
    let out = coord.store.submit(&spec, 0).await.unwrap();
    assert_eq!((out.total_trials, out.added_trials), (500, 500));

    let ckpt = dir.path().join("checkpoints");
    let mut workers: Vec<_> =
        (0..16).map(|i| spawn_worker(&coord.url, &format!("w{i:02}"), &ckpt, 0, &["--idle-exit-secs", "3"])).collect();
    wait_for(&coord.store, "race", Duration::from_secs(240), "all 500 trials to finish", |s| s.counts.finished()).await;
    for w in &mut workers {
        let status =
            tokio::time::timeout(Duration::from_secs(30), w.wait()).await.expect("worker exits when idle").unwrap();
        assert!(status.success(), "worker exited with {status}");
    }

    let trials = coord.store.trials("race").await.unwrap();
    assert_eq!(trials.len(), 500);
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for t in &trials {
        assert_eq!(t.state, TrialState::Succeeded, "trial {} ended {:?}", t.trial_id, t.state);
        // Leased exactly once: no trial was handed to two workers.
        assert_eq!(t.attempts, 1, "trial {} was leased {} times", t.trial_id, t.attempts);
        assert_eq!(t.failures, 0);
        *per_worker.entry(t.worker_id.clone().unwrap()).or_default() += 1;
        let metrics = coord.store.metrics(&t.trial_id).await.unwrap();
        // Gradient norms ride along at every logging step; the rest is
        // checked exactly.
        let mut keys: Vec<(String, i64)> =
            metrics.iter().filter(|m| !m.name.starts_with("grad_norm/")).map(|m| (m.name.clone(), m.step)).collect();
        keys.sort();
        let expected: Vec<(String, i64)> = vec![
            ("test_accuracy".into(), 2),
            ("test_accuracy".into(), 4),
            ("test_loss".into(), 2),
            ("test_loss".into(), 4),
            ("train_loss".into(), 1),
            ("train_loss".into(), 2),
            ("train_loss".into(), 3),
            ("train_loss".into(), 4),
        ];
        assert_eq!(keys, expected, "metric points of trial {}", t.trial_id);
    }
    // The work really was spread over the racing workers.
    assert!(per_worker.len() >= 8, "only {} workers got trials: {per_worker:?}", per_worker.len());
    println!("500 trials, 4000 loss/accuracy points, {} workers took part: {per_worker:?}", per_worker.len());
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_trial_is_released_after_lease_timeout_and_finishes_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(2);
    let coord = Coordinator::start(dir.path(), fast_config(ttl)).await;
    // One trial of 100 batches at 40 ms each: about 4 s of "training".
    let spec = grid(
        r#"
name = "kill"
seeds = [7]
[grid]
depth = 32
skip = false
init = "default"
batchnorm = true
[train]
epochs = 1
batch_size = 4
log_every = 5
[data]
path = "data"
train_subset = 400
"#,
    );
    coord.store.submit(&spec, 0).await.unwrap();
    let ckpt = dir.path().join("checkpoints");
    let mut a = spawn_worker(&coord.url, "worker-a", &ckpt, 40, &[]);
    wait_for(&coord.store, "kill", Duration::from_secs(60), "worker-a to report progress", |s| {
        s.running.first().is_some_and(|r| r.worker_id == "worker-a" && r.progress.step >= 10)
    })
    .await;
    a.kill().await.unwrap(); // SIGKILL
    let killed_at = tokio::time::Instant::now();

    // Its idle timer must outlast worker-a's lease (2 s) plus a reap.
    let mut b = spawn_worker(&coord.url, "worker-b", &ckpt, 40, &["--idle-exit-secs", "20"]);
    wait_for(&coord.store, "kill", Duration::from_secs(60), "the trial to be re-leased to worker-b", |s| {
        s.running.first().is_some_and(|r| r.worker_id == "worker-b")
    })
    .await;
    let released_after = killed_at.elapsed();
    wait_for(&coord.store, "kill", Duration::from_secs(60), "the trial to finish", |s| s.counts.finished()).await;
    b.kill().await.unwrap();

    let t = coord.store.trials("kill").await.unwrap().remove(0);
    assert_eq!(t.state, TrialState::Succeeded);
    assert_eq!(t.attempts, 2, "leased once to worker-a, once to worker-b");
    // A lost worker is an infrastructure failure: no trial attempt used.
    assert_eq!((t.failures, t.infra_failures), (0, 1));
    assert_eq!(t.worker_id.as_deref(), Some("worker-b"));
    let err = t.last_error.unwrap_or_default();
    assert!(err.contains("lease expired") && err.contains("worker-a"), "last_error: {err}");
    // Not handed out before the dead worker's lease ran out.
    assert!(released_after >= ttl / 2, "re-leased after only {released_after:?}");
    // Every logged step is stored exactly once although two workers ran it.
    let steps: Vec<i64> = coord
        .store
        .metrics(&t.trial_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.name == "train_loss")
        .map(|m| m.step)
        .collect();
    assert_eq!(steps, (1..=20).map(|i| i * 5).collect::<Vec<i64>>());
    coord.stop().await;
}
