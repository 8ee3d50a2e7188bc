//! The local worker processes of `sweep run`: started in their own process
//! group with a pipe on stdin (`--watch-stdin`: when this process dies, even
//! by SIGKILL, the pipe closes and they shut down by themselves), watched
//! while the sweep runs, and stopped with SIGTERM (they checkpoint and hand
//! their trials back) when it ends.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, ChildStdin, Command};

use crate::printable::{clip, printable};

/// Log lines quoted for a worker that exited.
const LOG_TAIL_LINES: usize = 6;

/// How the workers are started.
pub(crate) struct WorkerSetup<'a> {
    pub bin: &'a Path,
    pub coordinator: &'a str,
    pub token: &'a str,
    pub device: &'a str,
    pub checkpoint_dir: PathBuf,
    pub logs: &'a Path,
    pub grace_secs: u64,
    /// libtorch threads per worker (None: the simulated trainer, or a GPU).
    pub threads: Option<u32>,
    pub simulate_step_ms: Option<u64>,
}

struct Worker {
    name: String,
    log: PathBuf,
    child: Child,
    /// Held open while the worker should run: closing it (or this process
    /// dying) tells a `--watch-stdin` worker to stop.
    stdin: Option<ChildStdin>,
    exit: Option<ExitStatus>,
}

pub(crate) struct LocalWorkers {
    workers: Vec<Worker>,
}

impl LocalWorkers {
    pub(crate) fn spawn(setup: &WorkerSetup<'_>, n: u32) -> anyhow::Result<LocalWorkers> {
        let mut workers = Vec::new();
        for i in 0..n {
            workers.push(spawn_one(setup, i)?);
        }
        Ok(LocalWorkers { workers })
    }

    /// Notes the workers that have exited.
    fn poll(&mut self) {
        for w in &mut self.workers {
            if w.exit.is_none() {
                if let Ok(Some(status)) = w.child.try_wait() {
                    w.exit = Some(status);
                    w.stdin = None;
                }
            }
        }
    }

    fn alive(&self) -> usize {
        self.workers.iter().filter(|w| w.exit.is_none()).count()
    }

    /// Returns once no worker is left alive (never while one runs).
    pub(crate) async fn all_gone(&mut self) {
        loop {
            self.poll();
            if self.alive() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// How each worker ended, with the last lines of its log.
    pub(crate) fn describe_exits(&self) -> String {
        let mut out = String::new();
        for w in &self.workers {
            let how = match w.exit {
                Some(s) => describe_status(s),
                None => "is still running".into(),
            };
            out += &format!("\n  worker {} {how}; last lines of {}:", w.name, w.log.display());
            let tail = log_tail(&w.log, LOG_TAIL_LINES);
            if tail.is_empty() {
                out += "\n    (empty)";
            }
            for line in tail {
                out += &format!("\n    {}", clip(&printable(&line), 400));
            }
        }
        out
    }

    /// SIGTERM to every worker still alive (each checkpoints and hands its
    /// trial back), then waits for them; SIGKILL to those still there after
    /// `grace` plus a margin, or at once when `hurry` resolves (a second
    /// SIGTERM/SIGINT).
    pub(crate) async fn stop(&mut self, grace: Duration, hurry: impl std::future::Future<Output = ()>) {
        self.poll();
        for w in self.workers.iter_mut().filter(|w| w.exit.is_none()) {
            let Some(pid) = w.child.id() else { continue };
            // `kill` from procps keeps this crate free of libc. Without it,
            // closing the worker's stdin asks for the same shutdown.
            let sent = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            if !sent.is_ok_and(|s| s.success()) {
                w.stdin = None;
            }
        }
        let deadline = Instant::now() + grace + Duration::from_secs(5);
        let waited = async {
            while self.alive() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.poll();
            }
        };
        tokio::select! {
            _ = waited => {},
            _ = hurry => eprintln!("sweep run: second signal: killing the workers"),
        }
        self.poll();
        for w in self.workers.iter_mut().filter(|w| w.exit.is_none()) {
            eprintln!("sweep run: worker {} did not stop in time: killing it", w.name);
            let _ = w.child.kill().await;
            w.exit = w.child.try_wait().ok().flatten();
            w.stdin = None;
        }
    }
}

fn spawn_one(s: &WorkerSetup<'_>, i: u32) -> anyhow::Result<Worker> {
    let name = format!("local-{i}");
    let log_path = s.logs.join(format!("worker-{i}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(s.bin);
    cmd.arg("--coordinator")
        .arg(s.coordinator)
        .arg("--device")
        .arg(s.device)
        .arg("--worker-id")
        .arg(&name)
        .arg("--checkpoint-dir")
        .arg(&s.checkpoint_dir)
        .arg("--grace-secs")
        .arg(s.grace_secs.to_string())
        .arg("--watch-stdin")
        // The grid is the user's own: its command may run here.
        .arg("--allow-exec")
        .env("SWEEP_TOKEN", s.token)
        .env_remove("SWEEP_TLS_CA")
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in a terminal reaches `sweep run`
        // alone, which then stops each worker once (a worker takes a second
        // signal as "exit now, without handing back").
        .process_group(0)
        .kill_on_drop(true);
    if let Some(ms) = s.simulate_step_ms {
        cmd.arg("--simulate-step-ms").arg(ms.to_string());
    } else if let Some(n) = s.threads {
        cmd.arg("--threads").arg(n.to_string());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {}", s.bin.display()))?;
    let stdin = child.stdin.take();
    Ok(Worker { name, log: log_path, child, stdin, exit: None })
}

fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({s})"),
    }
}

/// The last `n` non-empty lines of a log file (reads at most its last 64 KiB).
fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    // An error's stack backtrace (RUST_BACKTRACE set) says less than the
    // error above it.
    let text = match text.rfind("Stack backtrace:") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.trim_end().to_owned()).collect()
}
