//! `sweep run`: the all-in-one local mode. A coordinator on a local SQLite
//! file (in this process), N `sweep-worker` processes talking real gRPC over
//! loopback, live progress, then the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sweep_coordinator::store::{Store, TrialState};
use sweep_core::GridSpec;

use crate::local_workers::{LocalWorkers, WorkerSetup};
use crate::printable::{clip, printable};
use crate::Failure;

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The grid file.
    grid: PathBuf,
    /// Number of local worker processes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: u32,
    /// Seconds a worker gets after `sweep run` is stopped (SIGTERM, Ctrl-C)
    /// to checkpoint and hand its trial back before it is killed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    grace_secs: u64,
    /// Database URL (default: sqlite://.sweep/NAME.db in the current folder).
    #[arg(long)]
    database_url: Option<String>,
    /// Device for the local workers: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Folder for the database, checkpoints and worker logs.
    #[arg(long, default_value = ".sweep")]
    state_dir: PathBuf,
    /// The report printed at the end (same options as `sweep report`).
    #[command(flatten)]
    report: crate::report::ReportArgs,
    /// The sweep-worker binary (default: next to this `sweep` binary).
    #[arg(long, env = "SWEEP_WORKER_BIN")]
    worker_bin: Option<PathBuf>,
    /// Test double for orchestration tests: workers simulate training.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    simulate_step_ms: Option<u64>,
}

fn worker_bin(args: &RunArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.worker_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("locating the sweep binary")?;
    let candidate = exe.with_file_name("sweep-worker");
    if candidate.exists() {
        return Ok(candidate);
    }
    anyhow::bail!(
        "cannot find sweep-worker next to {} (build it with `cargo build -p sweep-worker`, or set SWEEP_WORKER_BIN)",
        exe.display()
    )
}

/// SIGTERM and SIGINT for the whole run: once tokio listens for them they
/// no longer end the process, so every phase of the run must watch this.
struct Interrupts {
    rx: tokio::sync::watch::Receiver<(u32, &'static str)>,
}

impl Interrupts {
    fn listen() -> anyhow::Result<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let (tx, rx) = tokio::sync::watch::channel((0, ""));
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = term.recv() => "SIGTERM",
                    Some(()) = int.recv() => "SIGINT",
                    else => return,
                };
                tx.send_modify(|(n, first)| {
                    *n += 1;
                    if first.is_empty() {
                        *first = name;
                    }
                });
            }
        });
        Ok(Interrupts { rx })
    }

    /// Resolves once `count` signals have arrived; returns the first one's name.
    async fn nth(&self, count: u32) -> &'static str {
        let mut rx = self.rx.clone();
        let first = rx.wait_for(|(n, _)| *n >= count).await.map(|v| v.1);
        match first {
            Ok(name) => name,
            Err(_) => std::future::pending().await,
        }
    }
}

/// The in-process coordinator of the run.
struct Coordinator {
    store: Arc<dyn Store>,
    db: String,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    async fn start(db: String) -> anyhow::Result<(Coordinator, String, String)> {
        let store = sweep_coordinator::store::open(&db).await.with_context(|| format!("opening {db}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
        let url = format!("http://{}", listener.local_addr()?);
        // Local mode protects itself too: fresh tokens for this run, handed to
        // the workers through their environment (never a flag: flags show in `ps`).
        let worker_token = uuid::Uuid::new_v4().simple().to_string();
        let client_token = uuid::Uuid::new_v4().simple().to_string();
        let security = sweep_coordinator::Security {
            auth: sweep_coordinator::auth::Auth::new(Some(sweep_coordinator::auth::Tokens::new(
                vec![worker_token.clone()],
                vec![client_token.clone()],
            ))),
            tls: None,
            allow_insecure: false,
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = sweep_coordinator::CoordinatorConfig {
            // One machine: heartbeat often so the progress lines stay fresh.
            heartbeat_interval: Duration::from_secs(2),
            // One machine: quarantining its only workers would leave the
            // sweep with nobody to run it. A broken setup (data missing)
            // fails each trial after its attempts, with its own error.
            quarantine_after: u32::MAX,
            ..Default::default()
        };
        let served = sweep_coordinator::serve_secure(store.clone(), config, security, listener, async {
            let _ = stop_rx.await;
        });
        let server = tokio::spawn(async move {
            if let Err(e) = served.await {
                eprintln!("sweep run: the coordinator stopped: {}", crate::failure::chain_text(&e.into()));
            }
        });
        Ok((Coordinator { store, db, url, stop, server }, worker_token, client_token))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(10), self.server).await.is_err() {
            eprintln!("sweep run: the coordinator did not stop within 10 s; exiting anyway");
        }
    }

    /// `N trials: error` for the trials of `sweep` in `states`, most common
    /// error first (at most 3 errors).
    async fn errors_of(&self, sweep: &str, states: &[TrialState]) -> (usize, Vec<String>) {
        let Ok(trials) = self.store.trials(sweep).await else { return (0, Vec::new()) };
        let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
        let mut n = 0;
        for t in trials.iter().filter(|t| states.contains(&t.state)) {
            n += 1;
            if let Some(e) = &t.last_error {
                *by_error.entry(e.clone()).or_default() += 1;
            }
        }
        let mut errors: Vec<(usize, String)> = by_error.into_iter().map(|(e, c)| (c, e)).collect();
        errors.sort_by_key(|b| std::cmp::Reverse(b.0));
        let shown = errors
            .iter()
            .take(3)
            .map(|(c, e)| format!("{c} trial{}: {}", if *c == 1 { "" } else { "s" }, clip(&printable(e), 600)))
            .collect();
        (n, shown)
    }
}

fn bullet(lines: &[String]) -> String {
    lines.iter().map(|l| format!("\n  {l}")).collect()
}

/// How the watching phase ended.
enum Ended {
    Finished(Result<sweep_proto::v1::SweepStatus, Failure>),
    Interrupted(&'static str),
    WorkersGone,
}

pub(crate) async fn run(args: RunArgs) -> Result<(), Failure> {
    let interrupts = Interrupts::listen()?;
    let spec = GridSpec::from_file(&args.grid)?;
    let bin = worker_bin(&args)?;
    let logs = args.state_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let db = match &args.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", args.state_dir.join(format!("{}.db", spec.name)).display()),
    };
    let (coordinator, worker_token, client_token) = Coordinator::start(db).await?;
    crate::commands::set_security(sweep_proto::client::ClientSecurity {
        token: Some(client_token),
        ..Default::default()
    });
    let url = coordinator.url.clone();
    let out = tokio::select! {
        out = crate::commands::submit_spec(&spec, &url) => out,
        sig = interrupts.nth(1) => {
            coordinator.stop().await;
            return Err(interrupted(sig, "before the sweep was stored"));
        }
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            coordinator.stop().await;
            return Err(e.into());
        }
    };
    let sweep = printable(&out.sweep_id).into_owned();
    eprintln!(
        "sweep {sweep}: {} trials ({} cells x {} seeds), {} new; coordinator {url}, database {}",
        out.total_trials,
        spec.cell_count(),
        spec.seeds.len(),
        out.added_trials,
        coordinator.db
    );
    eprintln!("starting {} worker(s); logs in {}", args.workers, logs.display());
    let cores = std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1) as u32;
    let setup = WorkerSetup {
        bin: &bin,
        coordinator: &url,
        token: &worker_token,
        device: &args.device,
        checkpoint_dir: args.state_dir.join("checkpoints"),
        logs: &logs,
        grace_secs: args.grace_secs,
        // Share the cores between the local workers instead of letting each
        // libtorch start one thread per core.
        threads: (args.device == "cpu").then(|| (cores / args.workers).max(1)),
        simulate_step_ms: args.simulate_step_ms,
    };
    let mut workers = match LocalWorkers::spawn(&setup, args.workers) {
        Ok(w) => w,
        Err(e) => {
            coordinator.stop().await;
            return Err(e.into());
        }
    };
    let grace = Duration::from_secs(args.grace_secs);

    let ended = tokio::select! {
        biased;
        sig = interrupts.nth(1) => Ended::Interrupted(sig),
        r = crate::watch::watch(&out.sweep_id, &url) => Ended::Finished(r),
        () = workers.all_gone() => Ended::WorkersGone,
    };
    match ended {
        Ended::Interrupted(sig) => {
            eprintln!(
                "sweep run: {sig}: stopping the workers (their trials go back to the queue), then the coordinator"
            );
            workers
                .stop(grace, async {
                    interrupts.nth(2).await;
                })
                .await;
            let (n, _) = coordinator.errors_of(&out.sweep_id, &[TrialState::Queued, TrialState::Running]).await;
            coordinator.stop().await;
            Err(interrupted(sig, &format!("{n} trials of {sweep} are not finished")))
        }
        Ended::WorkersGone => {
            let exits = workers.describe_exits();
            let (n, errors) = coordinator.errors_of(&out.sweep_id, &[TrialState::Queued, TrialState::Running]).await;
            let db = coordinator.db.clone();
            coordinator.stop().await;
            let errors = if errors.is_empty() {
                String::new()
            } else {
                format!("\nlast errors of the unfinished trials:{}", bullet(&errors))
            };
            Err(anyhow::anyhow!(
                "no local worker is left to run the {n} unfinished trials of {sweep}:{exits}{errors}\n\
                 Nothing was cancelled: the trials stay queued in {db}; fix the cause and run the same command again to resume."
            )
            .into())
        }
        Ended::Finished(watched) => {
            workers
                .stop(grace, async {
                    interrupts.nth(2).await;
                })
                .await;
            let status = match watched {
                Ok(s) => s,
                Err(e) => {
                    coordinator.stop().await;
                    return Err(e);
                }
            };
            let reported = crate::report::command(&out.sweep_id, &args.report, &url).await;
            let c = status.counts.unwrap_or_default();
            let (_, errors) = coordinator.errors_of(&out.sweep_id, &[TrialState::Failed]).await;
            coordinator.stop().await;
            reported?;
            // The sweep's trials now, with any seeds its plan added.
            let total = c.queued + c.running + c.succeeded + c.diverged + c.failed + c.cancelled;
            if c.succeeded == total {
                return Ok(());
            }
            Err(anyhow::anyhow!(
                "not every trial succeeded: {} succeeded, {} diverged, {} failed, {} cancelled of {}{}",
                c.succeeded,
                c.diverged,
                c.failed,
                c.cancelled,
                total,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!("\nwhy the failed trials failed:{}", bullet(&errors))
                }
            )
            .into())
        }
    }
}

/// The failure after SIGTERM (exit 143) or SIGINT (exit 130).
fn interrupted(sig: &str, what: &str) -> Failure {
    let code = if sig == "SIGINT" { 130 } else { 143 };
    Failure::with_code(code, anyhow::anyhow!("stopped by {sig}: {what}; run the same command again to resume"))
}
