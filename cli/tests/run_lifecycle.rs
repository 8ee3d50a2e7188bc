//! `sweep run`'s lifecycle with real processes (issue 8, bugs 2 and 7): it
//! ends, naming the cause, when its workers cannot run the sweep; SIGTERM
//! hands the trials back and leaves no process behind; a SIGKILLed
//! `sweep run` leaves no worker behind either (they watch their stdin).

mod common;

use common::{sweep, wait_exit, worker_bin};

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sweep_coordinator::store::{SqliteStore, Store, TrialState};

/// The processes whose command line mentions `needle` (the test's unique
/// state folder: every worker of the run gets `--checkpoint-dir` in it).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == me {
            continue;
        }
        // A zombie (exited, not yet reaped) has an empty command line.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Stderr read on a thread (so a chatty child never blocks on a full pipe).
fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    })
}

/// `sweep run GRID FLAGS --state-dir STATE --worker-bin <sweep-worker>`,
/// stdout discarded; returns the child and its stderr read on a thread.
fn spawn_run(grid: &Path, state: &Path, flags: &[&str]) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = sweep()
        .arg("run")
        .arg(grid)
        .args(flags)
        .arg("--state-dir")
        .arg(state)
        .arg("--worker-bin")
        .arg(worker_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect_stderr(&mut child);
    (child, stderr)
}

fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn grid(dir: &Path, name: &str, seeds: u32, data: &str, train_subset: u32) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nseeds = {seeds}\n[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n\
             [train]\nepochs = 2\nbatch_size = 4\nlog_every = 5\n[data]\npath = \"{data}\"\ntrain_subset = {train_subset}\ntest_subset = 8\n"
        ),
    )
    .unwrap();
    path
}

fn trials(db: &Path, sweep: &str) -> Vec<sweep_coordinator::store::TrialRecord> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&format!("sqlite://{}", db.display())).await.unwrap();
        store.trials(sweep).await.unwrap()
    })
}

fn running(db: &Path, sweep: &str) -> usize {
    if !db.exists() {
        return 0;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let Ok(store) = SqliteStore::open(&format!("sqlite://{}", db.display())).await else { return 0 };
        store.status(Some(sweep)).await.map(|s| s.first().map(|s| s.running.len()).unwrap_or(0)).unwrap_or(0)
    })
}

/// Bug 2: a data path that does not exist, 4 seeds, the real worker. Each
/// trial fails on its own error (no quarantine of the only worker), and
/// `sweep run` ends non-zero saying why.
#[test]
fn sweep_run_with_a_missing_data_path_ends_non_zero_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-cifar");
    let grid = grid(dir.path(), "nodata", 4, &missing.display().to_string(), 16);
    let state = dir.path().join("state");
    let (mut child, stderr) = spawn_run(&grid, &state, &["--workers", "1", "--grace-secs", "2"]);
    let status = wait_exit(&mut child, Duration::from_secs(60), "sweep run over a missing data path");
    let stderr = stderr.join().unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-cifar"), "stderr does not name the missing path:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let ts = trials(&state.join("nodata.db"), "nodata");
    assert_eq!(ts.len(), 4);
    for t in &ts {
        assert_eq!(t.state, TrialState::Failed, "{t:?}");
        assert!(t.last_error.as_deref().unwrap_or("").contains("no-such-cifar"), "{t:?}");
    }
    assert!(processes_mentioning(&state.display().to_string()).is_empty());
}

/// Bug 2, the other way a sweep can be left without workers: every local
/// worker dies at start-up (here: a GPU that is not there). `sweep run`
/// notices, quotes their exit status and log, cancels nothing, and exits 1.
#[test]
fn sweep_run_whose_workers_all_die_says_why_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid(dir.path(), "noworkers", 2, "data", 16);
    let state = dir.path().join("state");
    let (mut child, stderr) = spawn_run(&grid, &state, &["--workers", "2", "--device", "cuda:63"]);
    let status = wait_exit(&mut child, Duration::from_secs(60), "sweep run without workers");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no local worker is left"), "{stderr}");
    assert!(stderr.contains("worker local-0 exited with status") && stderr.contains("worker local-1"), "{stderr}");
    assert!(stderr.contains("cuda:63"), "the workers' own error is quoted:\n{stderr}");
    assert!(stderr.contains("Nothing was cancelled"), "{stderr}");
    let ts = trials(&state.join("noworkers.db"), "noworkers");
    assert!(ts.iter().all(|t| t.state == TrialState::Queued), "{ts:?}");
}

/// Starts a long simulated sweep with two workers and waits until both run
/// a trial. Returns the `sweep run` child, its stderr, and the state folder.
fn start_long_run(dir: &Path, name: &str) -> (Child, std::thread::JoinHandle<String>, std::path::PathBuf) {
    // 2 epochs of 1,000 batches at 20 ms: far longer than the test.
    let grid = grid(dir, name, 4, "data", 4000);
    let state = dir.join("state");
    let (mut child, stderr) =
        spawn_run(&grid, &state, &["--workers", "2", "--simulate-step-ms", "20", "--grace-secs", "2"]);
    let db = state.join(format!("{name}.db"));
    wait_until(Duration::from_secs(60), "both workers to run a trial", || {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("sweep run exited early: {s}");
        }
        running(&db, name) == 2
    });
    let others: Vec<_> =
        processes_mentioning(&state.display().to_string()).into_iter().filter(|(pid, _)| *pid != child.id()).collect();
    assert_eq!(others.len(), 2, "two worker processes besides sweep run: {others:?}");
    (child, stderr, state)
}

/// Sends `signal` to `sweep run` alone (as `timeout`, a scheduler or an
/// editor's stop button does): the workers hand their trials back,
/// everything stops, and it exits with `code`.
fn stop_with(signal: &str, code: i32, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stderr, state) = start_long_run(dir.path(), name);
    Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30), "sweep run after the signal");
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains(&format!("SIG{signal}")) && stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    let left = processes_mentioning(&state.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let ts = trials(&state.join(format!("{name}.db")), name);
    assert!(ts.iter().all(|t| t.state == TrialState::Queued), "every trial back in the queue: {ts:?}");
    assert_eq!(ts.iter().map(|t| t.handbacks).sum::<u32>(), 2, "both running trials handed back: {ts:?}");
    assert!(ts.iter().all(|t| t.failures == 0), "no attempt used: {ts:?}");
}

/// Bug 7: SIGTERM hands the trials back and leaves no process; exit 143.
#[test]
fn sigterm_to_sweep_run_hands_the_trials_back_and_leaves_no_process() {
    stop_with("TERM", 143, "term");
}

/// Ctrl-C: the same, exit 130.
#[test]
fn sigint_to_sweep_run_hands_the_trials_back_and_leaves_no_process() {
    stop_with("INT", 130, "int");
}

/// Bug 7: a SIGKILLed `sweep run` cannot stop anything itself; its workers
/// see their stdin close and exit by themselves within a few seconds.
#[test]
fn sigkill_of_sweep_run_leaves_no_worker_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _stderr, state) = start_long_run(dir.path(), "kill");
    child.kill().unwrap();
    child.wait().unwrap();
    let needle = state.display().to_string();
    // The grace period (2 s) plus a margin: the coordinator died with
    // `sweep run`, so the workers cannot hand back and must give up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        if Instant::now() > deadline {
            let left = processes_mentioning(&needle);
            for (pid, _) in &left {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
            let logs: String = (0..2)
                .map(|i| std::fs::read_to_string(state.join(format!("logs/worker-{i}.log"))).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n----\n");
            panic!("workers still running 10 s after sweep run was SIGKILLed: {left:?}\nlogs:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
