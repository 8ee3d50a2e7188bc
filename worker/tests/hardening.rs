//! Worker hardening (issue 8), with real processes: a real coordinator
//! (the library's `serve` on 127.0.0.1:0 over SQLite), real `sweep-worker`
//! processes over gRPC, the simulated trainer as test double.
//!
//! - SIGTERM grace bounds everything when the coordinator is gone (bug 4);
//! - `--watch-stdin`: end of stdin shuts the worker down like SIGTERM, and
//!   without the flag a closed stdin changes nothing (bug 7, worker side);
//! - a metric batch the coordinator refuses for good fails the trial
//!   instead of being re-sent forever (bug 1, daemon side);
//! - a checkpoint this database does not vouch for is ignored, and the
//!   checkpoints are deleted once the result is acknowledged (bug 3, 4);
//! - numeric and worker-ID flags are validated (bug 8);
//! - a quarantined worker says so and stops.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use sweep_coordinator::store::Store;
use sweep_core::TrialState;

/// One trial (seed 1, depth 8) of `epochs` epochs over `train_subset`
/// examples in batches of 4, a loss point every batch.
fn one_trial(name: &str, epochs: u32, train_subset: u32) -> sweep_core::GridSpec {
    grid(&format!(
        "name = \"{name}\"\nseeds = [1]\n[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n\
         [train]\nepochs = {epochs}\nbatch_size = 4\nlog_every = 1\n[data]\npath = \"data\"\ntrain_subset = {train_subset}\n"
    ))
}

/// One trial of 50 epochs x 10 batches: at 50 ms a batch, far longer than
/// any of these tests waits.
fn long_grid() -> sweep_core::GridSpec {
    one_trial("long", 50, 40)
}

/// One short trial: 2 epochs x 2 batches.
fn short_grid() -> sweep_core::GridSpec {
    one_trial("short", 2, 8)
}

fn worker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sweep-worker")
}

/// A worker process with the simulated trainer, stderr into `log`.
fn worker_cmd(url: &str, id: &str, ckpt: &Path, log: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(worker_bin());
    c.args(["--coordinator", url, "--worker-id", id, "--simulate-step-ms", "50"])
        .arg("--checkpoint-dir")
        .arg(ckpt)
        .args(extra)
        .env("SWEEP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    c
}

fn sigterm(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// Waits for the child to exit, at most `limit`; returns (status, elapsed).
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> (Option<std::process::ExitStatus>, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (Some(s), t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

async fn running_step(store: &std::sync::Arc<dyn Store>, sweep: &str) -> Option<i64> {
    let s = store.status(Some(sweep)).await.unwrap().remove(0);
    s.running.first().map(|r| r.progress.step)
}

/// Bug 4: with the coordinator gone, SIGTERM with `--grace-secs 2` ends the
/// worker within 3 s (the trainer is stuck in its checkpoint barrier and
/// every call to the coordinator would retry), and it exits cleanly through
/// the daemon, not through the last-resort watchdog.
#[test]
fn sigterm_with_the_coordinator_gone_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    // The coordinator lives in its own runtime, so dropping that runtime
    // kills it abruptly: listener and every connection close at once.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let coord = rt.block_on(Coordinator::start(dir.path(), fast_config(Duration::from_secs(30))));
    rt.block_on(coord.store.submit(&long_grid(), 0)).unwrap();
    let log = dir.path().join("worker.log");
    let ckpt = dir.path().join("checkpoints");
    let mut w = worker_cmd(&coord.url, "graceful", &ckpt, &log, &["--grace-secs", "2"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt.block_on(running_step(&coord.store, "long")).unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "the trial never ran; worker log:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.shutdown_background();
    // Its store's pool belonged to that runtime: do not run its destructor.
    std::mem::forget(coord);
    std::thread::sleep(Duration::from_millis(300));

    sigterm(w.id());
    let (status, took) = wait_exit(&mut w, Duration::from_secs(10));
    let log = read(&log);
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM; log:\n{log}"));
    assert!(took < Duration::from_secs(3), "took {took:?} to exit after SIGTERM with --grace-secs 2; log:\n{log}");
    assert!(status.success(), "exited with {status} (the watchdog, not the daemon?); log:\n{log}");
    assert!(log.contains("grace"), "no word about the grace period in the log:\n{log}");
}

/// Bug 7, worker side: with `--watch-stdin`, closing the pipe on its stdin
/// stops the worker like SIGTERM (trial handed back, exit within grace + 1
/// s); without the flag a closed stdin changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdin_shuts_down_only_a_worker_that_watches_it() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(30))).await;
    coord.store.submit(&long_grid(), 0).await.unwrap();
    let ckpt = dir.path().join("checkpoints");

    let log = dir.path().join("watching.log");
    let mut w = worker_cmd(&coord.url, "watching", &ckpt, &log, &["--watch-stdin", "--grace-secs", "2"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&coord.store, "long", Duration::from_secs(30), "the trial to run", |s| {
        s.running.first().is_some_and(|r| r.progress.step >= 2)
    })
    .await;
    drop(w.stdin.take());
    let (status, took) = tokio::task::block_in_place(|| wait_exit(&mut w, Duration::from_secs(10)));
    let text = read(&log);
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after its stdin closed; log:\n{text}"));
    assert!(took < Duration::from_secs(3), "took {took:?}; log:\n{text}");
    assert!(status.success(), "{status}; log:\n{text}");
    assert!(text.contains("stdin closed"), "{text}");
    // Handed back like on SIGTERM: queued again, no attempt used up.
    wait_for(&coord.store, "long", Duration::from_secs(5), "the trial to be handed back", |s| {
        s.counts.queued == 1 && s.counts.running == 0
    })
    .await;
    let t = coord.store.trials("long").await.unwrap().remove(0);
    assert_eq!((t.failures, t.handbacks), (0, 1), "{t:?}");

    // Without the flag: the pipe closes, the worker carries on.
    let log = dir.path().join("plain.log");
    let mut p =
        worker_cmd(&coord.url, "plain", &ckpt, &log, &["--grace-secs", "2"]).stdin(Stdio::piped()).spawn().unwrap();
    drop(p.stdin.take());
    wait_for(&coord.store, "long", Duration::from_secs(30), "the trial to run again", |s| {
        s.running.first().is_some_and(|r| r.worker_id == "plain" && r.progress.step >= 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        p.try_wait().unwrap().is_none(),
        "a worker without --watch-stdin exited when its stdin closed:\n{}",
        read(&log)
    );
    sigterm(p.id());
    let (status, _) = tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_secs(10)));
    assert!(status.is_some_and(|s| s.success()), "log:\n{}", read(&log));
    coord.stop().await;
}

/// Bug 1, daemon side: a batch the coordinator refuses for good
/// (INVALID_ARGUMENT) fails the trial with an error naming the batch, at
/// once, instead of being re-sent forever while heartbeats keep the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_refused_batch_fails_the_trial_instead_of_looping() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(30))).await;
    coord.store.submit(&long_grid(), 0).await.unwrap();
    let log = dir.path().join("worker.log");
    let mut w = worker_cmd(
        &coord.url,
        "refused",
        &dir.path().join("ck"),
        &log,
        &["--simulate-refused-metric", "--max-trials", "1"],
    )
    .spawn()
    .unwrap();
    let (status, took) = tokio::task::block_in_place(|| wait_exit(&mut w, Duration::from_secs(20)));
    let text = read(&log);
    assert!(status.is_some_and(|s| s.success()), "worker did not finish its one trial within {took:?}; log:\n{text}");
    let t = coord.store.trials("long").await.unwrap().remove(0);
    assert_eq!(t.failures, 1, "{t:?}\n{text}");
    assert_ne!(t.state, TrialState::Running, "{t:?}");
    let err = t.last_error.clone().unwrap_or_default();
    assert!(err.contains("refused") && err.contains("metric batch") && err.contains("InvalidArgument"), "{err}");
    println!("trial failed after {took:?} with: {err}");
    coord.stop().await;
}

/// Quarantine, worker side: once the coordinator quarantines a worker (here
/// after one failed trial), its next lease call is refused with quarantine's
/// own code (PERMISSION_DENIED, not the lost-lease FAILED_PRECONDITION); the
/// worker says it is quarantined and stops instead of retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_worker_says_so_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_coordinator::CoordinatorConfig { quarantine_after: 1, ..fast_config(Duration::from_secs(30)) };
    let coord = Coordinator::start(dir.path(), config).await;
    let mut g = long_grid();
    g.seeds = vec![1, 2];
    coord.store.submit(&g, 0).await.unwrap();
    let log = dir.path().join("worker.log");
    let mut w = worker_cmd(&coord.url, "crashloop", &dir.path().join("ck"), &log, &["--simulate-refused-metric"])
        .spawn()
        .unwrap();
    let (status, took) = tokio::task::block_in_place(|| wait_exit(&mut w, Duration::from_secs(20)));
    let text = read(&log);
    assert!(
        status.is_some_and(|s| !s.success()),
        "the worker did not stop with an error within {took:?}; log:\n{text}"
    );
    assert!(text.contains("PERMISSION_DENIED") && text.contains("quarantined"), "log:\n{text}");
    let trials = coord.store.trials("long").await.unwrap();
    assert_eq!(
        trials.iter().filter(|t| t.failures > 0).count(),
        1,
        "one failed trial, then no more leases: {trials:?}"
    );
    coord.stop().await;
}

fn trial_dir(ckpt: &Path, trial: &str) -> PathBuf {
    ckpt.join(trial)
}

/// Bug 3 and checkpoint clean-up, with the simulated trainer: a checkpoint
/// written for another coordinator database (here: the trial's final one,
/// which would mark it finished at once) is ignored with a log line, the
/// trial trains from step 1, and once its result is acknowledged its
/// checkpoint folder is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_checkpoint_is_ignored_and_checkpoints_go_after_success() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), fast_config(Duration::from_secs(30))).await;
    coord.store.submit(&short_grid(), 0).await.unwrap();
    let trial = coord.store.trials("short").await.unwrap().remove(0).trial_id;
    let ckpt = dir.path().join("checkpoints");
    let tdir = trial_dir(&ckpt, &trial);
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(
        tdir.join("simulated.json"),
        format!(r#"{{"epoch":2,"step":4,"store_id":"another-database","trial_id":"{trial}"}}"#),
    )
    .unwrap();

    let log = dir.path().join("worker.log");
    let mut w = worker_cmd(&coord.url, "fresh", &ckpt, &log, &["--max-trials", "1"]).spawn().unwrap();
    let (status, _) = tokio::task::block_in_place(|| wait_exit(&mut w, Duration::from_secs(30)));
    let text = read(&log);
    assert!(status.is_some_and(|s| s.success()), "log:\n{text}");
    let t = coord.store.trials("short").await.unwrap().remove(0);
    assert_eq!(t.state, TrialState::Succeeded, "{t:?}\n{text}");
    assert_eq!(t.resumed_step, Some(0), "trained from scratch");
    let mut steps: Vec<i64> = coord
        .store
        .metrics(&trial)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.name == "train_loss")
        .map(|m| m.step)
        .collect();
    steps.sort();
    assert_eq!(steps, vec![1, 2, 3, 4], "the full loss curve");
    assert!(text.contains("ignoring checkpoint") && text.contains("another coordinator database"), "{text}");
    assert!(!tdir.exists(), "the trial's checkpoints were kept after its result was acknowledged");
    coord.stop().await;
}

/// Bug 8, worker side: every numeric flag and the worker ID are checked at
/// start-up, with exit code 2 and a message naming the flag.
#[test]
fn bad_flag_values_are_refused_with_exit_2() {
    let long_id = "w".repeat(129);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--threads", "0"], "--threads"),
        (vec!["--threads", "1025"], "--threads"),
        (vec!["--threads=-3"], "--threads"),
        (vec!["--grace-secs", "3601"], "--grace-secs"),
        (vec!["--grace-secs", "18446744073709551615"], "--grace-secs"),
        (vec!["--idle-exit-secs", "0"], "--idle-exit-secs"),
        (vec!["--idle-exit-secs", "604801"], "--idle-exit-secs"),
        (vec!["--max-trials", "0"], "--max-trials"),
        (vec!["--slots", "0"], "--slots"),
        (vec!["--slots", "33"], "--slots"),
        (vec!["--fuse", "65"], "--fuse"),
        (vec!["--worker-id", ""], "--worker-id"),
        (vec!["--worker-id", &long_id], "--worker-id"),
        (vec!["--worker-id", "evil\u{1b}[31m"], "--worker-id"),
        (vec!["synth-data", "--out", "/nonexistent/x", "--train", "0"], "--train"),
        (vec!["synth-data", "--out", "/nonexistent/x", "--train", "100000000"], "--train"),
        (vec!["synth-data", "--out", "/nonexistent/x", "--test", "10001"], "--test"),
        (vec!["model", "--depth", "100000"], "--depth"),
        (vec!["model", "--depth", "12"], "--depth"),
    ];
    for (args, flag) in cases {
        let out = std::process::Command::new(worker_bin())
            .args(&args)
            // Must fail before connecting anywhere.
            .args(if args[0].starts_with("--") { vec!["--coordinator", "http://127.0.0.1:9"] } else { vec![] })
            .env_remove("SWEEP_THREADS")
            .env_remove("SWEEP_GRACE_SECS")
            .env_remove("SWEEP_IDLE_EXIT_SECS")
            .env_remove("SWEEP_WORKER_ID")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}\n{err}", out.status);
        assert!(err.contains(flag), "{args:?}: the message does not name {flag}:\n{err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
