//! `sweep-loadgen`: N simulated workers in one process against a running
//! coordinator, over real gRPC (each worker its own connection, lease loop,
//! heartbeats and metric path), with nothing trained. Prints trials and
//! points per second, each call's round-trip percentiles and, given the
//! coordinator's PID, its memory. `bench/scale.sh` drives it.

mod latency;
mod rss;
mod sim_worker;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use sweep_proto::v1 as pb;
use tonic::transport::Endpoint;

use crate::latency::Summary;
use crate::sim_worker::{MetricsPath, Plan, Tally};

/// Simulated workers against a running coordinator: how many no-op trials
/// per second it turns over, and how long each call takes.
///
/// Examples:
///   sweep-loadgen --coordinator http://127.0.0.1:50051 --submit 20000 --workers 64
///   sweep-loadgen --coordinator http://127.0.0.1:50051 --submit 20000 --workers 1000 \
///       --trial-ms 2000 --heartbeat-ms 1000 --seconds 20
#[derive(Parser, Debug)]
#[command(verbatim_doc_comment)]
struct Args {
    /// The coordinator's address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// Submit a no-op grid of at least this many trials first (100 cells,
    /// as many seeds as it takes), under `--sweep`.
    #[arg(long)]
    submit: Option<u64>,
    /// The name of the grid `--submit` stores.
    #[arg(long, default_value = "loadgen")]
    sweep: String,
    /// Simulated workers, each with its own connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    workers: u32,
    /// Trials per lease (a group lease of one cell's seeds when above 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    group: u32,
    /// Metric points per trial.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    points: u32,
    /// How each trial's points are sent.
    #[arg(long, value_enum, default_value_t = MetricsPath::Complete)]
    metrics: MetricsPath,
    /// Milliseconds each trial "trains" (0: a no-op trial).
    #[arg(long, default_value_t = 0)]
    trial_ms: u64,
    /// Heartbeat period while a trial trains.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,
    /// Stop leasing after this many seconds (default: when the queue is
    /// empty).
    #[arg(long)]
    seconds: Option<f64>,
    /// The coordinator's PID: report its resident memory (Linux).
    #[arg(long)]
    coordinator_pid: Option<u32>,
    /// Exit with status 1 when fewer trials per second were finished.
    #[arg(long)]
    min_trials_per_sec: Option<f64>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Outcome {
    workers: u32,
    group: u32,
    points_per_trial: u32,
    metrics: MetricsPath,
    trial_ms: u64,
    trials: u64,
    seconds: f64,
    trials_per_sec: f64,
    points_per_sec: f64,
    lease: Option<Summary>,
    complete: Option<Summary>,
    metric_ack: Option<Summary>,
    heartbeat: Option<Summary>,
    coordinator_rss_mib: Option<f64>,
    coordinator_peak_rss_mib: Option<f64>,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("sweep-loadgen: {e:#}");
        std::process::exit(2);
    }
}

async fn run(args: Args) -> Result<()> {
    let endpoint = Endpoint::from_shared(args.coordinator.clone())
        .with_context(|| format!("--coordinator {:?}", args.coordinator))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    if let Some(n) = args.submit {
        submit(&endpoint, &args.sweep, n).await?;
    }
    // Every worker connects before the clock starts.
    let mut channels = Vec::with_capacity(args.workers as usize);
    for _ in 0..args.workers {
        channels.push(endpoint.connect().await.with_context(|| format!("connecting to {}", args.coordinator))?);
    }
    let start = Instant::now();
    let plan = Plan {
        group: args.group,
        points: args.points,
        trial: Duration::from_millis(args.trial_ms),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        metrics: args.metrics,
        deadline: args.seconds.map(|s| start + Duration::from_secs_f64(s.max(0.0))),
        workers: args.workers,
    };
    let handles: Vec<_> =
        channels.into_iter().enumerate().map(|(i, ch)| tokio::spawn(sim_worker::run(i, ch, plan.clone()))).collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h.await.context("a simulated worker panicked")??;
        total.trials += t.trials;
        total.points += t.points;
        total.lease.merge(t.lease);
        total.complete.merge(t.complete);
        total.ack.merge(t.ack);
        total.heartbeat.merge(t.heartbeat);
    }
    let seconds = start.elapsed().as_secs_f64();
    let memory = args.coordinator_pid.map(rss::read).transpose()?;
    let out = Outcome {
        workers: args.workers,
        group: args.group,
        points_per_trial: args.points,
        metrics: args.metrics,
        trial_ms: args.trial_ms,
        trials: total.trials,
        seconds,
        trials_per_sec: total.trials as f64 / seconds,
        points_per_sec: total.points as f64 / seconds,
        lease: total.lease.summary(),
        complete: total.complete.summary(),
        metric_ack: total.ack.summary(),
        heartbeat: total.heartbeat.summary(),
        coordinator_rss_mib: memory.map(|m| m.0),
        coordinator_peak_rss_mib: memory.map(|m| m.1),
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_table(&out);
    }
    if let Some(min) = args.min_trials_per_sec {
        if out.trials_per_sec < min {
            eprintln!("sweep-loadgen: {:.0} trials/s is below the floor of {min:.0}", out.trials_per_sec);
            std::process::exit(1);
        }
    }
    Ok(())
}

/// Stores the no-op grid: 5 depths x 2 x 5 x 2 = 100 cells, with as many
/// seeds as it takes to reach `trials`.
async fn submit(endpoint: &Endpoint, name: &str, trials: u64) -> Result<()> {
    let seeds = trials.div_ceil(100).max(1);
    let text = format!(
        "name = {name:?}\nseeds = {seeds}\n[grid]\ndepth = [8, 16, 24, 32, 40]\nskip = [true, false]\n\
         init = [\"default\", \"xavier_uniform\", \"xavier_normal\", \"kaiming_uniform\", \"kaiming_normal\"]\n\
         batchnorm = [true, false]\n[data]\npath = \"/data\"\n"
    );
    let spec = sweep_core::GridSpec::parse(&text, std::path::Path::new("loadgen.toml"))
        .map_err(|e| anyhow::anyhow!("the load grid: {e}"))?;
    let channel = endpoint.connect().await.context("connecting to submit")?;
    let mut client = pb::sweep_service_client::SweepServiceClient::new(channel);
    let started = Instant::now();
    let out = client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.context("Submit")?.into_inner();
    if out.total_trials < trials {
        bail!("submitted {} trials, fewer than the {trials} asked for", out.total_trials);
    }
    eprintln!(
        "submitted {name:?}: {} trials ({} new) in {:.2} s",
        out.total_trials,
        out.added_trials,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_table(o: &Outcome) {
    println!(
        "{} workers, group {}, {} points per trial via {:?}, {} ms per trial",
        o.workers, o.group, o.points_per_trial, o.metrics, o.trial_ms
    );
    println!(
        "{} trials in {:.2} s: {:.0} trials/s, {:.0} points/s",
        o.trials, o.seconds, o.trials_per_sec, o.points_per_sec
    );
    println!("{:<12} {:>9} {:>9} {:>9} {:>9}", "call", "count", "p50 ms", "p99 ms", "max ms");
    for (name, s) in
        [("Lease", o.lease), ("Complete", o.complete), ("metric ack", o.metric_ack), ("Heartbeat", o.heartbeat)]
    {
        if let Some(s) = s {
            println!("{name:<12} {:>9} {:>9.2} {:>9.2} {:>9.2}", s.calls, s.p50_ms, s.p99_ms, s.max_ms);
        }
    }
    if let (Some(rss), Some(peak)) = (o.coordinator_rss_mib, o.coordinator_peak_rss_mib) {
        println!("coordinator memory: {rss:.0} MiB resident, {peak:.0} MiB peak");
    }
}
