//! Fused seeds end to end (issue 10): real `sweep` and `sweep-worker`
//! processes over real gRPC, real libtorch training of BMEnet on tiny
//! synthetic data (`sweep-worker synth-data`). A worker started with
//! `--fuse K` (or `SWEEP_FUSE=K`, which `sweep run` hands on to the local
//! workers it starts) leases up to K seeds of one grid cell at once and
//! trains them as one fused model, yet every trial keeps its own lease,
//! metrics, checkpoints and result:
//!
//! - a fused `sweep run` stores each seed as its own result, with its own
//!   loss curve and final numbers, and the report counts every seed;
//! - SIGTERM to a worker training a fused group hands every trial of the
//!   group back (queued, no attempt used), and a new fused worker resumes
//!   each of them from its own checkpoint and finishes them.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_ok, sweep, synth_data, wait_exit, worker_bin, Server};
use sweep_coordinator::store::{MetricRow, SqliteStore, Store, TrialRecord, TrialState};

/// Worker logs at info level (where the fused-group lines are), the rest
/// of `sweep` at warn.
const LOG_FILTER: &str = "warn,sweep_worker=info";

/// The grid `<dir>/<name>.toml`: depth 8 with `skip`, `seeds` seeds,
/// batches of 16 over all of the synthetic data in `dir`, a loss point
/// every batch.
fn grid(dir: &Path, name: &str, skip: &str, seeds: u32, epochs: u32, (train, test): (u32, u32)) -> PathBuf {
    let data = synth_data(dir, train, test);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "{name}"
seeds = {seeds}
[grid]
depth = 8
skip = {skip}
init = "default"
batchnorm = true
[train]
epochs = {epochs}
batch_size = 16
log_every = 1
[data]
path = {:?}
train_subset = {train}
test_subset = {test}
"#,
            data.display().to_string()
        ),
    )
    .unwrap();
    path
}

fn read_back(db: &Path, sweep: &str) -> Vec<(TrialRecord, Vec<MetricRow>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&format!("sqlite://{}", db.display())).await.unwrap();
        let mut out = Vec::new();
        for t in store.trials(sweep).await.unwrap() {
            let m = store.metrics(&t.trial_id).await.unwrap();
            out.push((t, m));
        }
        out
    })
}

/// The steps of one metric, sorted (repeats kept, so a step stored twice shows).
fn steps(metrics: &[MetricRow], name: &str) -> Vec<i64> {
    let mut s: Vec<i64> = metrics.iter().filter(|m| m.name == name).map(|m| m.step).collect();
    s.sort_unstable();
    s
}

/// The train loss curve, in step order.
fn loss_curve(metrics: &[MetricRow]) -> Vec<(i64, f64)> {
    let mut c: Vec<(i64, f64)> = metrics.iter().filter(|m| m.name == "train_loss").map(|m| (m.step, m.value)).collect();
    c.sort_by_key(|p| p.0);
    c
}

/// Acceptance: `sweep run` with one worker and `SWEEP_FUSE=3` over 2 cells
/// x 3 seeds trains each cell's seeds as one fused group of 3, and still
/// stores 6 results of their own: each seed's full loss curve, its own
/// final numbers, and the report counts 3 succeeded seeds in each cell.
#[test]
fn a_fused_sweep_runs_every_trial_as_its_own_result() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid(dir.path(), "fused", "[true, false]", 3, 2, (64, 32));
    let state = dir.path().join("state");
    let db = dir.path().join("fused.db");
    let t0 = Instant::now();
    let child = common::sweep_run(&grid, &state, &db)
        .args(["--workers", "1"])
        .env("SWEEP_FUSE", "3")
        .env("SWEEP_LOG", LOG_FILTER)
        .spawn()
        .unwrap();
    let out = common::finish(child, Duration::from_secs(300), "sweep run with SWEEP_FUSE=3");
    let took = t0.elapsed();
    let log = std::fs::read_to_string(state.join("logs").join("worker-0.log")).unwrap_or_default();
    let all = format!(
        "stdout:\n{}\nstderr:\n{}\nworker log:\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sweep run failed: {}\n{all}", out.status);
    println!("sweep run took {took:?}");

    // One fused group of 3 per cell, in the daemon and in the trainer.
    let daemon_groups = log.lines().filter(|l| l.contains("training a fused group of seeds")).collect::<Vec<_>>();
    assert_eq!(daemon_groups.len(), 2, "one fused lease per cell:\n{log}");
    assert!(daemon_groups.iter().all(|l| l.contains("trials=3")), "{daemon_groups:?}");
    let trainer_groups = log.lines().filter(|l| l.contains("training as one fused group")).collect::<Vec<_>>();
    assert_eq!(trainer_groups.len(), 2, "the trainer fused each cell's seeds:\n{log}");
    assert!(trainer_groups.iter().all(|l| l.contains("trials=3")), "{trainer_groups:?}");

    // The report counts every seed of every cell.
    let server = Server::start(&db);
    let json = run_ok(sweep().args(["report", "fused", "--format", "json", "--coordinator", &server.url]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2, "{json}");
    let mut skips: Vec<bool> = cells.iter().map(|c| c["skip"].as_bool().unwrap()).collect();
    skips.sort_unstable();
    assert_eq!(skips, vec![false, true], "{json}");
    for c in cells {
        assert_eq!(c["depth"], 8, "{c}");
        assert_eq!(c["seeds_total"], 3, "{c}");
        assert_eq!(c["succeeded"], 3, "{c}");
        assert_eq!(c["test_accuracy"]["n"], 3, "three results of their own: {c}");
    }
    drop(server);

    // Each trial's own result: its full loss curve (8 steps: 4 batches x 2
    // epochs), its own test metrics per epoch, its own final numbers.
    let trials = read_back(&db, "fused");
    assert_eq!(trials.len(), 6);
    let full: Vec<i64> = (1..=8).collect();
    for (t, m) in &trials {
        assert_eq!(t.state, TrialState::Succeeded, "{t:?}\n{all}");
        assert_eq!(steps(m, "train_loss"), full, "trial {}'s loss curve", t.trial_id);
        assert_eq!(steps(m, "test_accuracy"), vec![4, 8], "trial {}'s test accuracy", t.trial_id);
        assert!(t.summary.final_train_loss.is_some_and(f64::is_finite), "{t:?}");
        assert!(t.summary.final_test_loss.is_some_and(f64::is_finite), "{t:?}");
        assert!(t.summary.final_test_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)), "{t:?}");
    }
    // The seeds differ: no two trials share a loss curve or a final test loss.
    let curves: BTreeSet<String> = trials.iter().map(|(_, m)| format!("{:?}", loss_curve(m))).collect();
    assert_eq!(curves.len(), 6, "two trials have the same loss curve");
    let test_losses: BTreeSet<u64> = trials.iter().map(|(t, _)| t.summary.final_test_loss.unwrap().to_bits()).collect();
    assert_eq!(test_losses.len(), 6, "two trials have the same final test loss");
}

/// `sweep status NAME`'s row for the sweep: queued, running, succeeded,
/// diverged, failed, cancelled (then the state), and the lines under the
/// table (one per running trial).
fn status(url: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let out = run_ok(sweep().args(["status", name, "--coordinator", url]));
    let row = out
        .lines()
        .map(|l| l.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{out}"));
    let running = out.lines().filter(|l| l.trim_start().starts_with(&format!("{name} running "))).map(str::to_owned);
    (row[1..].to_vec(), running.collect())
}

/// `sweep-worker --fuse 3` against `url`, its log (stdout and stderr, at
/// info) in `log`.
fn fused_worker(url: &str, id: &str, checkpoints: &Path, log: &Path, extra: &[&str]) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(worker_bin())
        .args(["--coordinator", url, "--device", "cpu", "--worker-id", id, "--fuse", "3", "--threads", "2"])
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .args(["--grace-secs", "60"])
        .args(extra)
        .env_remove("SWEEP_COORDINATOR")
        .env_remove("SWEEP_FUSE")
        .env("SWEEP_LOG", LOG_FILTER)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

/// Kills a worker left running by a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Acceptance: one cell x 3 seeds, a coordinator and one `sweep-worker
/// --fuse 3`. Once the fused group has checkpointed, SIGTERM to the worker
/// hands all three trials back (queued, a hand-back each, no attempt used,
/// a checkpoint each at the same step). A second `--fuse 3` worker leases
/// the three again as one group, resumes each from its own checkpoint, and
/// finishes them with each loss curve whole (every step exactly once).
#[test]
fn preempting_a_fused_worker_requeues_the_whole_group_and_it_resumes() {
    const TRAIN: u32 = 192;
    const EPOCHS: u32 = 3;
    let steps_per_epoch = i64::from(TRAIN / 16);
    let total = steps_per_epoch * i64::from(EPOCHS);
    let dir = tempfile::tempdir().unwrap();
    let grid = grid(dir.path(), "preempt", "true", 3, EPOCHS, (TRAIN, 32));
    let db = dir.path().join("preempt.db");
    let server = Server::start(&db);
    run_ok(sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]));
    let checkpoints = dir.path().join("checkpoints");
    let log1 = dir.path().join("worker-1.log");
    let log2 = dir.path().join("worker-2.log");
    let logs = || {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("first worker's log:\n{}\nsecond worker's log:\n{}", read(&log1), read(&log2))
    };
    let t0 = Instant::now();

    // The first worker trains the three seeds as one group until each has a
    // checkpoint the coordinator vouches for (the end of epoch 1).
    let mut w1 = KillOnDrop(fused_worker(&server.url, "first", &checkpoints, &log1, &[]));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = w1.0.try_wait().unwrap() {
            panic!("the first worker exited early: {s}\n{}", logs());
        }
        let ts = read_back(&db, "preempt");
        if ts.len() == 3 && ts.iter().all(|(t, _)| t.checkpoint_step.is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint of every trial within 120 s: {ts:?}\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (counts, running) = status(&server.url, "preempt");
    assert_eq!(counts[..3], ["0", "3", "0"], "all three run (queued, running, succeeded): {counts:?}");
    assert_eq!(running.len(), 3, "{running:?}");
    assert!(running.iter().all(|l| l.contains(" on first ")), "{running:?}");
    let log = std::fs::read_to_string(&log1).unwrap();
    assert!(log.contains("training a fused group of seeds trials=3"), "{log}");
    assert!(log.contains("training as one fused group trials=3"), "{log}");

    // Preempted: SIGTERM; the worker stops at its next step, checkpoints
    // and hands every trial of the group back, then exits by itself.
    let sent = Command::new("kill").arg("-TERM").arg(w1.0.id().to_string()).status().unwrap();
    assert!(sent.success());
    let status1 = wait_exit(&mut w1.0, Duration::from_secs(90), "the first worker after SIGTERM");
    assert!(status1.success(), "the first worker after SIGTERM: {status1}\n{}", logs());
    let preempted_after = t0.elapsed();
    let (counts, running) = status(&server.url, "preempt");
    assert_eq!(counts[..6], ["3", "0", "0", "0", "0", "0"], "all three back in the queue: {counts:?}\n{}", logs());
    assert!(running.is_empty(), "{running:?}");
    let back = read_back(&db, "preempt");
    let mut handed_back_at = BTreeSet::new();
    for (t, m) in &back {
        assert_eq!(t.state, TrialState::Queued, "{t:?}");
        assert_eq!((t.handbacks, t.failures, t.infra_failures), (1, 0, 0), "handed back, no attempt used: {t:?}");
        let step = t.checkpoint_step.unwrap_or_else(|| panic!("no checkpoint after the hand-back: {t:?}"));
        assert!(step >= steps_per_epoch && step < total, "checkpoint at step {step}: {t:?}");
        assert_eq!(steps(m, "train_loss"), (1..=step).collect::<Vec<_>>(), "loss curve up to the checkpoint: {t:?}");
        handed_back_at.insert(step);
    }
    assert_eq!(handed_back_at.len(), 1, "a fused group stops at one step: {back:?}");
    let resume_at = handed_back_at.into_iter().next().unwrap();

    // A second fused worker takes the group again and resumes every trial.
    let mut w2 = KillOnDrop(fused_worker(&server.url, "second", &checkpoints, &log2, &["--max-trials", "3"]));
    let status2 = wait_exit(&mut w2.0, Duration::from_secs(180), "the second worker");
    assert!(status2.success(), "the second worker: {status2}\n{}", logs());
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(log.contains("training a fused group of seeds trials=3"), "{log}");
    assert!(
        log.contains(&format!("training as one fused group trials=3 step={resume_at}")),
        "the group resumed together at step {resume_at}:\n{log}"
    );
    let (counts, _) = status(&server.url, "preempt");
    assert_eq!(counts[..6], ["0", "0", "3", "0", "0", "0"], "all three succeeded: {counts:?}\n{}", logs());
    let done = read_back(&db, "preempt");
    let full: Vec<i64> = (1..=total).collect();
    for (t, m) in &done {
        assert_eq!(t.state, TrialState::Succeeded, "{t:?}\n{}", logs());
        assert_eq!(t.resumed_step, Some(resume_at), "{t:?}");
        assert_eq!(t.worker_id.as_deref(), Some("second"), "{t:?}");
        let resumed = log.lines().filter(|l| l.contains("resuming from checkpoint") && l.contains(&t.trial_id));
        assert_eq!(resumed.count(), 1, "trial {} did not resume from its checkpoint:\n{log}", t.trial_id);
        assert_eq!(steps(m, "train_loss"), full, "trial {}'s loss curve, every step once", t.trial_id);
        assert_eq!(steps(m, "test_accuracy"), vec![steps_per_epoch, 2 * steps_per_epoch, total], "{t:?}");
        assert!(t.summary.final_test_loss.is_some_and(f64::is_finite), "{t:?}");
        assert!(!checkpoints.join(&t.trial_id).exists(), "checkpoints kept after success: {t:?}");
    }
    let curves: BTreeSet<String> = done.iter().map(|(_, m)| format!("{:?}", loss_curve(m))).collect();
    assert_eq!(curves.len(), 3, "two seeds have the same loss curve");
    println!("preempted after {preempted_after:?}; all done after {:?}", t0.elapsed());
}
