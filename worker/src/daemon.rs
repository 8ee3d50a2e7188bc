//! The worker daemon's network side: lease a trial, run it on the training
//! thread, heartbeat while it runs, upload its metrics (each batch kept until
//! the coordinator acknowledges it was committed), then complete or fail it.
//!
//! The coordinator may go away at any time; every call is retried with
//! capped, jittered exponential backoff, and the gRPC channel reconnects by
//! itself. A worker never touches the database.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use sweep_proto::client::{AuthChannel, ClientSecurity};
use tonic::Code;

use sweep_core::TrialSpec;
use sweep_proto::v1 as pb;
use sweep_proto::v1::worker_service_client::WorkerServiceClient;

use crate::trainer::{
    Metric, StopFlag, StopReason, Summary, TrainContext, TrainError, TrainEvent, TrainOutcome, TrainerFactory, TrialJob,
};

/// Worker settings. Every field says why it exists.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator URL, e.g. `http://127.0.0.1:50051`.
    pub coordinator: String,
    /// Shown in `sweep status` and logs, and recorded on each lease, so an
    /// operator can tell which node ran (or lost) a trial.
    pub worker_id: String,
    /// `cpu` or `cuda:N`; told to the coordinator and used by the trainer.
    pub device: String,
    /// Root of the per-trial checkpoint folders. Put it on storage every
    /// worker sees so a re-leased trial resumes wherever it lands.
    pub checkpoint_root: PathBuf,
    /// How long one `Lease` call may wait for work (long polling).
    pub lease_wait: Duration,
    /// Stop after this many trials (None: run until told to stop).
    pub max_trials: Option<u64>,
    /// Exit once no work has been offered for this long (None: wait forever).
    /// `sweep run` uses it so local workers end with the sweep.
    pub idle_exit: Option<Duration>,
    /// Most metric points per uploaded batch.
    pub batch_points: usize,
    /// Longest a metric point waits before its batch is sent.
    pub batch_delay: Duration,
    /// Token and TLS settings for talking to the coordinator.
    pub security: ClientSecurity,
    /// After SIGTERM/SIGINT, how long the running trial gets to reach its
    /// next step and checkpoint before the worker hands it back anyway and
    /// exits (schedulers send SIGKILL after their own grace period).
    pub grace: Duration,
}

impl WorkerConfig {
    pub fn new(coordinator: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            worker_id: default_worker_id(),
            device: "cpu".into(),
            checkpoint_root: PathBuf::from(".sweep/checkpoints"),
            lease_wait: Duration::from_secs(10),
            max_trials: None,
            idle_exit: None,
            batch_points: 500,
            batch_delay: Duration::from_millis(250),
            security: ClientSecurity::default(),
            grace: Duration::from_secs(30),
        }
    }
}

/// `hostname-pid`: unique per process on a node, readable in logs.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid coordinator URL {url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the training thread could not start: {0}")]
    Trainer(String),
    #[error("coordinator connection: {0}")]
    Client(#[from] sweep_proto::client::ClientError),
    /// The coordinator refused this worker for good (bad token, quarantine).
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
}

/// Capped exponential backoff with jitter, for calls to a coordinator that
/// may be restarting.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { next: Self::MIN }
    }
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
    async fn wait(&mut self) {
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

/// Whether a failed call is worth retrying (the coordinator is away or busy)
/// rather than a verdict about the request.
fn transient(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Internal | Code::Cancelled)
}

type JobMsg = (TrialJob, TrainContext, oneshot::Sender<Result<TrainOutcome, TrainError>>);

/// Starts the training thread: it makes the trainer and then trains the jobs
/// it is sent, one at a time, until the sender is dropped.
fn spawn_training_thread(factory: TrainerFactory) -> Result<std::sync::mpsc::Sender<JobMsg>, WorkerError> {
    let (tx, rx) = std::sync::mpsc::channel::<JobMsg>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let mut trainer = match factory() {
                Ok(t) => {
                    let _ = ready_tx.send(Ok(()));
                    t
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            while let Ok((job, ctx, reply)) = rx.recv() {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.train(&job, &ctx)))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        Err(TrainError::Other(format!("trainer panicked: {msg}")))
                    });
                drop(ctx);
                let _ = reply.send(result);
            }
        })
        .map_err(|e| WorkerError::Trainer(e.to_string()))?;
    ready_rx
        .recv()
        .map_err(|_| WorkerError::Trainer("the training thread died".into()))?
        .map_err(WorkerError::Trainer)?;
    Ok(tx)
}

/// Runs the worker until `shutdown` resolves (or `max_trials`/`idle_exit`
/// says stop). On shutdown a running trial is asked to stop at its next step,
/// checkpoints, and is handed back.
pub async fn run(
    config: WorkerConfig,
    factory: TrainerFactory,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let endpoint = config
        .security
        .endpoint(&config.coordinator)?
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect_lazy();
    let client = WorkerServiceClient::with_interceptor(channel, config.security.interceptor()?)
        .max_decoding_message_size(16 * 1024 * 1024);
    let trainer = spawn_training_thread(factory)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    tracing::info!(worker = %config.worker_id, coordinator = %config.coordinator, device = %config.device, "worker started");
    let mut done = 0u64;
    let mut backoff = Backoff::new();
    let mut idle_since = Instant::now();
    let mut unreachable_logged = false;
    loop {
        if *stop_rx.borrow() {
            break;
        }
        if config.max_trials.is_some_and(|m| done >= m) {
            break;
        }
        if config.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
            tracing::info!("no work offered for {:?}; exiting", config.idle_exit.unwrap_or_default());
            break;
        }
        let wait = match config.idle_exit {
            Some(d) => config.lease_wait.min(d.saturating_sub(idle_since.elapsed())).max(Duration::from_millis(50)),
            None => config.lease_wait,
        };
        let req = pb::LeaseRequest {
            worker_id: config.worker_id.clone(),
            device: config.device.clone(),
            wait_ms: wait.as_millis() as u32,
            ..Default::default()
        };
        let mut stop_wait = stop_rx.clone();
        let mut lease_client = client.clone();
        let answer = tokio::select! {
            r = lease_client.lease(req) => r,
            _ = stop_wait.wait_for(|s| *s) => break,
        };
        match answer {
            Ok(resp) => {
                if unreachable_logged {
                    tracing::info!("coordinator reachable again");
                    unreachable_logged = false;
                }
                backoff.reset();
                let Some(assignment) = resp.into_inner().assignment else { continue };
                let exit_now = run_trial(&config, &client, &trainer, assignment, stop_rx.clone()).await;
                done += 1;
                idle_since = Instant::now();
                if exit_now {
                    break;
                }
            }
            Err(status)
                if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition) =>
            {
                tracing::error!(code = ?status.code(), message = %status.message(), "the coordinator refused this worker");
                return Err(WorkerError::Refused(status.message().to_owned()));
            }
            Err(status) => {
                if !unreachable_logged {
                    tracing::warn!(code = ?status.code(), message = %status.message(), "lease call failed; retrying with backoff");
                    unreachable_logged = true;
                }
                backoff.wait().await;
            }
        }
    }
    tracing::info!(worker = %config.worker_id, trials = done, "worker stopped");
    Ok(())
}

type Client = WorkerServiceClient<AuthChannel>;

/// Runs one leased trial to its end, whatever that end is. Never returns an
/// error: every failure is reported to the coordinator (or, if the
/// coordinator is gone, left to the lease to expire). Returns true when the
/// worker must exit at once (the shutdown grace period ran out).
async fn run_trial(
    config: &WorkerConfig,
    client: &Client,
    trainer: &std::sync::mpsc::Sender<JobMsg>,
    a: pb::Assignment,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    let lease = a.lease_id.clone();
    let spec = match a.spec.clone().map(TrialSpec::try_from) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            fail(client, config, &lease, &format!("invalid trial spec: {e}")).await;
            return false;
        }
        None => {
            fail(client, config, &lease, "invalid trial spec: missing").await;
            return false;
        }
    };
    tracing::info!(trial = %a.trial_id, attempt = a.attempt, spec = %spec.label(), "trial started");
    let job = TrialJob {
        trial_id: a.trial_id.clone(),
        spec,
        attempt: a.attempt,
        checkpoint_dir: config.checkpoint_root.join(&a.trial_id),
    };
    let stop = StopFlag::new();
    let (events_tx, events_rx) = mpsc::channel(1024);
    let (reply_tx, reply_rx) = oneshot::channel();
    if trainer.send((job, TrainContext::new(events_tx, stop.clone()), reply_tx)).is_err() {
        fail(client, config, &lease, "the training thread is gone").await;
        return false;
    }
    let progress = Arc::new(Mutex::new(pb::HeartbeatRequest { lease_id: lease.clone(), ..Default::default() }));
    let heartbeat_every = Duration::from_millis(a.heartbeat_interval_ms.max(100) as u64);
    let heartbeat = tokio::spawn(heartbeats(client.clone(), progress.clone(), stop.clone(), heartbeat_every));
    let uploader = Uploader {
        client: client.clone(),
        lease: lease.clone(),
        stop: stop.clone(),
        progress,
        batch_points: config.batch_points,
        batch_delay: config.batch_delay,
    };
    let upload = tokio::spawn(uploader.run(events_rx));
    // Ask the trainer to stop if the worker is shut down mid-trial, and give
    // it `grace` to checkpoint.
    let mut reply_rx = reply_rx;
    let result = tokio::select! {
        r = &mut reply_rx => r,
        _ = shutdown.wait_for(|s| *s) => {
            tracing::info!(grace = ?config.grace, "shutdown requested: stopping the trial at its next step");
            stop.stop(StopReason::Shutdown);
            match tokio::time::timeout(config.grace, &mut reply_rx).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("the trial did not stop within the grace period; handing it back from its last checkpoint");
                    heartbeat.abort();
                    upload.abort();
                    release(client, &lease, "worker shut down; grace period ran out").await;
                    return true;
                }
            }
        }
    };
    let result = result.unwrap_or_else(|_| Err(TrainError::Other("the training thread died".into())));
    // Every metric must be acknowledged before the trial is completed.
    let uploaded = upload.await.unwrap_or(false);
    heartbeat.abort();
    let exit_now = *shutdown.borrow();
    match result {
        Ok(TrainOutcome::Succeeded(s)) | Ok(TrainOutcome::Diverged(s)) if !uploaded => {
            let _ = s;
            tracing::warn!(trial = %a.trial_id, "lease lost before the metrics were acknowledged; result dropped");
        }
        Ok(TrainOutcome::Succeeded(s)) => complete(client, config, &lease, pb::Outcome::Succeeded, &s).await,
        Ok(TrainOutcome::Diverged(s)) => {
            tracing::warn!(trial = %a.trial_id, "trial diverged (loss became NaN or infinite)");
            complete(client, config, &lease, pb::Outcome::Diverged, &s).await
        }
        Ok(TrainOutcome::Stopped(StopReason::Shutdown)) => {
            release(client, &lease, "worker shut down (preempted); resumes from its last checkpoint").await;
            return true;
        }
        Ok(TrainOutcome::Stopped(reason)) => {
            tracing::info!(trial = %a.trial_id, ?reason, "trial stopped");
        }
        Err(e) => fail(client, config, &lease, &e.to_string()).await,
    }
    exit_now
}

/// Renews the lease every `every` until aborted; turns the coordinator's
/// directives into stop requests.
async fn heartbeats(
    client: Client,
    progress: Arc<Mutex<pb::HeartbeatRequest>>,
    stop: StopFlag,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let req = progress.lock().map(|p| p.clone()).unwrap_or_default();
        match client.clone().heartbeat(req).await {
            Ok(r) => match pb::Directive::try_from(r.into_inner().directive) {
                Ok(pb::Directive::Cancel) => {
                    tracing::info!("sweep cancelled: stopping the trial");
                    stop.stop(StopReason::Cancelled);
                    return;
                }
                Ok(pb::Directive::LeaseLost) => {
                    tracing::warn!("lease lost (expired and re-queued): abandoning the trial");
                    stop.stop(StopReason::LeaseLost);
                    return;
                }
                _ => {}
            },
            Err(s) => tracing::warn!(code = ?s.code(), message = %s.message(), "heartbeat failed; will retry"),
        }
    }
}

/// Uploads metric events in batches over one `PushMetrics` stream, keeping
/// every batch until it is acknowledged and re-sending the unacknowledged
/// ones on a new stream after an error.
struct Uploader {
    client: Client,
    lease: String,
    stop: StopFlag,
    progress: Arc<Mutex<pb::HeartbeatRequest>>,
    batch_points: usize,
    batch_delay: Duration,
}

/// One open `PushMetrics` call.
struct MetricStream {
    tx: mpsc::Sender<pb::MetricBatch>,
    acks: tonic::Streaming<pb::MetricAck>,
}

impl Uploader {
    async fn open(&self, unacked: &BTreeMap<u64, pb::MetricBatch>) -> Result<MetricStream, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let acks = self.client.clone().push_metrics(ReceiverStream::new(rx)).await?.into_inner();
        for batch in unacked.values() {
            tx.send(batch.clone()).await.map_err(|_| tonic::Status::unavailable("metric stream closed"))?;
        }
        Ok(MetricStream { tx, acks })
    }

    /// Returns true when every metric was acknowledged, false when the lease
    /// was lost (the remaining events are drained and dropped).
    async fn run(self, mut events: mpsc::Receiver<TrainEvent>) -> bool {
        let mut unacked: BTreeMap<u64, pb::MetricBatch> = BTreeMap::new();
        let mut buf: Vec<pb::MetricPoint> = Vec::new();
        let mut seq = 0u64;
        let mut events_open = true;
        let mut stream: Option<MetricStream> = None;
        let mut backoff = Backoff::new();
        let mut tick = tokio::time::interval(self.batch_delay);
        // Flush requests waiting for everything before them to be acknowledged.
        let mut flushes: Vec<crate::trainer::FlushAck> = Vec::new();
        loop {
            if buf.is_empty() && unacked.is_empty() {
                for f in flushes.drain(..) {
                    let _ = f.0.send(());
                }
                if !events_open {
                    return true;
                }
            }
            if stream.is_none() && (!unacked.is_empty() || !buf.is_empty()) {
                match self.open(&unacked).await {
                    Ok(s) => stream = Some(s),
                    Err(s) if s.code() == Code::FailedPrecondition => return self.lost(events).await,
                    Err(s) => {
                        tracing::warn!(code = ?s.code(), "metric stream failed to open; retrying");
                        backoff.wait().await;
                        continue;
                    }
                }
            }
            let flush = tokio::select! {
                ev = events.recv(), if events_open => match ev {
                    Some(TrainEvent::Metric(m)) => { buf.push(point(m)); buf.len() >= self.batch_points }
                    Some(TrainEvent::Flush(ack)) => { flushes.push(ack); true }
                    Some(TrainEvent::Resumed { step }) => {
                        // Its own batch, first in line: re-sent batches
                        // after a reconnect keep this order.
                        seq += 1;
                        let batch = pb::MetricBatch { lease_id: self.lease.clone(), seq, points: Vec::new(), truncate_after: Some(step), checkpoint_step: None };
                        unacked.insert(seq, batch.clone());
                        if let Some(s) = &stream {
                            if s.tx.send(batch).await.is_err() {
                                stream = None;
                            }
                        }
                        false
                    }
                    Some(TrainEvent::Progress { epoch, step, loss }) => {
                        if let Ok(mut p) = self.progress.lock() {
                            p.epoch = epoch;
                            p.step = step;
                            p.last_loss = loss.filter(|l| l.is_finite());
                        }
                        false
                    }
                    None => { events_open = false; true }
                },
                _ = tick.tick() => true,
                ack = async { stream.as_mut().expect("checked").acks.message().await }, if stream.is_some() => {
                    match ack {
                        Ok(Some(a)) => { unacked.remove(&a.seq); backoff.reset(); false }
                        Ok(None) => { stream = None; false }
                        Err(s) if s.code() == Code::FailedPrecondition => return self.lost(events).await,
                        Err(s) => {
                            tracing::warn!(code = ?s.code(), message = %s.message(), "metric stream broke; re-sending unacknowledged batches");
                            stream = None;
                            backoff.wait().await;
                            false
                        }
                    }
                }
            };
            if flush && !buf.is_empty() {
                seq += 1;
                let batch = pb::MetricBatch {
                    lease_id: self.lease.clone(),
                    seq,
                    points: std::mem::take(&mut buf),
                    truncate_after: None,
                    checkpoint_step: None,
                };
                unacked.insert(seq, batch.clone());
                if let Some(s) = &stream {
                    if s.tx.send(batch).await.is_err() {
                        stream = None;
                    }
                }
            }
        }
    }

    async fn lost(&self, mut events: mpsc::Receiver<TrainEvent>) -> bool {
        tracing::warn!("metrics refused: the lease is no longer ours; stopping the trial");
        self.stop.stop(StopReason::LeaseLost);
        while events.recv().await.is_some() {}
        false
    }
}

fn point(m: Metric) -> pb::MetricPoint {
    pb::MetricPoint { step: m.step, name: m.name, value: m.value, epoch: m.epoch }
}

/// Retries a finishing call until it lands, the lease is reported lost, or
/// the request is refused as invalid.
async fn finish<F, Fut>(what: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut backoff = Backoff::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match call().await {
            Ok(()) => return,
            Err(s) if transient(s.code()) && Instant::now() < deadline => {
                tracing::warn!(code = ?s.code(), "{what} failed; retrying");
                backoff.wait().await;
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), message = %s.message(), "{what} refused");
                return;
            }
        }
    }
}

async fn complete(client: &Client, config: &WorkerConfig, lease: &str, outcome: pb::Outcome, s: &Summary) {
    let req = pb::CompleteRequest {
        worker_id: config.worker_id.clone(),
        lease_id: lease.to_owned(),
        outcome: outcome as i32,
        summary: Some(pb::TrialSummary {
            final_train_loss: s.final_train_loss,
            final_test_loss: s.final_test_loss,
            final_test_accuracy: s.final_test_accuracy,
            best_test_accuracy: s.best_test_accuracy,
            wall_seconds: s.wall_seconds,
        }),
    };
    finish("complete", || {
        let mut c = client.clone();
        let req = req.clone();
        async move { c.complete(req).await.map(|_| ()) }
    })
    .await;
    tracing::info!(outcome = ?outcome, test_accuracy = ?s.final_test_accuracy, "trial finished");
}

async fn fail(client: &Client, config: &WorkerConfig, lease: &str, reason: &str) {
    tracing::warn!(reason, "trial failed");
    let req = pb::FailRequest {
        lease_id: lease.to_owned(),
        reason: reason.to_owned(),
        worker_id: config.worker_id.clone(),
    };
    finish("fail", || {
        let mut c = client.clone();
        let req = req.clone();
        async move { c.fail(req).await.map(|_| ()) }
    })
    .await;
}

async fn release(client: &Client, lease: &str, reason: &str) {
    tracing::info!(reason, "handing the trial back");
    let req = pb::ReleaseRequest { lease_id: lease.to_owned(), reason: reason.to_owned() };
    finish("release", || {
        let mut c = client.clone();
        let req = req.clone();
        async move { c.release(req).await.map(|_| ()) }
    })
    .await;
}
