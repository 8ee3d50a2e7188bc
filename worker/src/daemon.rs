//! The worker daemon's network side: lease a trial, run it on the training
//! thread, heartbeat while it runs, upload its metrics (each batch kept until
//! the coordinator acknowledges it was committed), then complete or fail it.
//!
//! The coordinator may go away at any time; every call is retried with
//! capped, jittered exponential backoff, and the gRPC channel reconnects by
//! itself. A worker never touches the database.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sweep_proto::client::{AuthChannel, ClientSecurity};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use sweep_core::TrialSpec;
use sweep_proto::v1 as pb;
use sweep_proto::v1::worker_service_client::WorkerServiceClient;

use crate::admission::Admission;
use crate::finish::{complete, fail, release};
use crate::memory::DeviceMemory;
use crate::retry::{lease_refusal, Backoff};
use crate::telemetry::Telemetry;
use crate::trainer::{StopFlag, StopReason, TrainContext, TrainError, TrainOutcome, TrainerFactory, TrialJob};
use crate::uploader::{UploadEnd, Uploader};

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
    /// libtorch intra-op threads the trainer uses (0: libtorch's default);
    /// sent with each lease as provenance, since results depend on it.
    pub threads: u32,
    /// Most trials of one cell (its seeds) asked for in one lease and
    /// trained together as one fused model (`--fuse`); 1: one at a time.
    pub fuse: u32,
    /// Trainings run at once on the device (`--slots`), each slot leasing
    /// and training on its own thread; fewer when memory says so.
    pub slots: u32,
    /// The device's free-memory probe for slot admission (`None`: slots
    /// are limited by count alone, as on the CPU).
    pub memory: Option<DeviceMemory>,
    /// The worker's Prometheus metrics (served by `telemetry::serve` when
    /// `--metrics-listen` is given).
    pub telemetry: Arc<Telemetry>,
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
            threads: 0,
            fuse: 1,
            slots: 1,
            memory: None,
            telemetry: Arc::default(),
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

/// The trials of one lease answer (one, or a fused group) and where their
/// results go.
type JobMsg = (Vec<(TrialJob, TrainContext)>, oneshot::Sender<GroupResult>);

/// How a group's training ended: one result per trial, in order, and the
/// most other trainings it ran beside ([`crate::admission::Ticket::peers`]:
/// what an out-of-memory error is blamed on).
struct GroupResult {
    results: Vec<Result<TrainOutcome, TrainError>>,
    peers: usize,
}

/// Starts slot `slot`'s training thread: it makes its trainer and then
/// trains the groups it is sent, one at a time, each once the admission
/// lets it onto the device, until the sender is dropped.
fn spawn_training_thread(
    slot: usize,
    factory: TrainerFactory,
    admission: Arc<Admission>,
) -> Result<std::sync::mpsc::Sender<JobMsg>, WorkerError> {
    let (tx, rx) = std::sync::mpsc::channel::<JobMsg>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("trainer-{slot}"))
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
            while let Ok((mut jobs, reply)) = rx.recv() {
                let estimate = trainer.footprint(&jobs);
                let all_stopped =
                    |jobs: &[(TrialJob, TrainContext)]| jobs.iter().all(|(_, c)| c.should_stop().is_some());
                let Some(ticket) = admission.admit(estimate, || all_stopped(&jobs)) else {
                    let results = jobs
                        .iter()
                        .map(|(_, c)| Ok(TrainOutcome::Stopped(c.should_stop().unwrap_or(StopReason::Shutdown))))
                        .collect();
                    drop(jobs);
                    let _ = reply.send(GroupResult { results, peers: 0 });
                    continue;
                };
                let hook = ticket.step_hook();
                for (_, ctx) in &mut jobs {
                    *ctx = ctx.clone().with_step_hook(hook.clone());
                }
                drop(hook);
                let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.train_group(&jobs)))
                    .unwrap_or_else(|p| {
                        let msg = crate::trainer::panic_message(&*p);
                        jobs.iter().map(|_| Err(TrainError::Other(format!("trainer panicked: {msg}")))).collect()
                    });
                let peers = ticket.peers();
                drop(ticket);
                // Closing the contexts ends each trial's event stream.
                drop(jobs);
                let _ = reply.send(GroupResult { results, peers });
            }
        })
        .map_err(|e| WorkerError::Trainer(e.to_string()))?;
    ready_rx
        .recv()
        .map_err(|_| WorkerError::Trainer("the training thread died".into()))?
        .map_err(WorkerError::Trainer)?;
    Ok(tx)
}

/// The shutdown state shared by the lease loop and the running trial:
/// `soft` turns true on SIGTERM/SIGINT (stop the trial, checkpoint, hand it
/// back), `hard` turns true once the grace period after that is over: from
/// then on nothing is waited for (not the trainer, not the coordinator) and
/// the worker exits, leaving its last checkpoint for the next lease.
#[derive(Clone)]
pub(crate) struct Shutdown {
    soft: watch::Receiver<bool>,
    hard: watch::Receiver<bool>,
}

impl Shutdown {
    pub(crate) fn requested(&self) -> bool {
        *self.soft.borrow()
    }

    async fn requested_wait(&self) {
        let mut soft = self.soft.clone();
        if soft.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    async fn grace_over(&self) {
        let mut hard = self.hard.clone();
        if hard.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `f` to its end, or until the grace period after a shutdown
    /// signal is over (`None` then).
    pub(crate) async fn bounded<F: Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            r = f => Some(r),
            _ = self.grace_over() => None,
        }
    }
}

/// Runs the worker until `shutdown` resolves (or `max_trials`/`idle_exit`
/// says stop). On shutdown a running trial is asked to stop at its next step,
/// checkpoints, and is handed back; all of that within `config.grace`, after
/// which the worker returns whatever it was waiting for.
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
    let slots = config.slots.max(1) as usize;
    let admission = Arc::new(Admission::new(slots, config.memory.clone()));
    let trainers = (0..slots)
        .map(|slot| spawn_training_thread(slot, factory.clone(), admission.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    // Now that the trainers (and a GPU's CUDA context) exist.
    let planner = admission.clone();
    let _ = tokio::task::spawn_blocking(move || planner.plan()).await;

    let (soft_tx, soft_rx) = watch::channel(false);
    let (hard_tx, hard_rx) = watch::channel(false);
    let grace = config.grace;
    let signal_task = tokio::spawn(async move {
        shutdown.await;
        let _ = soft_tx.send(true);
        tokio::time::sleep(grace).await;
        let _ = hard_tx.send(true);
        // Keep the senders alive: a closed channel is not a signal.
        std::future::pending::<()>().await;
    });
    let sd = Shutdown { soft: soft_rx, hard: hard_rx };
    tracing::info!(
        worker = %config.worker_id, coordinator = %config.coordinator, device = %config.device,
        threads = config.threads, fuse = config.fuse, slots, "worker started"
    );
    let pool = Pool { admission, counts: Mutex::new(Counts::new()) };
    let loops = trainers.iter().enumerate().map(|(slot, trainer)| {
        lease_loop(slot, &config, &client, trainer, &sd, &pool)
            .instrument(tracing::info_span!("worker", worker = %config.worker_id, slot))
    });
    let ends = futures::future::join_all(loops).await;
    signal_task.abort();
    let mut trials = 0;
    for end in ends {
        trials += end?;
    }
    let (peak, _) = pool.admission.peaks();
    tracing::info!(worker = %config.worker_id, trials, most_at_once = peak, "worker stopped");
    Ok(())
}

/// What the slots of one worker share: the device's admission, and the
/// counts behind `max_trials` and `idle_exit`.
struct Pool {
    admission: Arc<Admission>,
    counts: Mutex<Counts>,
}

struct Counts {
    /// Trials leased so far.
    leased: u64,
    /// Trials asked for in lease calls still under way.
    asking: u64,
    /// Groups training now.
    training: usize,
    /// When the last group ended (or the worker started).
    idle_since: Instant,
}

impl Counts {
    fn new() -> Counts {
        Counts { leased: 0, asking: 0, training: 0, idle_since: Instant::now() }
    }
}

/// What a slot may ask the coordinator for.
enum Ask {
    Trials(u32),
    /// Other slots' calls may still come back with less than they asked.
    WaitForOthers,
    /// The worker has leased its `max_trials`.
    Done,
}

impl Pool {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Up to `want` of the trials `max_trials` still allows, held until
    /// [`Pool::asked`].
    fn ask(&self, max_trials: Option<u64>, want: u32) -> Ask {
        let mut c = self.counts();
        let Some(max) = max_trials else {
            c.asking += u64::from(want);
            return Ask::Trials(want);
        };
        let left = max.saturating_sub(c.leased + c.asking);
        match (left, c.asking) {
            (0, 0) => Ask::Done,
            (0, _) => Ask::WaitForOthers,
            (left, _) => {
                let n = want.min(left.min(u64::from(u32::MAX)) as u32);
                c.asking += u64::from(n);
                Ask::Trials(n)
            }
        }
    }

    /// A lease call that asked for `asked` trials got `got`.
    fn asked(&self, asked: u32, got: usize) {
        let mut c = self.counts();
        c.asking = c.asking.saturating_sub(u64::from(asked));
        c.leased += got as u64;
    }

    /// How long no slot has trained (zero while one does).
    fn idle_for(&self) -> Duration {
        let c = self.counts();
        if c.training > 0 {
            Duration::ZERO
        } else {
            c.idle_since.elapsed()
        }
    }

    fn training(&self, starts: bool) {
        let mut c = self.counts();
        if starts {
            c.training += 1;
        } else {
            c.training = c.training.saturating_sub(1);
            c.idle_since = Instant::now();
        }
    }
}

/// One slot: leases work while the device has room for it, trains it on
/// the slot's training thread, and ends on shutdown, when the worker has
/// leased `max_trials`, after `idle_exit` without work, or when the slot
/// limit is lowered below it. Returns the trials it leased.
async fn lease_loop(
    slot: usize,
    config: &WorkerConfig,
    client: &Client,
    trainer: &std::sync::mpsc::Sender<JobMsg>,
    sd: &Shutdown,
    pool: &Pool,
) -> Result<u64, WorkerError> {
    let mut done = 0u64;
    let mut backoff = Backoff::new();
    let mut unreachable_logged = false;
    loop {
        if sd.requested() {
            break;
        }
        if slot >= pool.admission.slot_limit() {
            tracing::info!(slot, "slot closed: the device ran out of memory with this many trainings");
            break;
        }
        if config.idle_exit.is_some_and(|d| pool.idle_for() >= d) {
            tracing::info!(slot, "no work offered for {:?}; exiting", config.idle_exit.unwrap_or_default());
            break;
        }
        // Lease only what the device has room for.
        tokio::select! {
            _ = pool.admission.room_to_lease() => {}
            _ = sd.requested_wait() => break,
        }
        if slot >= pool.admission.slot_limit() {
            continue;
        }
        let want = match pool.ask(config.max_trials, config.fuse) {
            Ask::Trials(n) => n,
            Ask::Done => break,
            Ask::WaitForOthers => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = sd.requested_wait() => break,
                }
            }
        };
        let wait = match config.idle_exit {
            Some(d) => config.lease_wait.min(d.saturating_sub(pool.idle_for())).max(Duration::from_millis(50)),
            None => config.lease_wait,
        };
        let req = pb::LeaseRequest {
            worker_id: config.worker_id.clone(),
            device: config.device.clone(),
            wait_ms: wait.as_millis().min(u32::MAX as u128) as u32,
            threads: config.threads,
            max_trials: want,
        };
        let mut lease_client = client.clone();
        let answer = tokio::select! {
            r = lease_client.lease(req) => r,
            _ = sd.requested_wait() => {
                pool.asked(want, 0);
                break;
            }
        };
        match answer {
            Ok(resp) => {
                if unreachable_logged {
                    tracing::info!("coordinator reachable again");
                    unreachable_logged = false;
                }
                backoff.reset();
                let resp = resp.into_inner();
                let group: Vec<pb::Assignment> = resp.assignment.into_iter().chain(resp.fused).collect();
                pool.asked(want, group.len());
                if group.is_empty() {
                    continue;
                }
                done += group.len() as u64;
                pool.training(true);
                // Every event of the group carries it (its first trial, the
                // sweep, its size); each trial's own events also carry a
                // `trial` span (`start_trial`, `finish_trial`).
                let span = tracing::info_span!("group", first = %group[0].trial_id, sweep = %group[0].sweep_id, trials = group.len());
                let exit_now = run_group(config, client, trainer, group, sd, &pool.admission).instrument(span).await;
                pool.training(false);
                if exit_now {
                    break;
                }
            }
            Err(status) if lease_refusal(status.code()).is_some() => {
                pool.asked(want, 0);
                let why = lease_refusal(status.code()).map_or("", |r| r.describe());
                tracing::error!(code = ?status.code(), message = %status.message(), "{why}; stopping (no more lease calls)");
                return Err(WorkerError::Refused(status.message().to_owned()));
            }
            Err(status) => {
                pool.asked(want, 0);
                if !unreachable_logged {
                    tracing::warn!(code = ?status.code(), message = %status.message(), "lease call failed; retrying with backoff");
                    unreachable_logged = true;
                }
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = sd.requested_wait() => break,
                }
            }
        }
    }
    Ok(done)
}

pub(crate) type Client = WorkerServiceClient<AuthChannel>;

/// One leased trial while it trains: its job, and the tasks that heartbeat
/// its lease and upload its metrics.
struct Leased {
    a: pb::Assignment,
    job: TrialJob,
    stop: StopFlag,
    heartbeat: tokio::task::JoinHandle<()>,
    upload: tokio::task::JoinHandle<UploadEnd>,
    /// Sends the captured output of an exec trial (`None` for others).
    log: Option<tokio::task::JoinHandle<()>>,
}

impl Leased {
    fn abort(&self) {
        self.heartbeat.abort();
        self.upload.abort();
        if let Some(l) = &self.log {
            l.abort();
        }
    }
}

/// Types a leased trial's spec and starts its heartbeat and metric upload;
/// with it comes the context the trainer sends the trial's events through.
/// `None` when the spec is invalid (the trial is failed with the reason).
async fn start_trial(
    config: &WorkerConfig,
    client: &Client,
    a: pb::Assignment,
    sd: &Shutdown,
) -> Option<(Leased, TrainContext)> {
    let lease = a.lease_id.clone();
    // The trial ID names a folder under the checkpoint root: only a plain
    // name (the coordinator's are 32 hex digits) may, never a path.
    let plain = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    if a.trial_id.is_empty() || a.trial_id.len() > 128 || !a.trial_id.bytes().all(plain) {
        let why = format!("invalid trial ID {:?}: not a plain name", sweep_core::quote::short(&a.trial_id));
        fail(client, config, &lease, &why, sd).await;
        return None;
    }
    let spec = match a.spec.clone().map(TrialSpec::try_from) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            fail(client, config, &lease, &format!("invalid trial spec: {e}"), sd).await;
            return None;
        }
        None => {
            fail(client, config, &lease, "invalid trial spec: missing", sd).await;
            return None;
        }
    };
    tracing::info!(trial = %a.trial_id, attempt = a.attempt, spec = %spec.label(), resume_step = ?a.resume_step, "trial started");
    let batch_size = crate::trainer::resolve(&spec).map(|s| u64::from(s.train.batch_size)).unwrap_or_else(|_| {
        spec.level("batch_size").and_then(sweep_core::Level::as_int).map_or(0, |b| b.max(0) as u64)
    });
    let captured = !spec.trainer.is_bmenet();
    config.telemetry.started(&a.trial_id, &a.sweep_id, batch_size);
    let job = TrialJob {
        trial_id: a.trial_id.clone(),
        spec,
        attempt: a.attempt,
        checkpoint_dir: config.checkpoint_root.join(&a.trial_id),
        store_id: a.store_id.clone(),
        resume_step: a.resume_step,
        keep_weights: a.keep_weights,
    };
    let stop = StopFlag::new();
    let (events_tx, events_rx) = mpsc::channel(1024);
    let progress = Arc::new(Mutex::new(pb::HeartbeatRequest { lease_id: lease.clone(), ..Default::default() }));
    let heartbeat_every = Duration::from_millis(a.heartbeat_interval_ms.max(100) as u64);
    let heartbeat = tokio::spawn(
        crate::finish::heartbeats(client.clone(), progress.clone(), stop.clone(), heartbeat_every)
            .instrument(trial_span(&a.trial_id)),
    );
    let uploader = Uploader {
        client: client.clone(),
        lease,
        stop: stop.clone(),
        progress,
        batch_points: config.batch_points,
        batch_delay: config.batch_delay,
        telemetry: config.telemetry.clone(),
        trial_id: a.trial_id.clone(),
    };
    let upload = tokio::spawn(uploader.run(events_rx).instrument(trial_span(&a.trial_id)));
    let log = captured.then(|| {
        let ship = crate::log_shipper::ship(
            client.clone(),
            a.lease_id.clone(),
            config.checkpoint_root.clone(),
            a.trial_id.clone(),
            heartbeat_every.max(Duration::from_secs(2)),
        );
        tokio::spawn(ship.instrument(trial_span(&a.trial_id)))
    });
    let ctx = TrainContext::new(events_tx, stop.clone());
    Some((Leased { a, job, stop, heartbeat, upload, log }, ctx))
}

/// Runs the trials of one lease answer (one trial, or the seeds of one
/// cell trained as a fused group) to their ends, whatever those are. Each
/// trial keeps its own lease, heartbeat, metric stream and result. Never
/// returns an error: every failure is reported to the coordinator (or, if
/// the coordinator is gone, left to the lease to expire). Returns true when
/// the worker must exit at once (it was told to shut down).
async fn run_group(
    config: &WorkerConfig,
    client: &Client,
    trainer: &std::sync::mpsc::Sender<JobMsg>,
    group: Vec<pb::Assignment>,
    sd: &Shutdown,
    admission: &Admission,
) -> bool {
    // The training thread holds the only contexts, so each trial's event
    // stream ends when its training does.
    let mut trials = Vec::with_capacity(group.len());
    let mut jobs = Vec::with_capacity(group.len());
    for a in group {
        if let Some((t, ctx)) = start_trial(config, client, a, sd).await {
            jobs.push((t.job.clone(), ctx));
            trials.push(t);
        }
    }
    if trials.is_empty() {
        return sd.requested();
    }
    if trials.len() > 1 {
        tracing::info!(trials = trials.len(), "training a fused group of seeds");
    }
    let (reply_tx, mut reply_rx) = oneshot::channel();
    if trainer.send((jobs, reply_tx)).is_err() {
        for t in &trials {
            t.abort();
            config.telemetry.ended(&t.a.trial_id, "failed");
            fail(client, config, &t.a.lease_id, "the training thread is gone", sd).await;
        }
        return sd.requested();
    }
    let abandon = |why: &str| {
        tracing::warn!(grace = ?config.grace, "{why}; exiting and leaving the trials' last checkpoints for their next leases");
    };
    // Ask the trainer to stop if the worker is shut down mid-trial; from the
    // signal on, everything (trainer, upload, hand-back) shares the grace.
    let results = tokio::select! {
        r = &mut reply_rx => r,
        _ = sd.requested_wait() => {
            tracing::info!(grace = ?config.grace, "shutdown requested: stopping training at its next step");
            for t in &trials {
                t.stop.stop(StopReason::Shutdown);
            }
            match sd.bounded(&mut reply_rx).await {
                Some(r) => r,
                None => {
                    trials.iter().for_each(Leased::abort);
                    abandon("training did not stop within the grace period");
                    return true;
                }
            }
        }
    };
    let (results, peers) = match results {
        Ok(r) => (r.results, r.peers),
        Err(_) => (Vec::new(), 0),
    };
    // Out of memory after sharing the device: the device, not the trial, is
    // at fault. The trials go back to the queue and this worker runs fewer
    // trainings at once than ran together, from now on.
    let crowded = (peers > 0 && results.iter().any(|r| matches!(r, Err(TrainError::OutOfMemory(_))))).then(|| {
        let limit = admission.lower_slots(peers + 1);
        tracing::warn!(peers, slots = limit, "out of device memory beside other trainings; running fewer at once");
        (peers, limit)
    });
    let mut results = results.into_iter();
    let mut exit_now = false;
    for t in trials {
        let result = results.next().unwrap_or_else(|| Err(TrainError::Other("the training thread died".into())));
        let span = trial_span(&t.a.trial_id);
        match finish_trial(config, client, t, result, crowded, sd).instrument(span).await {
            Some(exit) => exit_now |= exit,
            None => {
                abandon("the metrics were not acknowledged within the grace period");
                return true;
            }
        }
    }
    exit_now || sd.requested()
}

/// How long a worker waits after a command handed its trial back.
const HAND_BACK_PAUSE: Duration = Duration::from_secs(5);

/// The span of one trial's own events (its heartbeats, metric upload and
/// end), inside its group's.
fn trial_span(trial_id: &str) -> tracing::Span {
    tracing::info_span!("trial", trial = %trial_id)
}

/// Reports one trained trial's end to the coordinator once its metrics are
/// acknowledged. `Some(true)`: the worker must exit (handed back on
/// shutdown); `None`: the grace period ran out first.
async fn finish_trial(
    config: &WorkerConfig,
    client: &Client,
    t: Leased,
    result: Result<TrainOutcome, TrainError>,
    crowded: Option<(usize, usize)>,
    sd: &Shutdown,
) -> Option<bool> {
    let Leased { a, job, heartbeat, mut upload, log, .. } = t;
    let lease = a.lease_id.as_str();
    // Every metric must be acknowledged before the trial is completed.
    let uploaded = match sd.bounded(&mut upload).await {
        Some(r) => r.unwrap_or(UploadEnd::LeaseLost),
        None => {
            heartbeat.abort();
            upload.abort();
            config.telemetry.ended(&a.trial_id, "lease_lost");
            return None;
        }
    };
    heartbeat.abort();
    if let Some(log) = log {
        log.abort();
        if !matches!(uploaded, UploadEnd::LeaseLost) {
            crate::log_shipper::ship_final(client, lease, &config.checkpoint_root, &a.trial_id).await;
        }
    }
    let outcome = match (&uploaded, &result) {
        (UploadEnd::Refused(_), _) | (UploadEnd::Acked, Err(_)) => "failed",
        (UploadEnd::LeaseLost, _) => "lease_lost",
        (UploadEnd::Acked, Ok(TrainOutcome::Succeeded(_))) => "succeeded",
        (UploadEnd::Acked, Ok(TrainOutcome::Diverged(_))) => "diverged",
        (UploadEnd::Acked, Ok(TrainOutcome::Stopped(StopReason::Shutdown))) => "handed_back",
        (UploadEnd::Acked, Ok(TrainOutcome::Stopped(_))) => "stopped",
        (UploadEnd::Acked, Ok(TrainOutcome::HandBack(_))) => "handed_back",
    };
    let outcome = match (&result, crowded) {
        (Err(TrainError::OutOfMemory(_)), Some(_)) if matches!(uploaded, UploadEnd::Acked) => "handed_back",
        _ => outcome,
    };
    config.telemetry.ended(&a.trial_id, outcome);
    let checkpoint_dir = &job.checkpoint_dir;
    match (uploaded, result) {
        (UploadEnd::Refused(why), _) => fail(client, config, lease, &why, sd).await,
        (UploadEnd::LeaseLost, r) => {
            if matches!(r, Ok(TrainOutcome::Succeeded(_) | TrainOutcome::Diverged(_))) {
                tracing::warn!(trial = %a.trial_id, "lease lost before the metrics were acknowledged; result dropped");
            } else {
                tracing::info!(trial = %a.trial_id, "lease lost; trial abandoned");
            }
        }
        (UploadEnd::Acked, Ok(TrainOutcome::Succeeded(s))) => {
            if complete(client, config, lease, pb::Outcome::Succeeded, &s, sd).await {
                discard(checkpoint_dir, a.keep_weights).await;
                // The coordinator has its tail (`sweep logs`).
                let (root, id) = (config.checkpoint_root.clone(), a.trial_id.clone());
                let _ = tokio::task::spawn_blocking(move || crate::trial_log::remove(&root, &id)).await;
            }
        }
        (UploadEnd::Acked, Ok(TrainOutcome::Diverged(s))) => {
            tracing::warn!(trial = %a.trial_id, "trial diverged (loss became NaN or infinite)");
            if complete(client, config, lease, pb::Outcome::Diverged, &s, sd).await {
                discard(checkpoint_dir, false).await;
            }
        }
        (UploadEnd::Acked, Ok(TrainOutcome::Stopped(StopReason::Shutdown))) => {
            release(client, lease, "worker shut down (preempted); resumes from its last checkpoint", sd).await;
            return Some(true);
        }
        (UploadEnd::Acked, Ok(TrainOutcome::Stopped(reason))) => {
            tracing::info!(trial = %a.trial_id, ?reason, "trial stopped");
        }
        (UploadEnd::Acked, Ok(TrainOutcome::HandBack(reason))) => {
            tracing::info!(trial = %a.trial_id, %reason, "trial handed back");
            release(client, lease, &reason, sd).await;
            // The trial is at the queue's head again: let other workers
            // take it before this one leases again.
            tokio::select! {
                _ = tokio::time::sleep(HAND_BACK_PAUSE) => {}
                _ = sd.requested_wait() => {}
            }
        }
        (UploadEnd::Acked, Err(TrainError::OutOfMemory(why))) => match crowded {
            Some((peers, slots)) => {
                let reason = format!(
                    "out of device memory on {} beside {peers} other training(s) ({why}); handed back \
                     without using an attempt, and this worker now runs at most {slots} at once",
                    config.device
                );
                release(client, lease, &reason, sd).await;
            }
            None => {
                let reason = format!(
                    "out of device memory on {} with the device to itself ({why}): the trial does not fit \
                     this device (try a smaller batch size, fewer fused seeds, or a larger device)",
                    config.device
                );
                fail(client, config, lease, &reason, sd).await;
            }
        },
        (UploadEnd::Acked, Err(e)) => fail(client, config, lease, &e.to_string(), sd).await,
    }
    Some(sd.requested())
}

/// The trial's result is acknowledged: its checkpoints go (the final weights
/// stay when the sweep keeps them).
async fn discard(dir: &std::path::Path, keep_final: bool) {
    let d = dir.to_owned();
    let r = tokio::task::spawn_blocking(move || crate::trainer::discard_checkpoints(&d, keep_final)).await;
    match r {
        Ok(Ok(())) => tracing::debug!(dir = %dir.display(), keep_final, "checkpoints deleted"),
        Ok(Err(e)) => tracing::warn!(dir = %dir.display(), "could not delete the trial's checkpoints: {e}"),
        Err(e) => tracing::warn!(dir = %dir.display(), "could not delete the trial's checkpoints: {e}"),
    }
}
