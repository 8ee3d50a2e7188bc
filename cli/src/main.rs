//! `sweep`: the command-line front of the sweep orchestrator. Thin: parses
//! flags and dispatches to the command modules.

mod commands;
mod dashboard;
mod export;
mod failure;
mod health;
mod import;
mod local_workers;
mod logs;
mod printable;
mod report;
mod run;
mod seed_plan;
mod tables;
mod watch;
mod workers;

pub use failure::Failure;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Distributed ablation sweeps for deep-network design choices.
///
/// Describe a factorial grid in grid.toml (depth x skip connections x init x
/// batch-norm, seeds, training settings), submit it to a coordinator, let
/// workers on GPU (or CPU) nodes train every cell exactly once, and read the
/// ablation tables.
///
/// Example, on one machine (coordinator + 2 local workers + report):
///   sweep run grid.toml --workers 2
///
/// On a cluster:
///   sweep serve --database-url sqlite://sweep.db --listen 0.0.0.0:50051
///   sweep-worker --coordinator http://HOST:50051 --device cuda:0   # per GPU
///   sweep submit grid.toml --coordinator http://HOST:50051
///   sweep watch skip-ablation
///   sweep report skip-ablation --format markdown
#[derive(Parser)]
#[command(name = "sweep", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// File holding the bearer token for the coordinator (else SWEEP_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify a TLS coordinator (use an https:// URL).
    #[arg(long, global = true, env = "SWEEP_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with `sweep serve`: the server certificate).
    #[arg(long, global = true, env = "SWEEP_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "SWEEP_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log lines as text (for people) or JSON (one object per line, with
    /// trial and worker IDs as fields, for log shippers): `sweep serve`'s
    /// log above all. The level comes from SWEEP_LOG.
    #[arg(long, global = true, env = "SWEEP_LOG_FORMAT", value_enum, default_value_t = sweep_proto::logging::LogFormat::Text)]
    log_format: sweep_proto::logging::LogFormat,
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Markdown,
    Csv,
    Json,
    Latex,
}

#[derive(clap::Args, Clone)]
pub struct CoordinatorArg {
    /// Coordinator URL.
    #[arg(long, env = "SWEEP_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator: stores trials, hands them to workers, answers clients.
    ///
    /// Only the coordinator touches the database. Migrations run on start.
    ///
    /// Examples:
    ///   sweep serve
    ///   sweep serve --database-url postgres://sweep@db/sweep --listen 0.0.0.0:50051
    #[command(verbatim_doc_comment)]
    Serve {
        /// Database URL: sqlite://PATH (created if missing) or postgres://...
        #[arg(long, env = "SWEEP_DATABASE_URL", default_value = "sqlite://sweep.db")]
        database_url: String,
        /// Address to listen on.
        #[arg(long, env = "SWEEP_LISTEN", default_value = "127.0.0.1:50051")]
        listen: String,
        /// Seconds a lease lives without a heartbeat before its trial is re-queued.
        #[arg(long, env = "SWEEP_LEASE_TTL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        lease_ttl_secs: u64,
        /// Worker tokens, one per line (else SWEEP_WORKER_TOKENS, comma-separated).
        #[arg(long)]
        worker_tokens_file: Option<PathBuf>,
        /// Client tokens, one per line (else SWEEP_CLIENT_TOKENS, comma-separated).
        #[arg(long)]
        client_tokens_file: Option<PathBuf>,
        /// CA (PEM) whose client certificates are required (mutual TLS).
        #[arg(long)]
        tls_client_ca: Option<PathBuf>,
        /// Serve a non-loopback address without TLS or without tokens. Only
        /// for networks you trust completely.
        #[arg(long)]
        allow_insecure: bool,
        /// Also serve Prometheus metrics on this address (plain HTTP, GET
        /// /metrics: trials per sweep and state, leases, points, RPC
        /// latencies, connected workers). No tokens: it shows sweep names
        /// and counts, so bind it where only your Prometheus reaches, e.g.
        /// 127.0.0.1:9464.
        #[arg(long, env = "SWEEP_METRICS_LISTEN")]
        metrics_listen: Option<String>,
        /// Also serve the web dashboard on this address, e.g.
        /// 127.0.0.1:8080: the sweeps, live loss curves, the report's
        /// tables and pictures, trials with their output, the workers, and
        /// a cancel button. Loopback only, unless the coordinator has tokens
        /// and --allow-insecure is given (it speaks plain HTTP: put a TLS
        /// proxy in front). With client tokens, pages ask for one.
        #[arg(long, env = "SWEEP_HTTP", value_name = "ADDR")]
        http: Option<String>,
        #[command(flatten)]
        net: commands::NetFlags,
    },
    /// Submit a grid file. Prints the sweep ID as the last line.
    ///
    /// Idempotent: submitting the same file again adds nothing; adding seeds or
    /// factor values adds only the new cells.
    ///
    /// Examples:
    ///   sweep submit grid.toml
    ///   sweep submit grid.toml --dry-run     # list the cells, store nothing
    #[command(verbatim_doc_comment)]
    Submit {
        grid: PathBuf,
        /// Print the expanded cells and their count; contact nothing, store nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Trial counts per state, for one sweep or all.
    Status {
        sweep: Option<String>,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// The sweeps, newest first: trials, how many are done, running and
    /// queued, and how long ago each was submitted.
    Ls {
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// The workers heard from within two lease TTLs: device, threads, slots,
    /// the trials each runs now, its last call, and how many trials it failed
    /// in a row (quarantined at the coordinator's limit).
    Workers {
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// What a trial's command wrote to stdout and stderr (exec trainer),
    /// with the worker's notes (`[sweep] ...`: its start, bad metric lines,
    /// signals, exit). Each attempt's last 64 KiB, as its worker last sent
    /// it (every few seconds while it runs). TRIAL is a trial ID or a
    /// prefix of one (at least 4 hex digits), as `sweep status` shows.
    Logs {
        trial: String,
        /// Only this attempt (1 for the first).
        #[arg(long)]
        attempt: Option<u32>,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Whether the coordinator serves (gRPC health, `grpc.health.v1`):
    /// prints SERVING and exits 0, else exits 1. No token needed; TLS is
    /// verified with --tls-ca. Made for container probes.
    ///
    /// Examples:
    ///   sweep health --coordinator http://127.0.0.1:50051
    ///   sweep health --coordinator https://localhost:50051 --tls-ca /etc/sweep/tls/ca.crt
    ///   sweep health --service sweep.v1.WorkerService
    #[command(verbatim_doc_comment)]
    Health {
        /// The service to ask about (empty: the whole server).
        #[arg(long, default_value = "")]
        service: String,
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_secs: u64,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Live progress until the sweep ends.
    Watch {
        sweep: String,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// The ablation report: per-cell means with 95% t-intervals, main effects,
    /// interactions (e.g. the skip effect at each depth), paired comparisons
    /// on shared seeds (Holm-corrected), flags in plain words, and pictures.
    ///
    /// Examples:
    ///   sweep report skip-ablation
    ///   sweep report skip-ablation --baseline skip=false --metric train_loss
    ///   sweep report skip-ablation --by depth,skip --format markdown
    ///   sweep report skip-ablation --format csv > cells.csv
    ///   sweep report skip-ablation --html report.html --out figures/
    #[command(verbatim_doc_comment)]
    Report {
        sweep: String,
        #[command(flatten)]
        options: report::ReportArgs,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Cancel every queued and running trial of a sweep (submit again to resume).
    Cancel {
        sweep: String,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Write a sweep's stored state: the lossless archive `sweep import`
    /// reads (JSON lines: the grid, every trial row, every metric point),
    /// Parquet tables, or TensorBoard event files.
    ///
    /// The archive moves sweeps between coordinators and between SQLite and
    /// PostgreSQL; an export that ends early is an error, and files are
    /// renamed into place only when complete.
    ///
    /// Examples:
    ///   sweep export skip-ablation > skip-ablation.jsonl
    ///   sweep export skip-ablation --out backup/skip-ablation.jsonl
    ///   sweep export skip-ablation --format parquet --out tables/
    ///   sweep export skip-ablation --format tensorboard --out runs/ && tensorboard --logdir runs/
    #[command(verbatim_doc_comment)]
    Export {
        #[command(flatten)]
        args: export::ExportArgs,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Store a sweep from an archive written by `sweep export` (a file, or -
    /// for standard input).
    ///
    /// All or nothing: the coordinator checks every line (order, counts,
    /// references) and stores the sweep in one transaction. A sweep the
    /// database holds already is refused. Trials that were queued or
    /// running when exported are queued again.
    ///
    /// Example (SQLite to PostgreSQL):
    ///   sweep export skip-ablation --coordinator http://old:50051 > s.jsonl
    ///   sweep import s.jsonl --coordinator http://new:50051
    #[command(verbatim_doc_comment)]
    Import {
        file: PathBuf,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// All-in-one local mode: a coordinator on a local SQLite file, N local
    /// worker processes, progress, then the report.
    ///
    /// Exits 0 when every cell succeeded; 1 when some did not, or when no
    /// local worker is left to run them (it says why); 130/143 after
    /// Ctrl-C/SIGTERM, which hand the running trials back: run the same
    /// command again to resume. Worker logs go to .sweep/logs/.
    ///
    /// Example:
    ///   sweep run grid.toml --workers 2
    #[command(verbatim_doc_comment)]
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `sweep run`'s own coordinator would warn once per failed attempt; the
    // run ends with a summary of the trials' errors instead.
    let default_filter = match cli.command {
        Command::Run(_) => "warn,sweep_coordinator=error",
        _ => "warn",
    };
    // Text escaped: a log line may quote what a worker or client sent.
    sweep_proto::logging::init(cli.log_format, default_filter, || printable::EscapedStderr, false);
    match sweep_proto::client::ClientSecurity::from_sources(
        cli.token_file.as_deref(),
        cli.tls_ca.clone(),
        cli.tls_cert.clone(),
        cli.tls_key.clone(),
    ) {
        Ok(s) => commands::set_security(s),
        Err(e) => {
            eprintln!("error: {}", failure::chain_text(&e.into()));
            return ExitCode::from(2);
        }
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve {
                database_url,
                listen,
                lease_ttl_secs,
                worker_tokens_file,
                client_tokens_file,
                tls_client_ca,
                allow_insecure,
                metrics_listen,
                http,
                net,
            } => {
                let sec = commands::ServeSecurity {
                    worker_tokens_file,
                    client_tokens_file,
                    tls_cert: cli.tls_cert.clone(),
                    tls_key: cli.tls_key.clone(),
                    tls_client_ca,
                    allow_insecure,
                };
                commands::serve(
                    &database_url,
                    &listen,
                    metrics_listen.as_deref(),
                    http.as_deref(),
                    lease_ttl_secs,
                    net,
                    sec,
                )
                .await
            }
            Command::Submit { grid, dry_run, coordinator } => {
                commands::submit(&grid, dry_run, &coordinator.coordinator).await
            }
            Command::Status { sweep, coordinator } => {
                commands::status(sweep.as_deref(), &coordinator.coordinator).await
            }
            Command::Health { service, timeout_secs, coordinator } => {
                health::command(&service, std::time::Duration::from_secs(timeout_secs), &coordinator.coordinator).await
            }
            Command::Ls { coordinator } => commands::ls(&coordinator.coordinator).await,
            Command::Workers { coordinator } => workers::workers(&coordinator.coordinator).await,
            Command::Logs { trial, attempt, coordinator } => {
                logs::logs(&trial, attempt, &coordinator.coordinator).await
            }
            Command::Watch { sweep, coordinator } => watch::watch(&sweep, &coordinator.coordinator).await.map(|_| ()),
            Command::Report { sweep, options, coordinator } => {
                report::command(&sweep, &options, &coordinator.coordinator).await
            }
            Command::Cancel { sweep, coordinator } => commands::cancel(&sweep, &coordinator.coordinator).await,
            Command::Export { args, coordinator } => export::command(&args, &coordinator.coordinator).await,
            Command::Import { file, coordinator } => import::command(&file, &coordinator.coordinator).await,
            Command::Run(args) => run::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message());
            ExitCode::from(f.code)
        }
    }
}
