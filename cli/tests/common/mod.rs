//! Helpers shared by the CLI tests: the binaries, a `sweep serve` process,
//! and grid files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A small grid for `sweep run` with the simulated trainer: depth 8 and 16
/// x skip on/off, `seeds` seeds, 2 epochs of 4 batches.
pub(crate) fn small_grid(name: &str, seeds: u32) -> String {
    format!(
        r#"
name = "{name}"
seeds = {seeds}
[grid]
depth = [8, 16]
skip = [true, false]
init = "default"
batchnorm = true
[train]
epochs = 2
batch_size = 4
log_every = 2
[data]
path = "data"
train_subset = 16
"#
    )
}

/// The test PostgreSQL server (`SWEEP_TEST_POSTGRES_URL`), or `None` (the
/// caller skips) where there is none, unless `SWEEP_REQUIRE_POSTGRES=1`.
pub(crate) fn postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("SWEEP_TEST_POSTGRES_URL") else {
        assert_ne!(
            std::env::var("SWEEP_REQUIRE_POSTGRES").as_deref(),
            Ok("1"),
            "SWEEP_REQUIRE_POSTGRES=1 but SWEEP_TEST_POSTGRES_URL is not set"
        );
        println!("skipped: SWEEP_TEST_POSTGRES_URL not set");
        return None;
    };
    Some(base)
}

pub(crate) fn sweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    c.env_remove("SWEEP_COORDINATOR").env_remove("SWEEP_DATABASE_URL").env("SWEEP_LOG", "warn");
    c
}

/// A `sweep-worker` with the simulated trainer (`step_ms` per step) named
/// `id`, checkpointing under `dir`, exiting after a second without work;
/// output piped, not yet started.
pub(crate) fn sim_worker(url: &str, id: &str, step_ms: u64, dir: &Path) -> Command {
    let mut c = Command::new(worker_bin());
    c.args(["--coordinator", url, "--worker-id", id, "--simulate-step-ms", &step_ms.to_string()])
        .args(["--idle-exit-secs", "2"])
        .arg("--checkpoint-dir")
        .arg(dir.join("ckpt"))
        .env("SWEEP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

pub(crate) fn worker_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_sweep")).with_file_name("sweep-worker");
    assert!(p.exists(), "{} is missing: build the workspace first (`cargo build --workspace`)", p.display());
    p
}

/// Synthetic CIFAR-10 files (`sweep-worker synth-data`) of `train` and
/// `test` images in `<dir>/data`; returns that folder.
pub(crate) fn synth_data(dir: &Path, train: u32, test: u32) -> PathBuf {
    let data = dir.join("data");
    let out = Command::new(worker_bin())
        .args(["synth-data", "--train", &train.to_string(), "--test", &test.to_string(), "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "synth-data: {}", String::from_utf8_lossy(&out.stderr));
    data
}

/// The grid `<dir>/<name>.toml`: `name`, then `body` (seeds and tables),
/// then a `[data]` table over synthetic data of `train` and `test` images
/// made in `dir` ([`synth_data`]).
pub(crate) fn grid_over_synth_data(dir: &Path, name: &str, (train, test): (u32, u32), body: &str) -> PathBuf {
    let data = synth_data(dir, train, test);
    let path = dir.join(format!("{name}.toml"));
    let text = format!("name = \"{name}\"\n{body}\n[data]\npath = {:?}\n", data.display().to_string());
    std::fs::write(&path, text).unwrap();
    path
}

/// `sweep run GRID --state-dir STATE --database-url sqlite://DB` with the
/// built `sweep-worker`, output piped, not yet started.
pub(crate) fn sweep_run(grid: &Path, state: &Path, db: &Path) -> Command {
    let mut c = sweep();
    c.arg("run")
        .arg(grid)
        .arg("--state-dir")
        .arg(state)
        .arg("--database-url")
        .arg(format!("sqlite://{}", db.display()))
        .env("SWEEP_WORKER_BIN", worker_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `sweep serve --listen 127.0.0.1:0 --database-url sqlite://DB`, not yet
/// started.
pub(crate) fn serve_cmd(db: &Path) -> Command {
    let mut c = sweep();
    c.args(["serve", "--listen", "127.0.0.1:0", "--database-url"]).arg(format!("sqlite://{}", db.display()));
    c
}

/// A `sweep serve` process on an ephemeral port over `db`; killed on drop.
/// What it writes to stderr after its address is kept in `log`.
pub(crate) struct Server {
    child: Child,
    pub url: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub(crate) fn start(db: &Path) -> Server {
        Server::start_url(&format!("sqlite://{}", db.display()))
    }

    /// `sweep serve` over any database URL (SQLite or PostgreSQL).
    pub(crate) fn start_url(database_url: &str) -> Server {
        Server::start_with(database_url, &[])
    }

    /// `sweep serve` over `database_url` with more arguments (the URL's
    /// scheme stays http://; give TLS tests their own).
    pub(crate) fn start_with(database_url: &str, more: &[&str]) -> Server {
        let mut cmd = sweep();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", database_url]).args(more);
        Server::spawn(cmd)
    }

    /// Starts a `sweep serve` command (listening on `127.0.0.1:0`) and
    /// waits for its address.
    pub(crate) fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("start sweep serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("sweep serve printed its address").unwrap();
            if let Some(rest) = line.strip_prefix("sweep coordinator listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.lock().unwrap().push(l)));
        Server { child, url: format!("http://{addr}"), log }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (for a server that must keep its port
/// across restarts).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `sweep serve` on `127.0.0.1:PORT` over the SQLite file `db` with leases
/// of `ttl_secs`, quiet; returns once it listens.
pub(crate) fn serve_on(db: &Path, port: u16, ttl_secs: u64) -> Child {
    let c = sweep()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--lease-ttl-secs", &ttl_secs.to_string()])
        .arg("--database-url")
        .arg(format!("sqlite://{}", db.display()))
        .env("SWEEP_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "coordinator did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

/// The store a coordinator left behind (or is using: SQLite readers never
/// block its writer in WAL mode).
pub(crate) fn open_store(db: &Path) -> (tokio::runtime::Runtime, sweep_coordinator::store::SqliteStore) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store =
        rt.block_on(sweep_coordinator::store::SqliteStore::open(&format!("sqlite://{}", db.display()))).unwrap();
    (rt, store)
}

/// Whether every trial of `sweep` in `db` has finished.
pub(crate) fn sweep_finished(db: &Path, sweep: &str) -> bool {
    use sweep_coordinator::store::Store;
    let (rt, store) = open_store(db);
    rt.block_on(store.status(Some(sweep))).map(|s| s[0].counts.finished()).unwrap_or(false)
}

/// Polls `cond` every 100 ms until it holds; fails the test after `limit`.
pub(crate) fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn sigterm(child: &Child) {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
}

/// SIGKILL, then reap.
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run sweep");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits for `child` at most `limit`; after that it is killed and the test
/// fails, naming `what`.
pub(crate) fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `child` (stdout and stderr piped) to its end within `limit`, as
/// [`wait_exit`], reading both pipes on threads so a full pipe cannot
/// stall it.
pub(crate) fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            v
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout piped")));
    let err = read(Box::new(child.stderr.take().expect("stderr piped")));
    let status = wait_exit(&mut child, limit, what);
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}
