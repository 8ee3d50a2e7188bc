//! `sweep run`: the all-in-one local mode. A coordinator on a local SQLite
//! file (in this process), N `sweep-worker` processes talking real gRPC over
//! loopback, live progress, then the report.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use sweep_core::GridSpec;
use tokio::process::{Child, Command};

use crate::Failure;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The grid file.
    grid: PathBuf,
    /// Number of local worker processes.
    #[arg(long, default_value_t = 1)]
    workers: u32,
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
    #[arg(long, hide = true)]
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

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let spec = GridSpec::from_file(&args.grid)?;
    let bin = worker_bin(&args)?;
    let logs = args.state_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let db = match &args.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", args.state_dir.join(format!("{}.db", spec.name)).display()),
    };
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
    crate::commands::set_security(sweep_proto::client::ClientSecurity {
        token: Some(client_token),
        ..Default::default()
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sweep_coordinator::serve_secure(
        store,
        sweep_coordinator::CoordinatorConfig {
            // One machine: heartbeat often so the progress lines stay fresh.
            heartbeat_interval: std::time::Duration::from_secs(2),
            ..Default::default()
        },
        security,
        listener,
        async {
            let _ = stop_rx.await;
        },
    ));

    let out = crate::commands::submit_spec(&spec, &url).await?;
    eprintln!(
        "sweep {}: {} trials ({} cells x {} seeds), {} new; coordinator {url}, database {db}",
        out.sweep_id,
        out.total_cells,
        spec.cell_count(),
        spec.seeds.len(),
        out.added_cells
    );
    eprintln!("starting {} worker(s); logs in {}", args.workers, logs.display());
    let mut workers = Vec::new();
    for i in 0..args.workers.max(1) {
        workers.push(spawn_worker(&bin, &args, &url, i, &logs, &worker_token)?);
    }

    let watched = crate::watch::watch(&out.sweep_id, &url).await;
    for w in &mut workers {
        terminate(w).await;
    }
    let status = watched?;
    crate::report::command(&out.sweep_id, &args.report, &url).await?;
    let _ = stop_tx.send(());
    let _ = server.await;

    let c = status.counts.unwrap_or_default();
    if c.succeeded == out.total_cells {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "not every trial succeeded: {} succeeded, {} diverged, {} failed, {} cancelled of {}",
            c.succeeded,
            c.diverged,
            c.failed,
            c.cancelled,
            out.total_cells
        )
        .into())
    }
}

fn spawn_worker(
    bin: &PathBuf,
    args: &RunArgs,
    url: &str,
    i: u32,
    logs: &std::path::Path,
    token: &str,
) -> anyhow::Result<Child> {
    let log_path = logs.join(format!("worker-{i}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--coordinator")
        .arg(url)
        .arg("--device")
        .arg(&args.device)
        .arg("--worker-id")
        .arg(format!("local-{i}"))
        .arg("--checkpoint-dir")
        .arg(args.state_dir.join("checkpoints"))
        .env("SWEEP_TOKEN", token)
        .env_remove("SWEEP_TLS_CA")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(ms) = args.simulate_step_ms {
        cmd.arg("--simulate-step-ms").arg(ms.to_string());
    } else if args.device == "cpu" {
        // Share the cores between the local workers instead of letting each
        // libtorch start one thread per core.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as u32;
        cmd.arg("--threads").arg((cores / args.workers.max(1)).max(1).to_string());
    }
    cmd.spawn().with_context(|| format!("starting {}", bin.display()))
}

/// SIGTERM, then SIGKILL if the worker has not exited within 10 seconds.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY-free: `kill` via the command-line tool keeps this crate free
        // of libc; the worker handles SIGTERM by finishing cleanly.
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
