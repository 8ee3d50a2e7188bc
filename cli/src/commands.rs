//! The client commands: serve, submit, status, report, cancel.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sweep_core::GridSpec;
use sweep_proto::client::{AuthChannel, ClientSecurity};
use sweep_proto::v1 as pb;
use sweep_proto::v1::sweep_service_client::SweepServiceClient;

use crate::printable::printable;
use crate::Failure;

/// The token and TLS settings of this invocation (set once by `main`, or by
/// `sweep run` with the token it generated).
static SECURITY: std::sync::RwLock<Option<ClientSecurity>> = std::sync::RwLock::new(None);

pub(crate) fn set_security(s: ClientSecurity) {
    *SECURITY.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s);
}

pub(crate) fn security() -> ClientSecurity {
    SECURITY.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().unwrap_or_default()
}

/// A channel to the coordinator with the bearer token attached, with an
/// error that says what to check.
pub(crate) async fn channel(url: &str) -> anyhow::Result<AuthChannel> {
    let sec = security();
    let endpoint = sec.endpoint(url)?;
    let channel = endpoint.connect().await.with_context(|| {
        format!("cannot reach the coordinator at {url}: is `sweep serve` running there? (set --coordinator or SWEEP_COORDINATOR)")
    })?;
    Ok(tonic::service::interceptor::InterceptedService::new(channel, sec.interceptor()?))
}

/// Connects the client service.
pub(crate) async fn connect(url: &str) -> anyhow::Result<SweepServiceClient<AuthChannel>> {
    Ok(SweepServiceClient::new(channel(url).await?).max_decoding_message_size(64 * 1024 * 1024))
}

/// Turns a gRPC status into an error that reads well (the coordinator's
/// message escaped: it may quote what a worker or client sent).
pub(crate) fn rpc(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", printable(s.message()), s.code())
}

/// `sweep serve`'s protection settings, as given on the command line.
pub(crate) struct ServeSecurity {
    pub worker_tokens_file: Option<std::path::PathBuf>,
    pub client_tokens_file: Option<std::path::PathBuf>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    pub tls_client_ca: Option<std::path::PathBuf>,
    pub allow_insecure: bool,
}

impl ServeSecurity {
    fn load(&self) -> anyhow::Result<sweep_coordinator::Security> {
        use sweep_coordinator::auth::{load_tokens, Auth, Tokens};
        let worker = load_tokens(self.worker_tokens_file.as_deref(), "SWEEP_WORKER_TOKENS")?;
        let client = load_tokens(self.client_tokens_file.as_deref(), "SWEEP_CLIENT_TOKENS")?;
        if worker.is_empty() != client.is_empty() {
            anyhow::bail!("give both worker and client tokens (or neither, on loopback only)");
        }
        let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some(sweep_coordinator::ServerTls {
                cert_pem: read(c)?,
                key_pem: read(k)?,
                client_ca_pem: self.tls_client_ca.as_deref().map(read).transpose()?,
            }),
            (None, None) if self.tls_client_ca.is_some() => {
                anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key")
            }
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(sweep_coordinator::Security {
            auth: Auth::new(Some(Tokens::new(worker, client))),
            tls,
            allow_insecure: self.allow_insecure,
        })
    }
}

/// The connection limits of `sweep serve` (the rest of
/// [`sweep_coordinator::NetLimits`] keeps its documented defaults).
#[derive(clap::Args, Clone, Copy, Debug)]
pub(crate) struct NetFlags {
    /// Most connections served at once; further ones wait in the listen
    /// backlog (keep it below the process's file limit).
    #[arg(long, env = "SWEEP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Seconds a new connection has to start its HTTP/2 handshake (after
    /// TLS, when on) before it is closed.
    #[arg(long, env = "SWEEP_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub handshake_timeout_secs: u64,
}

impl NetFlags {
    fn limits(self) -> sweep_coordinator::NetLimits {
        sweep_coordinator::NetLimits {
            max_connections: self.max_connections as usize,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            ..Default::default()
        }
    }
}

pub(crate) async fn serve(
    database_url: &str,
    listen: &str,
    metrics_listen: Option<&str>,
    http: Option<&str>,
    lease_ttl_secs: u64,
    net: NetFlags,
    sec: ServeSecurity,
) -> Result<(), Failure> {
    let security = sec.load()?;
    let store = sweep_coordinator::store::open(database_url)
        .await
        .with_context(|| format!("opening the database {database_url}"))?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let ttl = Duration::from_secs(lease_ttl_secs.max(1));
    let config = sweep_coordinator::CoordinatorConfig {
        lease_ttl: ttl,
        heartbeat_interval: (ttl / 6).max(Duration::from_millis(500)),
        ..Default::default()
    };
    eprintln!(
        "sweep coordinator listening on {} (database {database_url}; {}; {})",
        listener.local_addr()?,
        if security.tls.is_some() { "TLS" } else { "plaintext" },
        if security.auth.enabled() { "token auth" } else { "no auth" }
    );
    let metrics = match metrics_listen {
        None => None,
        Some(addr) => {
            let l =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics: listening on {addr}"))?;
            eprintln!("sweep metrics on http://{}/metrics", l.local_addr()?);
            let server = sweep_coordinator::metrics::serve_metrics(
                l,
                config.metrics.clone(),
                config.fleet.clone(),
                store.clone(),
                ttl,
                std::future::pending(),
            );
            Some(tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "the metrics server stopped");
                }
            }))
        }
    };
    let dashboard = match http {
        None => None,
        Some(addr) => Some(crate::dashboard::start(addr, listener.local_addr()?, &security).await?),
    };
    let served =
        sweep_coordinator::serve_with_limits(store, config, security, net.limits(), listener, shutdown_signal()).await;
    for task in [metrics, dashboard].into_iter().flatten() {
        task.abort();
    }
    served?;
    eprintln!("sweep coordinator stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub(crate) async fn submit(grid: &Path, dry_run: bool, url: &str) -> Result<(), Failure> {
    let spec = GridSpec::from_file(grid)?;
    if dry_run {
        print_cells(&spec);
        return Ok(());
    }
    let out = submit_spec(&spec, url).await?;
    let sweep_id = printable(&out.sweep_id);
    println!(
        "submitted {sweep_id}: {} trials ({} cells x {} seeds), {} new",
        out.total_trials,
        spec.cell_count(),
        spec.seeds.len(),
        out.added_trials
    );
    println!("{sweep_id}");
    Ok(())
}

pub(crate) async fn submit_spec(spec: &GridSpec, url: &str) -> anyhow::Result<pb::SubmitResponse> {
    let mut client = connect(url).await?;
    let resp = client.submit(pb::SubmitRequest { spec: Some(spec.into()) }).await.map_err(rpc)?;
    Ok(resp.into_inner())
}

fn print_cells(spec: &GridSpec) {
    let trials = spec.expand();
    let mut cells: Vec<String> = Vec::new();
    for t in &trials {
        let label = t.cell.label(spec.schema());
        if cells.last() != Some(&label) {
            cells.push(label);
        }
    }
    for c in &cells {
        println!("{c}");
    }
    let seeds: Vec<String> = spec.seeds.iter().map(std::string::ToString::to_string).collect();
    println!(
        "{} cells x {} seeds [{}] = {} trials (dry run: nothing stored)",
        cells.len(),
        spec.seeds.len(),
        seeds.join(", "),
        trials.len()
    );
}

/// A sweep's state in a word: cancelled, finished or active.
pub(crate) fn sweep_state(s: &pb::SweepStatus) -> &'static str {
    if s.cancelled {
        "cancelled"
    } else if s.finished {
        "finished"
    } else {
        "active"
    }
}

pub(crate) async fn status(sweep: Option<&str>, url: &str) -> Result<(), Failure> {
    let mut client = connect(url).await?;
    let resp = client
        .status(pb::StatusRequest { sweep_id: sweep.unwrap_or_default().to_owned() })
        .await
        .map_err(rpc)?
        .into_inner();
    if resp.sweeps.is_empty() {
        println!("no sweeps");
        return Ok(());
    }
    let mut table = crate::tables::condensed(&[
        "sweep",
        "queued",
        "running",
        "succeeded",
        "diverged",
        "failed",
        "cancelled",
        "state",
    ]);
    for s in &resp.sweeps {
        let c = s.counts.unwrap_or_default();
        let state = sweep_state(s);
        table.add_row([
            printable(&s.sweep_id).into_owned(),
            c.queued.to_string(),
            c.running.to_string(),
            c.succeeded.to_string(),
            c.diverged.to_string(),
            c.failed.to_string(),
            c.cancelled.to_string(),
            state.to_string(),
        ]);
    }
    println!("{table}");
    for s in &resp.sweeps {
        for r in &s.running {
            println!(
                "  {} running {} (trial {}) on {} (attempt {}, epoch {}/{}, step {}{})",
                printable(&s.sweep_id),
                printable(&r.label),
                printable(r.trial_id.get(..8).unwrap_or(&r.trial_id)),
                printable(&r.worker_id),
                r.attempt,
                r.epoch,
                r.epochs,
                r.step,
                r.last_loss.map(|l| format!(", loss {l:.4}")).unwrap_or_default()
            );
        }
    }
    for s in &resp.sweeps {
        let Some(plan) = s.adaptive.clone() else { continue };
        let plan = sweep_core::adaptive::SeedPlan::from(plan);
        let strata = s
            .strata
            .iter()
            .cloned()
            .map(sweep_core::adaptive::Stratum::try_from)
            .collect::<Result<Vec<_>, _>>()
            .context("the coordinator's status")?;
        let mut table = crate::seed_plan::table(&plan, &strata, sweep_core::schema());
        table.title = format!("{}: {}", s.sweep_id, table.title);
        for cell in table.rows.iter_mut().flatten().chain(std::iter::once(&mut table.title)) {
            if let std::borrow::Cow::Owned(o) = printable(cell) {
                *cell = o;
            }
        }
        println!("\n{}", crate::tables::render(&[table], &[], crate::Format::Table).trim_end());
    }
    Ok(())
}

/// `sweep ls`: the sweeps, newest first, with counts and age.
pub(crate) async fn ls(url: &str) -> Result<(), Failure> {
    let mut client = connect(url).await?;
    let mut sweeps = client.status(pb::StatusRequest::default()).await.map_err(rpc)?.into_inner().sweeps;
    if sweeps.is_empty() {
        println!("no sweeps (submit one: sweep submit GRID.toml)");
        return Ok(());
    }
    // Newest first.
    sweeps.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.sweep_id.cmp(&b.sweep_id)));
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut t =
        crate::tables::condensed(&["sweep", "trials", "done", "running", "queued", "diverged/failed", "state", "age"]);
    for s in &sweeps {
        let c = s.counts.unwrap_or_default();
        let total = c.queued + c.running + c.succeeded + c.diverged + c.failed + c.cancelled;
        let done = c.succeeded + c.diverged + c.failed;
        let state = sweep_state(s);
        t.add_row([
            printable(&s.sweep_id).into_owned(),
            total.to_string(),
            format!("{done} ({:.0}%)", 100.0 * done as f64 / total.max(1) as f64),
            c.running.to_string(),
            c.queued.to_string(),
            format!("{}/{}", c.diverged, c.failed),
            state.to_owned(),
            crate::tables::age((now - s.created_ms).max(0) as u64),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub(crate) async fn cancel(sweep: &str, url: &str) -> Result<(), Failure> {
    let mut client = connect(url).await?;
    let resp = client.cancel(pb::CancelRequest { sweep_id: sweep.to_owned() }).await.map_err(rpc)?.into_inner();
    println!("cancelled {} trials of {} (submit the grid again to resume)", resp.cancelled, printable(sweep));
    Ok(())
}
