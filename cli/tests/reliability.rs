//! Reliability acceptance tests (issue 5) with real processes: a `sweep
//! serve` coordinator, `sweep-worker` daemons, SIGKILL and SIGTERM.
//! Results are read back from the coordinator's SQLite file afterwards.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sweep_coordinator::store::{Store, TrialState};

mod common;

use common::{free_port, kill, open_store as open, serve_on as serve, sigterm, sweep_finished as finished, wait_until};

fn bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_sweep")).with_file_name(name);
    assert!(p.exists(), "{} is missing: build the workspace first (`cargo build --workspace`)", p.display());
    p
}

fn worker(port: u16, id: &str, ckpt: &Path, extra: &[&str]) -> Child {
    Command::new(bin("sweep-worker"))
        .args(["--coordinator", &format!("http://127.0.0.1:{port}"), "--worker-id", id])
        .arg("--checkpoint-dir")
        .arg(ckpt)
        .args(extra)
        .env("SWEEP_LOG", "warn")
        .env_remove("SWEEP_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn submit(port: u16, grid: &Path) {
    let out = Command::new(bin("sweep"))
        .arg("submit")
        .arg(grid)
        .args(["--coordinator", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Tiny deterministic pseudo-random numbers for the chaos schedule.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn chaos_sigkill_workers_and_coordinator_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chaos.db");
    let ckpt = dir.path().join("ckpt");
    let grid = dir.path().join("chaos.toml");
    // 5 x 2 x 5 x 2 cells x 2 seeds = 200 trials; each 2 epochs of 10
    // batches at 15 ms: about 0.3 s of simulated training.
    std::fs::write(
        &grid,
        r#"
name = "chaos"
seeds = 2
[grid]
depth = [8, 16, 24, 32, 40]
skip = [true, false]
init = ["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
batchnorm = [true, false]
[train]
epochs = 2
batch_size = 4
log_every = 2
[data]
path = "data"
train_subset = 40
"#,
    )
    .unwrap();
    let port = free_port();
    let mut coord = serve(&db, port, 2);
    submit(port, &grid);
    let spawn = |i: usize, gen: usize| worker(port, &format!("w{i}-{gen}"), &ckpt, &["--simulate-step-ms", "15"]);
    let mut workers: Vec<Child> = (0..8).map(|i| spawn(i, 0)).collect();
    let mut rng = Lcg(42);
    let (mut worker_kills, mut coord_restarts) = (0, 0);
    let start = Instant::now();
    let mut round = 0;
    while !finished(&db, "chaos") {
        assert!(start.elapsed() < Duration::from_secs(300), "chaos run did not finish");
        std::thread::sleep(Duration::from_millis(1500));
        round += 1;
        let i = rng.next(workers.len());
        kill(&mut workers[i]);
        workers[i] = spawn(i, round);
        worker_kills += 1;
        if coord_restarts < 2 && (round == 3 || round == 7) {
            kill(&mut coord);
            std::thread::sleep(Duration::from_millis(500));
            coord = serve(&db, port, 2);
            coord_restarts += 1;
        }
    }
    for w in &mut workers {
        kill(w);
    }
    kill(&mut coord);

    let (rt, store) = open(&db);
    let trials = rt.block_on(store.trials("chaos")).unwrap();
    assert_eq!(trials.len(), 200);
    let mut states: HashMap<TrialState, usize> = HashMap::new();
    let (mut points, mut re_leased) = (0, 0);
    for t in &trials {
        *states.entry(t.state).or_default() += 1;
        if t.attempts > 1 {
            re_leased += 1;
        }
        let all = rt.block_on(store.metrics(&t.trial_id)).unwrap();
        let unique: BTreeSet<(String, i64)> = all.iter().map(|m| (m.name.clone(), m.step)).collect();
        assert_eq!(unique.len(), all.len(), "a metric step stored twice in {}", t.trial_id);
        // Gradient norms ride along at every logging step; the rest is
        // checked exactly.
        let metrics: Vec<_> = all.iter().filter(|m| !m.name.starts_with("grad_norm/")).collect();
        let keys: BTreeSet<(String, i64)> = metrics.iter().map(|m| (m.name.clone(), m.step)).collect();
        // The simulated trainer logs train_loss at steps 2, 4, .., 20 and
        // test metrics at 10 and 20: a finished trial has all 14.
        let mut expected: BTreeSet<(String, i64)> = (1..=10).map(|i| ("train_loss".to_owned(), i * 2)).collect();
        for s in [10, 20] {
            expected.insert(("test_accuracy".into(), s));
            expected.insert(("test_loss".into(), s));
        }
        assert_eq!(keys, expected, "metrics of trial {} (attempts {})", t.trial_id, t.attempts);
        points += metrics.len();
    }
    println!(
        "chaos: {} worker SIGKILLs, {} coordinator SIGKILL+restarts; trials by state {:?}; {} trials re-leased; {} metric points, 0 duplicated, 0 missing",
        worker_kills, coord_restarts, states, re_leased, points
    );
    assert_eq!(states.get(&TrialState::Succeeded), Some(&200), "every trial has exactly one final result");
    assert_eq!(coord_restarts, 2, "the coordinator was restarted twice");
    assert_eq!(points, 200 * 14);
}

#[test]
fn sigterm_hands_the_trial_back_without_using_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("term.db");
    let ckpt = dir.path().join("ckpt");
    let grid = dir.path().join("term.toml");
    std::fs::write(
        &grid,
        "name = \"term\"\nseeds = 1\n[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n\
         [train]\nepochs = 2\nbatch_size = 4\nlog_every = 5\n[data]\npath = \"d\"\ntrain_subset = 400\n[run]\nmax_attempts = 1\n",
    )
    .unwrap();
    let port = free_port();
    let mut coord = serve(&db, port, 6);
    submit(port, &grid);
    let mut w = worker(port, "preempted", &ckpt, &["--simulate-step-ms", "30", "--grace-secs", "10"]);
    wait_until(Duration::from_secs(60), "the trial to run", || {
        let (rt, store) = open(&db);
        !rt.block_on(store.status(Some("term"))).unwrap()[0].running.is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    sigterm(&w);
    let status = loop {
        if let Some(s) = w.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "worker did not exit within the grace period");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "worker exit status after SIGTERM: {status}");
    let (rt, store) = open(&db);
    let t = rt.block_on(store.trials("term")).unwrap().remove(0);
    assert_eq!(t.state, TrialState::Queued, "handed straight back to the queue");
    assert_eq!((t.failures, t.infra_failures, t.handbacks), (0, 0, 1), "no attempt used");
    drop((rt, store));

    // max_attempts = 1, and still the trial runs to the end on another worker.
    let mut w2 = worker(port, "next", &ckpt, &["--simulate-step-ms", "1", "--idle-exit-secs", "2"]);
    wait_until(Duration::from_secs(60), "the trial to finish", || finished(&db, "term"));
    let _ = w2.wait();
    kill(&mut coord);
    let (rt, store) = open(&db);
    let t = rt.block_on(store.trials("term")).unwrap().remove(0);
    assert_eq!(t.state, TrialState::Succeeded);
    assert_eq!(t.attempts, 2);
}

#[test]
fn a_killed_real_training_trial_resumes_from_its_checkpoint_on_another_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(bin("sweep-worker"))
        .args(["synth-data", "--train", "256", "--test", "64", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = dir.path().join("resume.db");
    let ckpt = dir.path().join("ckpt");
    let grid = dir.path().join("resume.toml");
    // 256 images at batch 16: 16 steps per epoch, 4 epochs, real BMEnet-8.
    std::fs::write(
        &grid,
        format!(
            "name = \"resume\"\nseeds = 1\n[grid]\ndepth = 8\nskip = true\ninit = \"kaiming_normal\"\nbatchnorm = true\n\
             [train]\nepochs = 4\nbatch_size = 16\noptimizer = \"adam\"\nlr = 0.001\nlog_every = 4\n\
             [data]\npath = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut coord = serve(&db, port, 3);
    submit(port, &grid);
    let mut a = worker(port, "first", &ckpt, &["--threads", "1"]);
    wait_until(Duration::from_secs(120), "the first epoch checkpoint", || {
        std::fs::read_dir(&ckpt).into_iter().flatten().flatten().any(|trial| {
            std::fs::read_dir(trial.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
        })
    });
    kill(&mut a);
    // Its idle timer must outlast the dead worker's lease (3 s) plus a reap.
    let mut b = worker(port, "second", &ckpt, &["--threads", "1", "--idle-exit-secs", "30"]);
    wait_until(Duration::from_secs(180), "the resumed trial to finish", || finished(&db, "resume"));
    kill(&mut b);
    kill(&mut coord);

    let (rt, store) = open(&db);
    let t = rt.block_on(store.trials("resume")).unwrap().remove(0);
    assert_eq!(t.state, TrialState::Succeeded, "{:?}", t.last_error);
    assert_eq!(t.attempts, 2);
    let resumed = t.resumed_step.expect("the second attempt reported where it resumed");
    assert!(
        resumed >= 16 && resumed % 16 == 0 && resumed < 64,
        "resumed from step {resumed}, not an epoch boundary after epoch 1"
    );
    let steps: Vec<i64> = rt
        .block_on(store.metrics(&t.trial_id))
        .unwrap()
        .into_iter()
        .filter(|m| m.name == "train_loss")
        .map(|m| m.step)
        .collect();
    assert_eq!(steps, (1..=16).map(|i| i * 4).collect::<Vec<i64>>(), "every logged step exactly once");
    println!("resumed at step {resumed} of 64 (epoch {}), finished epochs not repeated", resumed / 16 + 1);
}
