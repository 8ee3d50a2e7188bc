//! The exec trainer through real processes: a `sweep serve` coordinator,
//! real `sweep-worker` daemons and Python commands using the shipped
//! helper (`python/sweep_trial.py`). Results are read back from the
//! coordinator's SQLite file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_port, kill, open_store as store, run_ok, sigterm, sweep, sweep_finished as finished, sweep_run, wait_exit,
    wait_until,
};
use sweep_coordinator::store::{Store, TrialRecord, TrialState};

/// `sweep serve` on `port` with 2 s leases.
fn serve(db: &Path, port: u16) -> std::process::Child {
    common::serve_on(db, port, 2)
}

/// The interpreter the commands run with: the project's (scripts/env.sh
/// sets SWEEP_PYTHON), else `python3` on PATH.
fn python() -> String {
    std::env::var("SWEEP_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A training command that behaves as its `mode` factor says.
const SCRIPT: &str = r#"
import os, signal, sys, time
sys.path.insert(0, os.environ["HELPER_DIR"])
import sweep_trial

t = sweep_trial.Trial()
mode = t.config.get("mode", "ok")
steps = int(t.settings.get("steps", 6))
print("mode", os.environ["SWEEP_FACTOR_MODE"], "seed", t.seed, "attempt", t.attempt, flush=True)
with open(os.path.join(t.checkpoint_dir, "pid-%d" % t.attempt), "w") as f:
    f.write(str(os.getpid()))
if mode == "handback" and t.attempt == 1:
    sys.exit(sweep_trial.HAND_BACK)
if mode == "fail":
    print("boom: the script failed", file=sys.stderr)
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
start = t.resume_step or 0
if start:
    with open(t.checkpoint_path(start, "state.txt")) as f:
        assert int(f.read()) == start
    print("resumed at", start, flush=True)
for step in range(start + 1, steps + 1):
    t.log(step=step, epoch=1, train_loss=1.0 / step)
    if mode == "bad_lines" and step == 2:
        t._sock.sendall(b'not json\n{"x": "high"}\n[1]\n')
    if mode == "nan" and step == 3:
        t.log(step=step, train_loss=float("nan"))
    if mode == "slow":
        time.sleep(0.25)
        if t.checkpoint(step):
            with open(t.checkpoint_path(step, "state.txt"), "w") as f:
                f.write(str(step))
            t.checkpointed(step)
    if mode == "preempt":
        time.sleep(0.25)
    if t.should_stop:
        # A checkpoint asked for after SIGTERM (preemption) is still vouched for.
        if mode == "preempt" and t.checkpoint(step):
            with open(t.checkpoint_path(step, "state.txt"), "w") as f:
                f.write(str(step))
            t.checkpointed(step)
            print("checkpointed step", step, "after SIGTERM", flush=True)
        print("stopping at step", step, "on SIGTERM", flush=True)
        sys.exit(0)
if mode == "negloss":
    t.final(nll=-3.25, train_loss=-0.5)
    sys.exit(0)
t.final(f1=0.5 + t.seed / 10, test_accuracy=0.25)
"#;

/// A grid running [`SCRIPT`] over `modes` with `seeds` seeds; `more`
/// goes into `[trainer]`.
fn grid(dir: &Path, name: &str, modes: &[&str], seeds: u32, steps: u32, more: &str) -> PathBuf {
    let script = dir.join("train.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let modes: Vec<String> = modes.iter().map(|m| format!("{m:?}")).collect();
    let text = format!(
        r#"
name = "{name}"
seeds = {seeds}
[trainer]
kind = "exec"
command = [{python:?}, "train.py"]
args = ["--seed={{seed}}"]
workdir = "."
env = {{ HELPER_DIR = {helper:?} }}
{more}
[grid]
mode = [{modes}]
[train]
steps = {steps}
[run]
max_attempts = 1
"#,
        python = python(),
        helper = repo().join("python").display().to_string(),
        modes = modes.join(", "),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Trial ID of each (mode, seed) of a grid file.
fn ids(grid: &Path) -> BTreeMap<(String, u64), String> {
    let g = sweep_core::GridSpec::from_file(grid).unwrap();
    g.expand().into_iter().map(|t| ((t.cell.get("mode").unwrap().to_string(), t.seed), t.id(&g.name).0)).collect()
}

fn worker(port: u16, id: &str, ckpt: &Path, extra: &[&str]) -> Child {
    Command::new(common::worker_bin())
        .args(["--coordinator", &format!("http://127.0.0.1:{port}"), "--worker-id", id])
        .arg("--checkpoint-dir")
        .arg(ckpt)
        .arg("--allow-exec")
        .args(extra)
        .env("SWEEP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn submit(port: u16, grid: &Path) {
    run_ok(sweep().arg("submit").arg(grid).args(["--coordinator", &format!("http://127.0.0.1:{port}")]));
}

fn trials(db: &Path, sweep: &str) -> BTreeMap<String, TrialRecord> {
    let (rt, s) = store(db);
    rt.block_on(s.trials(sweep)).unwrap().into_iter().map(|t| (t.trial_id.clone(), t)).collect()
}

fn metrics(db: &Path, trial: &str) -> Vec<(String, i64, f64)> {
    let (rt, s) = store(db);
    rt.block_on(s.metrics(trial)).unwrap().into_iter().map(|m| (m.name, m.step, m.value)).collect()
}

fn log_of(ckpt: &Path, trial: &str) -> String {
    std::fs::read_to_string(ckpt.join(".logs").join(format!("{trial}.log"))).unwrap_or_default()
}

#[test]
fn outcomes_of_a_command_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ckpt) = (dir.path().join("c.db"), dir.path().join("ckpt"));
    let g = grid(dir.path(), "outcomes", &["ok", "bad_lines", "nan", "fail", "handback", "negloss"], 1, 6, "");
    let port = free_port();
    let mut coord = serve(&db, port);
    submit(port, &g);
    let mut w = worker(port, "w1", &ckpt, &["--idle-exit-secs", "3"]);
    wait_until(Duration::from_secs(120), "the sweep to finish", || finished(&db, "outcomes"));
    wait_exit(&mut w, Duration::from_secs(30), "the idle worker");

    let ids = ids(&g);
    let url = format!("http://127.0.0.1:{port}");
    let logs = |trial: &str| run_ok(sweep().args(["logs", trial, "--coordinator", &url]));
    // Each attempt's output, from the coordinator (the worker deletes a
    // succeeded trial's local copy); a prefix of the ID will do.
    let ok_id = &ids[&("ok".to_owned(), 0)];
    let shown = logs(&ok_id[..10]);
    assert!(shown.contains(&format!("=== trial {ok_id} attempt 1 on w1")), "{shown}");
    assert!(shown.contains("mode ok seed 0 attempt 1") && shown.contains("[sweep] the command exited"), "{shown}");
    assert!(!ckpt.join(".logs").join(format!("{ok_id}.log")).exists(), "a stored trial's local log is deleted");
    let shown = logs(&ids[&("fail".to_owned(), 0)]);
    assert!(shown.contains("boom: the script failed"), "{shown}");
    let shown = logs(&ids[&("handback".to_owned(), 0)]);
    assert!(shown.contains("attempt 1 on w1") && shown.contains("attempt 2 on w1"), "both attempts: {shown}");
    let out = sweep().args(["logs", "ffffffff", "--coordinator", &url]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = sweep().args(["logs", "../x", "--coordinator", &url]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("hex digits"), "{}", String::from_utf8_lossy(&out.stderr));

    let all = trials(&db, "outcomes");
    let trial = |mode: &str| &all[&ids[&(mode.to_owned(), 0)]];
    let id = |mode: &str| ids[&(mode.to_owned(), 0)].clone();

    let ok = trial("ok");
    assert_eq!(ok.state, TrialState::Succeeded, "{:?}", ok.last_error);
    assert_eq!(ok.summary.final_test_accuracy, Some(0.25));
    let points = metrics(&db, &id("ok"));
    let losses: Vec<i64> = points.iter().filter(|p| p.0 == "train_loss").map(|p| p.1).collect();
    assert_eq!(losses, vec![1, 2, 3, 4, 5, 6]);
    assert!(points.iter().any(|p| p.0 == "final/f1" && p.2 == 0.5), "{points:?}");

    let bad = trial("bad_lines");
    assert_eq!(bad.state, TrialState::Succeeded, "bad lines are not fatal: {:?}", bad.last_error);
    let points = metrics(&db, &id("bad_lines"));
    assert!(points.iter().any(|p| p.0 == "exec/bad_lines" && p.2 == 3.0), "{points:?}");
    assert!(logs(&id("bad_lines")).contains("bad metric line (skipped): not JSON"));

    let nan = trial("nan");
    assert_eq!(nan.state, TrialState::Diverged, "{:?}", nan.last_error);
    assert!(metrics(&db, &id("nan")).iter().any(|p| p.0 == "diverged_step" && p.2 == 3.0));

    let fail = trial("fail");
    assert_eq!(fail.state, TrialState::Failed);
    let why = fail.last_error.clone().unwrap_or_default();
    assert!(why.contains("boom: the script failed") && why.contains("exit status: 3"), "{why}");

    // A negative "loss" is a command's own business: stored as a final
    // value, not refused as BMEnet's loss would be.
    let neg = trial("negloss");
    assert_eq!(neg.state, TrialState::Succeeded, "{:?}", neg.last_error);
    assert_eq!(neg.summary.final_train_loss, None);
    let points = metrics(&db, &id("negloss"));
    assert!(points.iter().any(|p| p.0 == "final/nll" && p.2 == -3.25), "{points:?}");

    let back = trial("handback");
    assert_eq!(back.state, TrialState::Succeeded, "{:?}", back.last_error);
    assert_eq!((back.handbacks, back.failures, back.attempts), (1, 0, 2));
    kill(&mut coord);
}

#[test]
fn a_timeout_stops_a_command_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ckpt) = (dir.path().join("c.db"), dir.path().join("ckpt"));
    let g = grid(dir.path(), "timeout", &["stubborn"], 1, 6, "timeout = 2");
    let port = free_port();
    let mut coord = serve(&db, port);
    submit(port, &g);
    let started = Instant::now();
    let mut w = worker(port, "w1", &ckpt, &["--idle-exit-secs", "2", "--grace-secs", "3"]);
    wait_until(Duration::from_secs(60), "the sweep to finish", || finished(&db, "timeout"));
    let took = started.elapsed();
    wait_exit(&mut w, Duration::from_secs(30), "the idle worker");
    kill(&mut coord);
    let t = trials(&db, "timeout").into_values().next().unwrap();
    assert_eq!(t.state, TrialState::Failed);
    let why = t.last_error.unwrap_or_default();
    assert!(why.contains("ran past its timeout (2 s)"), "{why}");
    // 2 s of timeout, then SIGKILL 70% of the 3 s grace after SIGTERM.
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert!(log_of(&ckpt, &t.trial_id).contains("SIGKILL"));
}

/// The pid a command wrote for its attempt, once it is there.
fn pid_of(ckpt: &Path, trial: &str, attempt: u32) -> Option<i32> {
    std::fs::read_to_string(ckpt.join(trial).join(format!("pid-{attempt}"))).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // A zombie of an exited child counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn sigterm_reaches_the_command_which_checkpoints_and_resumes_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ckpt) = (dir.path().join("c.db"), dir.path().join("ckpt"));
    let g = grid(dir.path(), "preempt", &["preempt"], 1, 40, "");
    let port = free_port();
    let mut coord = serve(&db, port);
    submit(port, &g);
    let id = ids(&g).into_values().next().unwrap();
    let mut a = worker(port, "a", &ckpt, &["--idle-exit-secs", "30"]);
    wait_until(Duration::from_secs(60), "a few steps", || {
        metrics(&db, &id).iter().filter(|p| p.0 == "train_loss").count() >= 6
    });
    sigterm(&a);
    let status = wait_exit(&mut a, Duration::from_secs(40), "worker a after SIGTERM");
    assert!(status.success(), "{status}");
    let t = &trials(&db, "preempt")[&id];
    assert_eq!((t.state, t.handbacks, t.failures), (TrialState::Queued, 1, 0), "{:?}", t.last_error);
    let vouched = t.checkpoint_step.expect("a checkpoint the coordinator vouches for");
    assert!(
        log_of(&ckpt, &id).contains(&format!("checkpointed step {vouched} after SIGTERM")),
        "{}",
        log_of(&ckpt, &id)
    );

    let mut b = worker(port, "b", &ckpt, &["--idle-exit-secs", "2"]);
    wait_until(Duration::from_secs(90), "the sweep to finish", || finished(&db, "preempt"));
    wait_exit(&mut b, Duration::from_secs(30), "worker b");
    let t = &trials(&db, "preempt")[&id];
    assert_eq!(t.state, TrialState::Succeeded, "{:?}", t.last_error);
    assert!(t.resumed_step.unwrap_or(0) >= vouched, "resumed from {:?}, vouched {vouched}", t.resumed_step);
    let url = format!("http://127.0.0.1:{port}");
    let shown = run_ok(sweep().args(["logs", &id, "--attempt", "2", "--coordinator", &url]));
    assert!(shown.contains(&format!("resumed at {}", t.resumed_step.unwrap())), "{shown}");
    kill(&mut coord);
    let steps: Vec<i64> = metrics(&db, &id).iter().filter(|p| p.0 == "train_loss").map(|p| p.1).collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>(), "every step stored once");
}

#[test]
fn a_worker_without_the_checkpoint_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let g = grid(dir.path(), "elsewhere", &["preempt"], 1, 24, "");
    let port = free_port();
    let mut coord = serve(&db, port);
    submit(port, &g);
    let id = ids(&g).into_values().next().unwrap();
    let mut a = worker(port, "a", &dir.path().join("ckpt-a"), &["--idle-exit-secs", "30"]);
    wait_until(Duration::from_secs(60), "a few steps", || {
        metrics(&db, &id).iter().filter(|p| p.0 == "train_loss").count() >= 5
    });
    sigterm(&a);
    wait_exit(&mut a, Duration::from_secs(40), "worker a after SIGTERM");
    assert!(trials(&db, "elsewhere")[&id].checkpoint_step.is_some(), "a vouched checkpoint, on machine a only");
    // Another machine: no such checkpoint there.
    let mut b = worker(port, "b", &dir.path().join("ckpt-b"), &["--idle-exit-secs", "2"]);
    wait_until(Duration::from_secs(90), "the sweep to finish", || finished(&db, "elsewhere"));
    wait_exit(&mut b, Duration::from_secs(30), "worker b");
    let t = &trials(&db, "elsewhere")[&id];
    assert_eq!(t.state, TrialState::Succeeded, "{:?}", t.last_error);
    assert_eq!(t.resumed_step, Some(0), "started over");
    let steps: Vec<i64> = metrics(&db, &id).iter().filter(|p| p.0 == "train_loss").map(|p| p.1).collect();
    assert_eq!(steps, (1..=24).collect::<Vec<_>>(), "every step stored once");
    let url = format!("http://127.0.0.1:{port}");
    let shown = run_ok(sweep().args(["logs", &id, "--attempt", "2", "--coordinator", &url]));
    assert!(shown.contains("no written checkpoint of this trial for it: starting over"), "{shown}");
    kill(&mut coord);
}

#[test]
fn chaos_sigkill_workers_and_coordinator_with_exec_trials() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ckpt) = (dir.path().join("c.db"), dir.path().join("ckpt"));
    // 4 modes x 3 seeds; the slow ones checkpoint every step (20 steps of
    // 0.25 s).
    let g = grid(dir.path(), "exec-chaos", &["slow", "ok", "handback", "bad_lines"], 3, 20, "");
    let port = free_port();
    let mut coord = serve(&db, port);
    submit(port, &g);
    let name = |i: usize, gen: usize| format!("w{i}-{gen}");
    let spawn = |i: usize, gen: usize| worker(port, &name(i, gen), &ckpt, &[]);
    let mut workers: Vec<Child> = (0..3).map(|i| spawn(i, 0)).collect();
    let mut names: Vec<String> = (0..3).map(|i| name(i, 0)).collect();
    let (mut kills, mut restarts, mut orphans_checked) = (0, 0, 0);
    let start = Instant::now();
    let mut round = 0usize;
    let ids = ids(&g);
    while !finished(&db, "exec-chaos") {
        assert!(start.elapsed() < Duration::from_secs(240), "the chaos run did not finish");
        std::thread::sleep(Duration::from_millis(1200));
        round += 1;
        let i = round % workers.len();
        // The commands the killed worker ran must die with it.
        let running: Vec<(String, u32)> = trials(&db, "exec-chaos")
            .into_values()
            .filter(|t| t.state == TrialState::Running && t.worker_id.as_deref() == Some(names[i].as_str()))
            .map(|t| (t.trial_id, t.attempts))
            .collect();
        kill(&mut workers[i]);
        kills += 1;
        for (trial, attempt) in running {
            if let Some(pid) = pid_of(&ckpt, &trial, attempt) {
                wait_until(Duration::from_secs(5), "the killed worker's command to die", || !alive(pid));
                orphans_checked += 1;
            }
        }
        workers[i] = spawn(i, round);
        names[i] = name(i, round);
        if restarts < 1 && round == 3 {
            kill(&mut coord);
            std::thread::sleep(Duration::from_millis(500));
            coord = serve(&db, port);
            restarts += 1;
        }
    }
    for w in &mut workers {
        kill(w);
    }
    kill(&mut coord);
    let all = trials(&db, "exec-chaos");
    assert_eq!(all.len(), 12);
    for ((mode, seed), id) in &ids {
        let t = &all[id];
        assert_eq!(t.state, TrialState::Succeeded, "{mode} seed {seed}: {:?}", t.last_error);
        let points = metrics(&db, id);
        let unique: BTreeSet<(&str, i64)> = points.iter().map(|p| (p.0.as_str(), p.1)).collect();
        assert_eq!(unique.len(), points.len(), "a point stored twice in {mode} seed {seed}");
        let steps: Vec<i64> = points.iter().filter(|p| p.0 == "train_loss").map(|p| p.1).collect();
        assert_eq!(steps, (1..=20).collect::<Vec<_>>(), "{mode} seed {seed}");
        let f1 = points.iter().find(|p| p.0 == "final/f1").map(|p| p.2);
        assert_eq!(f1, Some(0.5 + *seed as f64 / 10.0), "{mode} seed {seed}");
    }
    println!("exec chaos: {kills} worker SIGKILLs, {restarts} coordinator restart, {orphans_checked} commands seen dying with their worker");
    let resumed = all.values().filter(|t| t.resumed_step.unwrap_or(0) > 0).count();
    println!("exec chaos: {resumed} trials resumed from a checkpoint");
    assert!(kills >= 3 && orphans_checked >= 1, "the schedule killed workers while they trained");
}

/// The example's grid, with `samples` samples, as a file in `dir`.
fn example_grid(dir: &Path, samples: u32) -> PathBuf {
    let example = repo().join("examples/exec-mnist-like/grid.toml");
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("samples = 2048", &format!("samples = {samples}"))
        .replace("workdir = \".\"", &format!("workdir = {:?}", example.parent().unwrap().display().to_string()));
    let g = dir.join("grid.toml");
    std::fs::write(&g, text).unwrap();
    g
}

#[test]
fn the_example_grid_survives_chaos() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ckpt) = (dir.path().join("c.db"), dir.path().join("ckpt"));
    let g = example_grid(dir.path(), 512);
    let port = free_port();
    let mut coord = serve(&db, port);
    submit(port, &g);
    let spawn = |i: usize, gen: usize| worker(port, &format!("w{i}-{gen}"), &ckpt, &[]);
    let mut workers: Vec<Child> = (0..3).map(|i| spawn(i, 0)).collect();
    let start = Instant::now();
    let (mut kills, mut round) = (0, 0usize);
    while !finished(&db, "exec-mnist-like") {
        assert!(start.elapsed() < Duration::from_secs(400), "the chaos run of the example did not finish");
        std::thread::sleep(Duration::from_millis(2500));
        round += 1;
        // Six SIGKILLs and one coordinator restart, then the workers finish.
        if round <= 6 {
            let i = round % workers.len();
            kill(&mut workers[i]);
            workers[i] = spawn(i, round);
            kills += 1;
        }
        if round == 3 {
            kill(&mut coord);
            std::thread::sleep(Duration::from_millis(500));
            coord = serve(&db, port);
        }
    }
    for w in &mut workers {
        kill(w);
    }
    let all = trials(&db, "exec-mnist-like");
    assert_eq!(all.len(), 12);
    for t in all.values() {
        assert_eq!(t.state, TrialState::Succeeded, "{}: {:?}", t.trial_id, t.last_error);
        let points = metrics(&db, &t.trial_id);
        let unique: BTreeSet<(&str, i64)> = points.iter().map(|p| (p.0.as_str(), p.1)).collect();
        assert_eq!(unique.len(), points.len(), "a point stored twice in {}", t.trial_id);
        // 512 samples / 32 per batch = 16 steps an epoch, 3 epochs; the
        // test metrics at each epoch's end, once.
        let test_steps: Vec<i64> = points.iter().filter(|p| p.0 == "test_accuracy").map(|p| p.1).collect();
        assert_eq!(test_steps, vec![16, 32, 48], "{}", t.trial_id);
        assert!(points.iter().any(|p| p.0 == "final/test_accuracy"), "{}", t.trial_id);
    }
    let url = format!("http://127.0.0.1:{port}");
    let out = run_ok(sweep().args(["report", "exec-mnist-like", "--format", "json", "--coordinator", &url]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["cells"].as_array().unwrap().len(), 4);
    kill(&mut coord);
    println!("example chaos: {kills} worker SIGKILLs, 1 coordinator restart, 12 trials succeeded once each");
}

#[test]
fn the_example_project_sweeps_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("examples/exec-mnist-like/grid.toml");
    // The example as shipped, with fewer samples (the CPUs are slow).
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("samples = 2048", "samples = 512")
        .replace("workdir = \".\"", &format!("workdir = {:?}", example.parent().unwrap().display().to_string()));
    let g = dir.path().join("grid.toml");
    std::fs::write(&g, text).unwrap();
    let db = dir.path().join("run.db");
    let mut cmd = sweep_run(&g, &dir.path().join("state"), &db);
    cmd.args(["--workers", "2", "--format", "json"]);
    let out = common::finish(cmd.spawn().unwrap(), Duration::from_secs(300), "sweep run of the example");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let cells = report["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 4, "{report}");
    assert_eq!(report["metric"], "test_accuracy");
    let lr = report["main_effects"].as_array().unwrap().iter().find(|e| e["factor"] == "lr").expect("an lr effect");
    assert!(lr["effect"]["estimate"].as_f64().unwrap() > 0.0, "a larger lr learns faster in 3 epochs: {lr}");

    // Any final value is a metric.
    let url = format!("sqlite://{}", db.display());
    let serve = common::Server::start_url(&url);
    let out = run_ok(sweep().args([
        "report",
        "exec-mnist-like",
        "--metric",
        "test_loss",
        "--format",
        "json",
        "--coordinator",
        &serve.url,
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["metric"], "test_loss");
}

/// Group leases are not only for fused BMEnet: a worker with `--fuse 3`
/// leases a cell's 3 exec trials at once and runs their commands one
/// after another, each with its own lease, points, final values and result.
#[test]
fn a_group_lease_of_exec_trials_runs_each_command_as_its_own_trial() {
    let dir = tempfile::tempdir().unwrap();
    let (db, ckpt) = (dir.path().join("c.db"), dir.path().join("ckpt"));
    let g = grid(dir.path(), "grouped", &["ok"], 3, 4, "");
    let port = free_port();
    let mut coord = serve(&db, port);
    submit(port, &g);
    let log = dir.path().join("worker.log");
    let mut w = Command::new(common::worker_bin())
        .args(["--coordinator", &format!("http://127.0.0.1:{port}"), "--worker-id", "g1", "--fuse", "3"])
        .arg("--checkpoint-dir")
        .arg(&ckpt)
        .args(["--allow-exec", "--idle-exit-secs", "3"])
        .env("SWEEP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(120), "the sweep to finish", || finished(&db, "grouped"));
    wait_exit(&mut w, Duration::from_secs(30), "the idle worker");

    let text = std::fs::read_to_string(&log).unwrap();
    let groups = text.lines().filter(|l| l.contains("training a fused group of seeds")).count();
    assert_eq!(groups, 1, "one lease of the cell's 3 trials:\n{text}");
    let ids = ids(&g);
    let all = trials(&db, "grouped");
    for seed in 0..3u64 {
        let id = &ids[&("ok".to_owned(), seed)];
        let t = &all[id];
        assert_eq!((t.state, t.attempts), (TrialState::Succeeded, 1), "seed {seed}: {:?}", t.last_error);
        let points = metrics(&db, id);
        let f1 = 0.5 + seed as f64 / 10.0;
        assert!(points.iter().any(|p| p.0 == "final/f1" && p.2 == f1), "seed {seed}: {points:?}");
        assert_eq!(points.iter().filter(|p| p.0 == "train_loss").count(), 4, "seed {seed}: {points:?}");
    }
    let url = format!("http://127.0.0.1:{port}");
    let json = run_ok(sweep().args(["report", "grouped", "--metric", "f1", "--format", "json", "--coordinator", &url]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let seeds: BTreeSet<u64> = v["trials"].as_array().unwrap().iter().filter_map(|t| t["seed"].as_u64()).collect();
    assert_eq!(seeds, (0..3).collect(), "the three trials in the report: {json}");
    kill(&mut coord);
}
