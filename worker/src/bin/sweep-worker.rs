//! `sweep-worker`: the worker daemon. Thin: parses flags, sets up logging and
//! signals, and hands over to `sweep_worker::daemon::run`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sweep_worker::daemon::{self, WorkerConfig};
use sweep_worker::trainer::TrainerFactory;

/// Worker daemon of `sweep`: leases trials from a coordinator over gRPC,
/// trains BMEnet on each with libtorch, and streams the metrics back.
///
/// Run one per GPU (or a few per CPU node). Workers never touch the database;
/// they reconnect with backoff whenever the coordinator is away.
///
/// Examples:
///   sweep-worker --coordinator http://10.0.0.5:50051 --device cuda:0
///   sweep-worker --device cuda:0 --fuse 16      # 16 seeds of a cell as one model
///   sweep-worker --device cuda:0 --slots 6      # 6 trainings side by side
///   SWEEP_COORDINATOR=http://127.0.0.1:50051 sweep-worker
///   sweep-worker model --depth 32 --no-skip
#[derive(Parser)]
#[command(name = "sweep-worker", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    /// Log lines as text (for people) or JSON (one object per line, with
    /// the worker and trial IDs as span fields, for log shippers). The level
    /// comes from SWEEP_LOG (default info).
    #[arg(long, global = true, env = "SWEEP_LOG_FORMAT", value_enum, default_value_t = sweep_proto::logging::LogFormat::Text)]
    log_format: sweep_proto::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Print BMEnet's per-layer table (layer, output shape, parameters) and
    /// its parameter totals, like the lecture's table.
    Model {
        /// Total depth: a positive multiple of 8, at most 1024 (the grid's
        /// rule for `depth`).
        #[arg(long, default_value_t = 32, value_parser = parse_depth)]
        depth: u32,
        /// Leave out the skip connections.
        #[arg(long)]
        no_skip: bool,
        /// Leave out the batch-norm layers.
        #[arg(long)]
        no_batchnorm: bool,
    },
    /// Write a small synthetic dataset in the CIFAR-10 binary layout (for
    /// demos and tests on machines without CIFAR-10). Class-dependent
    /// patterns, so a network can learn it; the same seed writes the same bytes.
    SynthData {
        /// Folder to write data_batch_1..5.bin, test_batch.bin and batches.meta.txt into.
        #[arg(long)]
        out: PathBuf,
        /// Training images (1 to 50000, CIFAR-10's size).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
        train: u64,
        /// Test images (1 to 10000, CIFAR-10's size).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        test: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Coordinator URL.
    #[arg(long, env = "SWEEP_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// Device to train on: `cpu` or `cuda:N`.
    #[arg(long, env = "SWEEP_DEVICE", default_value = "cpu")]
    device: String,
    /// Name shown in `sweep status` (default: HOSTNAME-PID): 1 to 128
    /// printable characters.
    #[arg(long, env = "SWEEP_WORKER_ID", value_parser = parse_worker_id)]
    worker_id: Option<String>,
    /// Folder for per-trial checkpoints. Use storage all workers share so a
    /// re-leased trial resumes wherever it lands.
    #[arg(long, env = "SWEEP_CHECKPOINT_DIR", default_value = ".sweep/checkpoints")]
    checkpoint_dir: PathBuf,
    /// Read datasets from this folder instead of the path in the grid file
    /// (for nodes that keep data elsewhere).
    #[arg(long, env = "SWEEP_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// Exit after this many trials (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_trials: Option<u64>,
    /// libtorch CPU threads for training, 1 to 1024 (default: libtorch's
    /// choice, all cores). Set it when several workers share a machine.
    #[arg(long, env = "SWEEP_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Seeds of one grid cell to train together as one fused model: `auto`
    /// (1 on the CPU, where fusing gains nothing; 8 on a GPU) or a number
    /// from 1 to 64. The worker asks the coordinator for up to this many
    /// trials of one cell (same settings, same checkpoint step) per lease;
    /// each keeps its own lease, metrics, checkpoints and result.
    #[arg(long, env = "SWEEP_FUSE", default_value = "auto")]
    fuse: sweep_worker::fuse::Fuse,
    /// Trainings to run at once on the device: `auto` (1 on the CPU, where
    /// one training already uses every core; 4 on a GPU) or a number from
    /// 1 to 32. Each slot leases and trains on its own thread. On a GPU a
    /// training starts only when its estimated memory fits in what was free
    /// once the worker was ready (the estimate is corrected by what
    /// trainings actually take); one that runs out of memory beside others
    /// is handed back, without using an attempt, and the worker runs fewer
    /// at once.
    #[arg(long, env = "SWEEP_SLOTS", default_value = "auto")]
    slots: sweep_worker::slots::Slots,
    /// Exit when no work has been offered for this many seconds (1 to
    /// 604800, a week).
    #[arg(long, env = "SWEEP_IDLE_EXIT_SECS", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    idle_exit_secs: Option<u64>,
    /// Serve Prometheus metrics on this address (plain HTTP, GET /metrics):
    /// each running trial's epoch, step, loss and training images per
    /// second, trials by outcome, and on CUDA the device's free and used
    /// memory. No token: bind it where only your Prometheus reaches, e.g.
    /// 127.0.0.1:9465. Off by default.
    #[arg(long, env = "SWEEP_WORKER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// File holding this worker's bearer token (else SWEEP_TOKEN). Never a
    /// flag value: flags show in `ps`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) of a TLS coordinator (use an https:// URL).
    #[arg(long, env = "SWEEP_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), when the coordinator requires mutual TLS.
    #[arg(long, env = "SWEEP_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Key (PEM) of --tls-cert.
    #[arg(long, env = "SWEEP_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds (0 to 3600) a running trial gets after SIGTERM/SIGINT to
    /// reach its next step, checkpoint and be handed back, before the worker
    /// exits anyway. Bounds everything after the signal, including calls to
    /// a coordinator that is away.
    #[arg(long, env = "SWEEP_GRACE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    grace_secs: u64,
    /// Run exec trials (`[trainer] kind = "exec"`): the command a grid
    /// names, on this machine, as this user. Off by default: with it, a
    /// client token is enough to run code here. Without it, exec trials
    /// leased here fail, saying so. `sweep run` turns it on for its local
    /// workers.
    #[arg(long, env = "SWEEP_ALLOW_EXEC")]
    allow_exec: bool,
    /// Shut down (as on SIGTERM) when stdin reaches end of file: the parent
    /// that started this worker with a pipe on its stdin died or closed it.
    /// `sweep run` starts its local workers this way.
    #[arg(long)]
    watch_stdin: bool,
    /// Test double: simulate training with this many milliseconds per batch
    /// instead of training (orchestration tests only).
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    simulate_step_ms: Option<u64>,
    /// Test double: with --simulate-step-ms, also send one metric point the
    /// coordinator must refuse (orchestration tests only).
    #[arg(long, hide = true, requires = "simulate_step_ms")]
    simulate_refused_metric: bool,
}

/// A `--depth`, checked by the grid's own rule for the `depth` factor
/// (the one copy of it, in the core's BMEnet schema).
fn parse_depth(s: &str) -> Result<u32, String> {
    let depth: i64 = s.trim().parse().map_err(|e| format!("{s:?} is not an integer: {e}"))?;
    let level = sweep_core::schema().check("depth", sweep_core::Level::Int(depth))?;
    let depth = level.as_int().ok_or("not an integer")?;
    u32::try_from(depth).map_err(|e| e.to_string())
}

/// Longest accepted `--worker-id`.
const MAX_WORKER_ID_CHARS: usize = 128;

/// A worker ID: 1 to 128 printable characters (it is shown in terminals and
/// logs, and stored per lease).
fn parse_worker_id(s: &str) -> Result<String, String> {
    let n = s.chars().count();
    if n == 0 || n > MAX_WORKER_ID_CHARS {
        return Err(format!("must be 1 to {MAX_WORKER_ID_CHARS} characters, got {n}"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("must be printable; contains the control character {:?}", c));
    }
    Ok(s.to_owned())
}

/// The built-in trainer (BMEnet, or the simulated double), with exec
/// trials going to the exec trainer.
fn trainer_factory(args: &RunArgs) -> anyhow::Result<TrainerFactory> {
    let builtin = builtin_trainer(args)?;
    let exec = sweep_worker::exec::ExecTrainer {
        checkpoint_root: args.checkpoint_dir.clone(),
        device: args.device.clone(),
        data_root: args.data_root.clone(),
        // SIGTERM to SIGKILL: most of the worker's own grace, so the
        // command's last checkpoint and the hand-back both fit in it.
        stop_grace: Duration::from_secs(args.grace_secs).mul_f64(0.7),
        allowed: args.allow_exec,
    };
    Ok(std::sync::Arc::new(move || {
        let builtin = builtin()?;
        Ok(Box::new(sweep_worker::exec::WithExec { exec: exec.clone(), builtin }) as _)
    }))
}

fn builtin_trainer(args: &RunArgs) -> anyhow::Result<TrainerFactory> {
    if let Some(ms) = args.simulate_step_ms {
        tracing::warn!("using the SIMULATED trainer (a test double): no real training happens");
        let delay = Duration::from_millis(ms);
        let refused_metric = args.simulate_refused_metric;
        return Ok(std::sync::Arc::new(move || {
            let mut t = sweep_worker::simulated::SimulatedTrainer::new(delay);
            t.refused_metric = refused_metric;
            Ok(Box::new(t) as _)
        }));
    }
    real_trainer(args)
}

#[cfg(feature = "torch")]
fn real_trainer(args: &RunArgs) -> anyhow::Result<TrainerFactory> {
    let device = sweep_worker::torch::parse_device(&args.device)?;
    let data_root = args.data_root.clone();
    let threads = args.threads;
    Ok(std::sync::Arc::new(move || {
        // Runs on the training thread, where libtorch will do its work.
        if let Some(n) = threads {
            // Validated at the flag: 1..=1024.
            tch::set_num_threads(n as i32);
            tch::set_num_interop_threads(1);
        }
        Ok(Box::new(sweep_worker::torch::TorchTrainer::new(device, data_root.clone())) as _)
    }))
}

#[cfg(not(feature = "torch"))]
fn real_trainer(_args: &RunArgs) -> anyhow::Result<TrainerFactory> {
    anyhow::bail!(
        "this sweep-worker was built without the `torch` feature and cannot train; rebuild with default features"
    )
}

/// Resolves when stdin reaches end of file (or fails): read on a plain
/// thread, since the read blocks.
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("watch-stdin".into()).spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    if let Err(e) = spawned {
        tracing::error!("cannot watch stdin: {e}");
    }
    rx
}

/// Resolves on SIGTERM, SIGINT or (with `--watch-stdin`) end of stdin.
/// After it, the daemon has `grace` to stop; a watchdog exits the process
/// shortly after that whatever is still running, so the grace period is
/// kept even if something below would wait for longer.
async fn shutdown_signal(watch_stdin: bool, grace: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let stdin = async {
        if watch_stdin {
            let _ = stdin_closed().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = stdin => tracing::info!("stdin closed (the process that started this worker is gone): shutting down"),
    }
    let _ = std::thread::Builder::new().name("grace-watchdog".into()).spawn(move || {
        std::thread::sleep(grace + Duration::from_millis(700));
        eprintln!("sweep-worker: the shutdown grace period ({}s) is over; exiting", grace.as_secs());
        std::process::exit(1);
    });
    // A second signal exits at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    sweep_proto::logging::init(cli.log_format, "info", std::io::stderr, ansi);
    match cli.command {
        Some(Command::Model { depth, no_skip, no_batchnorm }) => return print_model(depth, !no_skip, !no_batchnorm),
        Some(Command::SynthData { out, train, test, seed }) => {
            return synth_data(&out, train as usize, test as usize, seed)
        }
        None => {}
    }
    let args = cli.run;
    let mut config = WorkerConfig::new(args.coordinator.clone());
    if let Some(id) = &args.worker_id {
        config.worker_id = id.clone();
    }
    config.device = args.device.clone();
    config.checkpoint_root = args.checkpoint_dir.clone();
    config.max_trials = args.max_trials;
    config.idle_exit = args.idle_exit_secs.map(Duration::from_secs);
    config.grace = Duration::from_secs(args.grace_secs);
    config.threads = args.threads.unwrap_or(0);
    config.fuse = args.fuse.resolve(&args.device);
    config.slots = args.slots.resolve(&args.device);
    config.security = sweep_proto::client::ClientSecurity::from_sources(
        args.token_file.as_deref(),
        args.tls_ca.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
    )?;
    // The device is checked here (a missing GPU is an error before
    // anything else), so its memory is probed after.
    let factory = trainer_factory(&args)?;
    if config.slots > 1 {
        config.memory = sweep_worker::memory::DeviceMemory::for_device(&args.device);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let grace = config.grace;
    let result = rt.block_on(async {
        if let Some(addr) = &args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}: cannot listen there"))?;
            eprintln!("sweep-worker metrics on http://{}/metrics", listener.local_addr()?);
            let memory = sweep_worker::memory::DeviceMemory::for_device(&args.device);
            config.telemetry = std::sync::Arc::new(sweep_worker::telemetry::Telemetry::new(memory.is_some()));
            let server =
                sweep_worker::telemetry::serve(listener, config.telemetry.clone(), memory, std::future::pending());
            tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "the metrics server stopped");
                }
            });
        }
        daemon::run(config, factory, shutdown_signal(args.watch_stdin, grace)).await.map_err(anyhow::Error::from)
    });
    // The training thread may still be blocked (a trial abandoned at the end
    // of the grace period); do not wait for the runtime's threads either.
    rt.shutdown_timeout(Duration::from_millis(100));
    result?;
    Ok(())
}

/// `depth` is checked at the flag ([`parse_depth`]).
#[cfg(feature = "torch")]
fn print_model(depth: u32, skip: bool, batchnorm: bool) -> anyhow::Result<()> {
    print!("{}", sweep_worker::torch::try_model_table(depth, skip, batchnorm)?);
    Ok(())
}

#[cfg(not(feature = "torch"))]
fn print_model(_: u32, _: bool, _: bool) -> anyhow::Result<()> {
    anyhow::bail!("built without the `torch` feature")
}

#[cfg(feature = "torch")]
fn synth_data(out: &std::path::Path, train: usize, test: usize, seed: u64) -> anyhow::Result<()> {
    let dir = sweep_worker::torch::cifar::generate_synthetic(out, train, test, seed)?;
    println!("wrote {train} training and {test} test images (synthetic, CIFAR-10 binary layout) to {}", dir.display());
    Ok(())
}

#[cfg(not(feature = "torch"))]
fn synth_data(_: &std::path::Path, _: usize, _: usize, _: u64) -> anyhow::Result<()> {
    anyhow::bail!("built without the `torch` feature")
}
