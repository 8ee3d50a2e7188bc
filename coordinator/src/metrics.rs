//! The coordinator's Prometheus metrics (`sweep serve --metrics-listen`):
//! counters kept as the gRPC services work, gauges read from the store when
//! scraped, and the small HTTP server (`GET /metrics`, the text exposition
//! format) that serves them. Built on `prometheus-client`; no metric text is
//! written by hand.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sweep_trials` | gauge (at scrape) | `sweep`, `state` |
//! | `sweep_workers_connected` | gauge: workers heard from (lease or heartbeat) within two lease TTLs | |
//! | `sweep_leases_granted_total`, `_released_total`, `_expired_total` | counters | |
//! | `sweep_trials_finished_total` | counter | `outcome` (succeeded, diverged, failed) |
//! | `sweep_metric_points_total` | counter: points stored | |
//! | `sweep_rpc_duration_seconds` | histogram | `method` |

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::fleet::Fleet;
use crate::store::{Store, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrialsLabel {
    sweep: String,
    state: &'static str,
}

type RpcHistograms = Family<MethodLabel, Histogram, fn() -> Histogram>;

/// RPC latency buckets: 0.25 ms to about 33 s (a long-polling `Lease`
/// waits up to 20 s for work).
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 18))
}

/// Every metric of one coordinator.
pub struct Metrics {
    registry: Registry,
    leases_granted: Counter,
    leases_released: Counter,
    leases_expired: Counter,
    finished: Family<OutcomeLabel, Counter>,
    points: Counter,
    rpc: RpcHistograms,
    trials: Family<TrialsLabel, Gauge>,
    workers: Gauge,
    /// One scrape at a time: a scrape clears and refills the trial gauges.
    scrape: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            leases_granted: Counter::default(),
            leases_released: Counter::default(),
            leases_expired: Counter::default(),
            finished: Family::default(),
            points: Counter::default(),
            rpc: Family::new_with_constructor(rpc_histogram),
            trials: Family::default(),
            workers: Gauge::default(),
            scrape: tokio::sync::Mutex::default(),
            registry: Registry::default(),
        };
        registry.register("sweep_trials", "Trials per sweep and state", m.trials.clone());
        registry.register(
            "sweep_workers_connected",
            "Workers heard from (a lease call or heartbeat) within two lease TTLs",
            m.workers.clone(),
        );
        registry.register("sweep_leases_granted", "Trials leased to workers", m.leases_granted.clone());
        registry.register(
            "sweep_leases_released",
            "Trials handed back by their workers (preemption; no attempt used)",
            m.leases_released.clone(),
        );
        registry.register(
            "sweep_leases_expired",
            "Leases the reaper expired (a worker stopped heartbeating)",
            m.leases_expired.clone(),
        );
        registry.register("sweep_trials_finished", "Trials that ended, by outcome", m.finished.clone());
        registry.register("sweep_metric_points", "Metric points stored (re-sent points not counted)", m.points.clone());
        registry.register("sweep_rpc_duration_seconds", "gRPC calls served, by method", m.rpc.clone());
        Metrics { registry, ..m }
    }
}

/// Records an RPC's duration when dropped (however the call ends).
pub struct RpcTimer<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    start: Instant,
}

impl Drop for RpcTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .rpc
            .get_or_create(&MethodLabel { method: self.method })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Times one call of `method` until the returned guard drops.
    pub fn time(&self, method: &'static str) -> RpcTimer<'_> {
        RpcTimer { metrics: self, method, start: Instant::now() }
    }

    pub fn leased(&self, n: u64) {
        self.leases_granted.inc_by(n);
    }

    pub fn released(&self) {
        self.leases_released.inc();
    }

    pub fn expired(&self, n: u64) {
        self.leases_expired.inc_by(n);
    }

    /// A trial ended: `succeeded`, `diverged` or `failed`.
    pub fn finished(&self, outcome: &'static str) {
        self.finished.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn points(&self, n: u64) {
        self.points.inc_by(n);
    }

    /// The exposition text, with the gauges read now: trial counts from
    /// `store`, and the workers of `fleet` heard from within `2 * lease_ttl`.
    pub async fn render(&self, store: &dyn Store, fleet: &Fleet, lease_ttl: Duration) -> Result<String, StoreError> {
        let _one_at_a_time = self.scrape.lock().await;
        let sweeps = store.status(None).await?;
        self.trials.clear();
        for s in &sweeps {
            let c = s.counts;
            for (state, n) in [
                ("queued", c.queued),
                ("running", c.running),
                ("succeeded", c.succeeded),
                ("diverged", c.diverged),
                ("failed", c.failed),
                ("cancelled", c.cancelled),
            ] {
                self.trials.get_or_create(&TrialsLabel { sweep: s.sweep_id.clone(), state }).set(n as i64);
            }
        }
        self.workers.set(fleet.recent(2 * lease_ttl).len() as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| StoreError::Corrupt(format!("encoding the metrics: {e}")))?;
        Ok(text)
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    fleet: Arc<Fleet>,
    store: Arc<dyn Store>,
    lease_ttl: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    let scrape = move || {
        let (metrics, fleet, store) = (metrics.clone(), fleet.clone(), store.clone());
        async move {
            match metrics.render(&*store, &fleet, lease_ttl).await {
                Ok(text) => {
                    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                }
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("metrics unavailable: {e}\n"),
                ),
            }
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
