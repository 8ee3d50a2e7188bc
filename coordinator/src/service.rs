//! The gRPC services over a [`Store`]: `SweepService` for clients and
//! `WorkerService` for workers. Handlers validate wire input (via
//! [`crate::convert`]), call the store, and map errors through
//! [`crate::error`]. Nothing here blocks: the store is async and the only
//! waiting is on channels and timers.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use sweep_core::GridSpec;
use sweep_proto::v1 as pb;

use crate::auth::Caller;
use crate::bounds;
use crate::error::Refusal;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::store::{self, FinalOutcome, HeartbeatVerdict, LeaseOwner, Leaser, MetricRow, PointBatch, Progress, Store};

/// Coordinator settings. Every field says why it has the value it has.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How long a lease lives without a heartbeat. A worker that dies (SIGKILL,
    /// lost node) has its trial re-queued this long after its last heartbeat:
    /// short enough not to strand work, long enough to ride out a GC pause or
    /// a network blip.
    pub lease_ttl: Duration,
    /// How often workers are told to heartbeat: a sixth of the TTL, so
    /// several lost heartbeats in a row do not cost a lease, and often enough
    /// that `sweep watch` shows fresh progress.
    pub heartbeat_interval: Duration,
    /// How often the reaper looks for expired leases. The reaper runs on a
    /// timer (not only when someone asks for work), so status is never stale.
    pub reap_interval: Duration,
    /// Longest a `Lease` call waits for work before answering "nothing". Long
    /// polling makes an idle worker cost one call per wait, not a busy loop.
    pub max_lease_wait: Duration,
    /// Most points accepted in one metric batch; larger batches are refused so
    /// a misbehaving worker cannot make one transaction arbitrarily large.
    pub max_points_per_batch: usize,
    /// Most metric points accepted per second on one metric stream (with a
    /// burst of one full batch). A runaway trial gets `ResourceExhausted`
    /// and backs off instead of starving every other trial's writes.
    pub max_points_per_sec: f64,
    /// Trials a worker may fail in a row before its lease calls are refused
    /// (quarantine): a broken node (bad driver, full disk) would otherwise
    /// burn through every trial's attempts. Counted per worker identity and
    /// worker ID in the store, so a coordinator restart forgives nobody.
    pub quarantine_after: u32,
    /// The Prometheus metrics the services update (shared with
    /// `metrics::serve_metrics` when `--metrics-listen` serves them).
    pub metrics: Arc<Metrics>,
    /// The workers heard from (`sweep workers`; shared with the metrics).
    pub fleet: Arc<Fleet>,
}

impl CoordinatorConfig {
    /// Whether a worker that failed `failed` trials in a row is quarantined.
    pub fn quarantined(&self, failed: u32) -> bool {
        failed >= self.quarantine_after
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            reap_interval: Duration::from_secs(1),
            max_lease_wait: Duration::from_secs(20),
            max_points_per_batch: 10_000,
            max_points_per_sec: 20_000.0,
            quarantine_after: 5,
            metrics: Arc::default(),
            fleet: Arc::default(),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Shared state of both services.
#[derive(Clone)]
pub struct Coordinator {
    store: Arc<dyn Store>,
    config: CoordinatorConfig,
    /// Bumped whenever trials may have become leasable (submit, re-queue).
    queue: Arc<watch::Sender<u64>>,
    /// Bumped on every state change, for `Watch` streams.
    changes: Arc<watch::Sender<u64>>,
}

impl Coordinator {
    pub fn new(store: Arc<dyn Store>, config: CoordinatorConfig) -> Self {
        Self { store, config, queue: Arc::new(watch::channel(0).0), changes: Arc::new(watch::channel(0).0) }
    }

    /// A lease as the wire carries it (`LeaseResponse.assignment`, each of
    /// `fused`).
    fn assignment(&self, lease: store::Lease) -> pb::Assignment {
        pb::Assignment {
            spec: Some((&lease.spec).into()),
            trial_id: lease.trial_id,
            lease_id: lease.lease_id,
            sweep_id: lease.sweep_id,
            attempt: lease.attempt,
            lease_ttl_ms: self.config.lease_ttl.as_millis() as u32,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
            store_id: self.store.store_id().to_owned(),
            resume_step: lease.resume_step,
            keep_weights: lease.keep_weights,
        }
    }

    /// Who holds `lease`, refusing a caller with another identity
    /// (`PERMISSION_DENIED`). `None`: the lease is not current (the store
    /// call that follows answers for it). Without authentication every
    /// identity is empty and every caller passes.
    async fn holder_check(&self, caller: &str, lease: &str) -> Result<Option<LeaseOwner>, Status> {
        let owner = self.store.lease_owner(lease).await?;
        if let Some(o) = &owner {
            if !caller.is_empty() && !o.holder.is_empty() && o.holder != caller {
                tracing::warn!(lease = %lease, trial = %o.trial_id, caller = %caller, holder = %o.holder, "call refused: the lease belongs to another worker identity");
                return Err(Refusal::NotLeaseHolder { lease: lease.to_owned() }.into());
            }
        }
        Ok(owner)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Wakes workers waiting for work and every `Watch` stream.
    pub(crate) fn queue_changed(&self) {
        self.queue.send_modify(|v| *v += 1);
        self.changed();
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// One pass of the reaper: expire overdue leases and wake waiting workers.
    pub async fn reap_once(&self) -> Result<u64, store::StoreError> {
        let n = self.store.reap_expired(now_ms()).await?;
        self.config.metrics.expired(n);
        if n > 0 {
            tracing::warn!(trials = n, "leases expired; trials re-queued or failed");
            self.queue_changed();
        }
        Ok(n)
    }

    /// Runs the reaper until the returned task is aborted.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.config.reap_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.reap_once().await {
                    tracing::error!(error = %e, "reaper failed; will retry");
                }
            }
        })
    }
}

use bounds::{lease_id as lease_id_arg, sweep_id as sweep_id_arg};

fn status_to_pb(s: store::SweepStatus) -> pb::SweepStatus {
    let c = s.counts;
    pb::SweepStatus {
        counts: Some(pb::StateCounts {
            queued: c.queued,
            running: c.running,
            succeeded: c.succeeded,
            diverged: c.diverged,
            failed: c.failed,
            cancelled: c.cancelled,
        }),
        running: s.running.into_iter().map(|r| running_to_pb(&s.sweep_id, r)).collect(),
        finished: c.finished(),
        cancelled: s.cancelled,
        adaptive: None,
        strata: Vec::new(),
        created_ms: s.created_ms,
        sweep_id: s.sweep_id,
    }
}

fn running_to_pb(sweep_id: &str, r: store::RunningTrial) -> pb::RunningTrial {
    pb::RunningTrial {
        label: r.spec.label(),
        epochs: r.spec.schema().epochs_of(&r.spec),
        trial_id: r.trial_id,
        worker_id: r.worker_id,
        attempt: r.attempt,
        epoch: r.progress.epoch,
        step: r.progress.step,
        last_loss: r.progress.loss,
        sweep_id: sweep_id.to_owned(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::sweep_service_server::SweepService for Coordinator {
    async fn submit(&self, req: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        let _timer = self.config.metrics.time("Submit");
        let spec = req.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let spec = GridSpec::try_from(spec)?;
        let out = self.store.submit(&spec, now_ms()).await?;
        tracing::info!(sweep = %out.sweep_id, total_trials = out.total_trials, added_trials = out.added_trials, "sweep submitted");
        self.queue_changed();
        Ok(Response::new(pb::SubmitResponse {
            sweep_id: out.sweep_id,
            total_trials: out.total_trials,
            added_trials: out.added_trials,
        }))
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let _timer = self.config.metrics.time("Status");
        let id = req.into_inner().sweep_id;
        let filter = if id.is_empty() { None } else { Some(sweep_id_arg(&id)?) };
        let mut sweeps: Vec<pb::SweepStatus> = self.store.status(filter).await?.into_iter().map(status_to_pb).collect();
        // One named sweep: with its strata, if it has a seed plan (they
        // cost a read of all its trials, so not for every sweep at once,
        // nor in every Watch snapshot).
        if let (Some(id), [one]) = (filter, sweeps.as_mut_slice()) {
            if let Some(s) = self.store.strata(id).await? {
                one.adaptive = Some((&s.plan).into());
                one.strata = s.strata.iter().map(Into::into).collect();
            }
        }
        Ok(Response::new(pb::StatusResponse { sweeps }))
    }

    type WatchStream = BoxStream<pb::SweepStatus>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let _timer = self.config.metrics.time("Watch");
        let id = sweep_id_arg(&req.into_inner().sweep_id)?.to_owned();
        // Fail fast on an unknown sweep, before the stream starts.
        self.store.status(Some(&id)).await?;
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let mut changes = self.changes.subscribe();
        tokio::spawn(async move {
            loop {
                changes.borrow_and_update();
                let snapshot = match store.status(Some(&id)).await {
                    Ok(mut v) if !v.is_empty() => status_to_pb(v.remove(0)),
                    Ok(_) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                };
                let finished = snapshot.finished;
                // A failed send means the client is gone.
                if tx.send(Ok(snapshot)).await.is_err() || finished {
                    break;
                }
                // Wake on a change, or every two seconds for progress; never
                // more than five times a second.
                let _ = tokio::time::timeout(Duration::from_secs(2), changes.changed()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<pb::LogsResponse>, Status> {
        let _timer = self.config.metrics.time("Logs");
        let (trial_id, logs) = self.store.logs(&req.into_inner().trial_id).await?;
        let attempts = logs
            .into_iter()
            .map(|l| pb::AttemptLog {
                attempt: l.attempt.clamp(0, i64::from(u32::MAX)) as u32,
                worker_id: l.worker_id,
                updated_ms: l.updated_ms,
                text: l.text,
            })
            .collect();
        Ok(Response::new(pb::LogsResponse { trial_id, attempts }))
    }

    async fn workers(&self, _req: Request<pb::WorkersRequest>) -> Result<Response<pb::WorkersResponse>, Status> {
        let _timer = self.config.metrics.time("Workers");
        let members = self.config.fleet.recent(2 * self.config.lease_ttl);
        let mut running: std::collections::HashMap<String, Vec<pb::RunningTrial>> = Default::default();
        if !members.is_empty() {
            for s in self.store.status(None).await? {
                for r in s.running {
                    running.entry(r.worker_id.clone()).or_default().push(running_to_pb(&s.sweep_id, r));
                }
            }
        }
        let mut workers = Vec::with_capacity(members.len());
        for m in members {
            let failed = self.store.failures_in_a_row(&m.holder, &m.worker_id).await?;
            workers.push(pb::WorkerInfo {
                running: running.remove(&m.worker_id).unwrap_or_default(),
                last_call_ms_ago: m.last_call.elapsed().as_millis() as u64,
                failures_in_a_row: failed,
                quarantined: self.config.quarantined(failed),
                worker_id: m.worker_id,
                device: m.device,
                threads: m.threads,
                slots: m.slots,
            });
        }
        Ok(Response::new(pb::WorkersResponse { workers, quarantine_after: self.config.quarantine_after }))
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let _timer = self.config.metrics.time("Cancel");
        let id = sweep_id_arg(&req.into_inner().sweep_id)?.to_owned();
        let n = self.store.cancel(&id, now_ms()).await?;
        tracing::info!(sweep = %id, trials = n, "sweep cancelled");
        self.changed();
        Ok(Response::new(pb::CancelResponse { cancelled: n }))
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Coordinator {
    async fn lease(&self, req: Request<pb::LeaseRequest>) -> Result<Response<pb::LeaseResponse>, Status> {
        let _timer = self.config.metrics.time("Lease");
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let worker_id = bounds::worker_id(&req.worker_id)?;
        let device = bounds::device(&req.device)?;
        let max_trials = bounds::max_trials(req.max_trials)?;
        self.config.fleet.asked(worker_id, &caller, device, req.threads, max_trials);
        let wait = Duration::from_millis(req.wait_ms as u64).min(self.config.max_lease_wait);
        let deadline = tokio::time::Instant::now() + wait;
        let mut queue = self.queue.subscribe();
        let ttl = self.config.lease_ttl.as_millis() as i64;
        // The store leases nothing to a quarantined worker; only an empty
        // answer asks why, so a working worker's lease is one statement.
        let who = Leaser {
            worker_id,
            holder: &caller,
            device,
            threads: req.threads,
            quarantine_after: Some(self.config.quarantine_after),
        };
        loop {
            queue.borrow_and_update();
            let leases = self.store.lease_group(who, max_trials, now_ms(), ttl).await?;
            if leases.is_empty() {
                let failed = self.store.failures_in_a_row(&caller, worker_id).await?;
                if self.config.quarantined(failed) {
                    tracing::error!(worker = %worker_id, failed_in_a_row = failed, "lease refused: worker is quarantined (crash loop)");
                    return Err(Refusal::Quarantined {
                        worker_id: worker_id.to_owned(),
                        failed,
                        limit: self.config.quarantine_after,
                    }
                    .into());
                }
            } else {
                self.config.metrics.leased(leases.len() as u64);
                self.config.fleet.heard(worker_id);
                for lease in &leases {
                    tracing::info!(trial = %lease.trial_id, worker = %worker_id, attempt = lease.attempt, resume_step = ?lease.resume_step, "trial leased");
                }
                self.changed();
                let mut assignments = leases.into_iter().map(|l| self.assignment(l));
                return Ok(Response::new(pb::LeaseResponse {
                    assignment: assignments.next(),
                    fused: assignments.collect(),
                }));
            }
            match tokio::time::timeout_at(deadline, queue.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    self.config.fleet.heard(worker_id);
                    return Ok(Response::new(pb::LeaseResponse::default()));
                }
            }
        }
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let _timer = self.config.metrics.time("Heartbeat");
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let lease = lease_id_arg(&req.lease_id)?;
        if let Some(owner) = self.holder_check(&caller, lease).await? {
            self.config.fleet.heard(&owner.worker_id);
        }
        let progress = Progress { epoch: req.epoch, step: req.step, loss: req.last_loss.filter(|l| l.is_finite()) };
        let verdict = self.store.heartbeat(lease, progress, now_ms(), self.config.lease_ttl.as_millis() as i64).await?;
        self.changed();
        let directive = match verdict {
            HeartbeatVerdict::Continue => pb::Directive::Continue,
            HeartbeatVerdict::Cancel => pb::Directive::Cancel,
            HeartbeatVerdict::LeaseLost => pb::Directive::LeaseLost,
        };
        Ok(Response::new(pb::HeartbeatResponse { directive: directive as i32 }))
    }

    type PushMetricsStream = BoxStream<pb::MetricAck>;

    async fn push_metrics(
        &self,
        req: Request<Streaming<pb::MetricBatch>>,
    ) -> Result<Response<Self::PushMetricsStream>, Status> {
        let _timer = self.config.metrics.time("PushMetrics");
        let caller = Caller::of(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        let this = self.clone();
        let max = self.config.max_points_per_batch;
        let mut bucket = TokenBucket::new(self.config.max_points_per_sec, max as f64);
        tokio::spawn(async move {
            // The lease whose holder was last checked: a stream carries one
            // lease's batches, so the check runs once, not per batch.
            let mut checked: Option<String> = None;
            while let Some(batch) = inbound.next().await {
                // An error here is a worker that went away mid-stream (that
                // harms nothing: every acknowledged batch is committed) or a
                // batch that could not be decoded, e.g. one over the size
                // cap: say so, so the worker does not take it for success.
                let batch = match batch {
                    Ok(b) => b,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let result = match validate_batch(&batch, max) {
                    Ok(_) if !bucket.take(batch.points.len() as f64) => Err(Status::resource_exhausted(format!(
                        "metric rate limit: more than {} points per second on one stream; back off",
                        bucket.rate
                    ))),
                    Ok(points) => match lease_id_arg(&batch.lease_id) {
                        Ok(lease) => {
                            let allowed = if checked.as_deref() == Some(lease) {
                                Ok(())
                            } else {
                                this.holder_check(&caller, lease).await.map(|owner| {
                                    if owner.is_some() {
                                        checked = Some(lease.to_owned());
                                    }
                                })
                            };
                            match allowed {
                                Ok(()) => store
                                    .put_batch(lease, &points, batch.truncate_after, batch.checkpoint_step)
                                    .await
                                    .map_err(Status::from),
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                if let Ok(stored) = result {
                    this.config.metrics.points(stored);
                }
                let reply = result.map(|stored| pb::MetricAck { seq: batch.seq, stored });
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn complete(&self, req: Request<pb::CompleteRequest>) -> Result<Response<pb::CompleteResponse>, Status> {
        let _timer = self.config.metrics.time("Complete");
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let lease = lease_id_arg(&req.lease_id)?;
        let worker_id = bounds::optional_worker_id(&req.worker_id)?;
        let outcome = match pb::Outcome::try_from(req.outcome) {
            Ok(pb::Outcome::Succeeded) => FinalOutcome::Succeeded,
            Ok(pb::Outcome::Diverged) => FinalOutcome::Diverged,
            _ => return Err(Status::invalid_argument("outcome: must be SUCCEEDED or DIVERGED")),
        };
        let summary = bounds::summary(&req.summary.unwrap_or_default(), outcome == FinalOutcome::Diverged)?;
        let last = req.last_batch.unwrap_or_default();
        if !last.lease_id.is_empty() && last.lease_id != req.lease_id {
            return Err(Status::invalid_argument("last_batch.lease_id: must be empty or the request's lease_id"));
        }
        let points = validate_batch(&last, self.config.max_points_per_batch)?;
        // Without authentication every caller passes the holder check, and
        // the store reads the holder with the result: no separate read.
        let checked = if caller.is_empty() { None } else { self.holder_check(&caller, lease).await? };
        let provenance = req.provenance.as_ref().map(bounds::provenance).transpose()?;
        let batch =
            PointBatch { points: &points, truncate_after: last.truncate_after, checkpoint_step: last.checkpoint_step };
        let done = self.store.complete_with(lease, outcome, &summary, batch, provenance.as_ref(), now_ms()).await?;
        self.config.metrics.points(done.stored);
        self.config.metrics.finished(outcome.as_str());
        // A worker's quarantine count starts again from zero (only read
        // when it is not zero already; a retried call whose lease is no
        // longer current clears by the caller's identity).
        let (holder, worker, failed) = done
            .owner
            .or(checked)
            .map_or((caller, worker_id.to_owned(), 1), |o| (o.holder, o.worker_id, o.failures_in_a_row));
        if !worker.is_empty() && failed > 0 {
            self.store.clear_failures(&holder, &worker).await?;
        }
        if done.added > 0 {
            self.queue_changed();
        } else {
            self.changed();
        }
        Ok(Response::new(pb::CompleteResponse {}))
    }

    async fn fail(&self, req: Request<pb::FailRequest>) -> Result<Response<pb::FailResponse>, Status> {
        let _timer = self.config.metrics.time("Fail");
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let lease = lease_id_arg(&req.lease_id)?;
        let worker_id = bounds::optional_worker_id(&req.worker_id)?;
        let reason = bounds::reason(&req.reason);
        let owner = self.holder_check(&caller, lease).await?;
        let requeued = self.store.fail(lease, &reason, now_ms()).await?;
        if !requeued {
            self.config.metrics.finished("failed");
        }
        // Counted against the worker that took the lease (as recorded then),
        // not the self-declared ID of this call.
        let (holder, worker) = owner.map_or((caller, worker_id.to_owned()), |o| (o.holder, o.worker_id));
        let in_a_row =
            if worker.is_empty() { 0 } else { self.store.record_failure(&holder, &worker, now_ms()).await? };
        tracing::warn!(lease = %lease, worker = %worker, requeued, reason = %reason, "trial failed");
        if in_a_row == self.config.quarantine_after {
            tracing::error!(worker = %worker, failed_in_a_row = in_a_row, "worker quarantined: it failed too many trials in a row (crash loop); its lease calls are refused, also after a coordinator restart");
        }
        // A trial that failed for good may have added a seed to its stratum
        // (adaptive seeds): wake waiting workers either way.
        self.queue_changed();
        Ok(Response::new(pb::FailResponse { requeued }))
    }

    async fn push_log(&self, req: Request<pb::PushLogRequest>) -> Result<Response<pb::PushLogResponse>, Status> {
        let _timer = self.config.metrics.time("PushLog");
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let lease = lease_id_arg(&req.lease_id)?;
        bounds::log_text(&req.text)?;
        self.holder_check(&caller, lease).await?;
        self.store.save_log(lease, &req.text, now_ms()).await?;
        Ok(Response::new(pb::PushLogResponse {}))
    }

    async fn release(&self, req: Request<pb::ReleaseRequest>) -> Result<Response<pb::ReleaseResponse>, Status> {
        let _timer = self.config.metrics.time("Release");
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let lease = lease_id_arg(&req.lease_id)?;
        let reason = bounds::reason(&req.reason);
        self.holder_check(&caller, lease).await?;
        self.store.release(lease, &reason).await?;
        self.config.metrics.released();
        tracing::info!(lease = %lease, reason = %reason, "trial handed back (no attempt used)");
        self.queue_changed();
        Ok(Response::new(pb::ReleaseResponse {}))
    }
}

/// Points-per-second limiter for one metric stream.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(rate).max(1.0);
        Self { rate, burst, tokens: burst, last: tokio::time::Instant::now() }
    }

    fn take(&mut self, n: f64) -> bool {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Checks a metric batch before anything is written: bounded size, and
/// every point, truncation and checkpoint step within [`bounds`].
pub fn validate_batch(batch: &pb::MetricBatch, max: usize) -> Result<Vec<MetricRow>, Status> {
    if batch.points.len() > max {
        return Err(Status::invalid_argument(format!(
            "points: {} in one batch, at most {max} allowed",
            batch.points.len()
        )));
    }
    if let Some(t) = batch.truncate_after {
        bounds::step("truncate_after", t)?;
    }
    if let Some(c) = batch.checkpoint_step {
        bounds::step("checkpoint_step", c)?;
    }
    batch.points.iter().enumerate().map(|(i, p)| bounds::metric_point(i, &p.name, p.step, p.epoch, p.value)).collect()
}
