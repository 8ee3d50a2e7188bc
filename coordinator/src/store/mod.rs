//! The coordinator's persistent state: one [`Store`] trait, one implementation
//! per backend ([`SqliteStore`], [`PostgresStore`]), and one conformance suite
//! (`tests/store_{submit,lease,lifecycle,status}.rs`, run against both backends) that every backend must pass.
//!
//! Only the coordinator process opens the database. Every state transition of
//! a trial is a single conditional `UPDATE` (or one transaction), so the
//! guarantees below hold however many gRPC calls race:
//!
//! - a queued trial is leased to at most one worker at a time;
//! - a lease ID is never reused, so calls made under an expired lease are
//!   refused (`StoreError::LeaseLost`) instead of touching the new attempt;
//! - metric points are keyed by (trial, name, step): a re-sent point is
//!   stored once.
//! - a lease records who took it (worker ID, identity of its token, device,
//!   threads); the service refuses calls on it from another identity;
//! - the store vouches for a trial's newest checkpoint step (set by a
//!   metric batch's checkpoint barrier, lowered by truncation) and has an
//!   identity fixed when its schema was created ([`Store::store_id`]), so a
//!   worker resumes only from checkpoints this database knows;
//! - a grid's shared train/data settings are stored once (`trial_settings`),
//!   not copied into each trial's row; a trial's cell is data (canonical
//!   JSON in `trials.cell`), not a column per factor;
//! - a trial's identity (`trials.identity`, [`TrialSpec::id`]) is unique, so
//!   resubmitting a grid adds nothing, also for rows written before the
//!   current ID scheme (upgraded when the store opens: `upgrade.rs`).
//! - trials failed in a row per worker are counted in the database
//!   (quarantine survives a restart).

#[macro_use]
mod shared;
#[macro_use]
pub mod analytics;
#[macro_use]
pub mod archive;
#[macro_use]
mod upgrade;
#[macro_use]
pub(crate) mod sql;
mod group_commit;
mod postgres;
mod rows;
mod settings_cache;
mod spec;
mod sqlite;
mod sqlite_guard;

use async_trait::async_trait;
use sweep_core::{GridSpec, TrialSpec};

pub use analytics::Analytics;
pub use archive::Archive;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
/// Trial states as stored (`trials.state`): the domain's own type.
pub use sweep_core::TrialState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    /// The lease is not (or no longer) the current one of a running trial.
    #[error("lease {0} is not held: it expired, was cancelled or was never granted")]
    LeaseLost(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// What a request would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The database holds something this code cannot read.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The write shared a transaction with one that hit a database error
    /// and was rolled back with it ([`group_commit`]); nothing it did was
    /// kept, and it may be retried.
    #[error("not stored: {0}; retry")]
    RolledBack(String),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another coordinator holds the SQLite database.
    #[error("{path} is in use by another coordinator (process {pid}, per {lock}); stop it first, or give this one its own database")]
    Locked { path: String, lock: String, pid: String },
    /// The database cannot be trusted: opening it would serve wrong or empty
    /// state. The message says what to do.
    #[error("refusing to open {path}: {reason}")]
    Unsafe { path: String, reason: String },
    /// A file next to the database (lock or identity file) could not be used.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result of [`Store::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub sweep_id: String,
    /// Trials in the sweep after the submit.
    pub total_trials: u64,
    /// Trials this submit added (0 when the same grid is submitted again).
    pub added_trials: u64,
}

/// A trial leased to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub trial_id: String,
    pub lease_id: String,
    pub sweep_id: String,
    pub spec: TrialSpec,
    /// 1 for the first lease of this trial.
    pub attempt: u32,
    /// The newest checkpoint step of this trial the store vouches for
    /// (`None`: start from scratch).
    pub resume_step: Option<i64>,
    /// The sweep's `run.keep_weights`.
    pub keep_weights: bool,
}

/// Who asks for a lease: recorded on the trial row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leaser<'a> {
    /// The worker's self-declared ID.
    pub worker_id: &'a str,
    /// The caller's identity (a hash of its token; empty without auth).
    pub holder: &'a str,
    /// Provenance: the worker's device and libtorch threads.
    pub device: &'a str,
    pub threads: u32,
    /// Lease nothing when (`holder`, `worker_id`) failed this many trials
    /// in a row or more (quarantine); `None`: no such limit.
    pub quarantine_after: Option<u32>,
}

/// Who holds a lease, as recorded when it was granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseOwner {
    pub trial_id: String,
    pub holder: String,
    pub worker_id: String,
    /// How many trials (`holder`, `worker_id`) failed in a row (its
    /// quarantine count): a completion clears it only when it is not 0.
    pub failures_in_a_row: u32,
}

/// Progress a worker reports with a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub epoch: u32,
    pub step: i64,
    pub loss: Option<f64>,
}

/// What a worker should do after a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatVerdict {
    Continue,
    Cancel,
    LeaseLost,
}

/// Metric points stored in one transaction, with what a `PushMetrics`
/// batch says about them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PointBatch<'a> {
    pub points: &'a [MetricRow],
    /// The attempt resumed from this step: stored points past it go first.
    pub truncate_after: Option<i64>,
    /// The store vouches for a checkpoint at this step once committed.
    pub checkpoint_step: Option<i64>,
}

/// What [`Store::complete_with`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completed {
    /// Trials a seed plan added (0 without a plan).
    pub added: u64,
    /// Points of the last batch newly stored.
    pub stored: u64,
    /// Who held the lease, read as the result was stored; `None` when the
    /// call repeated one that had succeeded.
    pub owner: Option<LeaseOwner>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub step: i64,
    pub epoch: u32,
    pub name: String,
    pub value: f64,
}

/// How many attempts' logs a trial keeps (a command that hands its trial
/// back again and again must not fill the database).
pub const LOG_ATTEMPTS_KEPT: i64 = 10;

/// One attempt's captured output, as its worker last sent it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptLog {
    pub attempt: i64,
    pub worker_id: String,
    pub updated_ms: i64,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalOutcome {
    Succeeded,
    Diverged,
}

impl FinalOutcome {
    /// The trial state it ends in, as stored (`trials.state`) and as the
    /// metrics' `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalOutcome::Succeeded => "succeeded",
            FinalOutcome::Diverged => "diverged",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrialSummary {
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub diverged: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StateCounts {
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.succeeded + self.diverged + self.failed + self.cancelled
    }
    /// Nothing left to run.
    pub fn finished(&self) -> bool {
        self.queued == 0 && self.running == 0
    }
    fn add(&mut self, state: TrialState, n: u64) {
        match state {
            TrialState::Queued => self.queued += n,
            TrialState::Running => self.running += n,
            TrialState::Succeeded => self.succeeded += n,
            TrialState::Diverged => self.diverged += n,
            TrialState::Failed => self.failed += n,
            TrialState::Cancelled => self.cancelled += n,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunningTrial {
    pub trial_id: String,
    pub worker_id: String,
    pub spec: TrialSpec,
    pub attempt: u32,
    pub progress: Progress,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepStatus {
    pub sweep_id: String,
    pub counts: StateCounts,
    pub running: Vec<RunningTrial>,
    pub cancelled: bool,
    /// When it was first submitted (milliseconds since the Unix epoch).
    pub created_ms: i64,
}

/// An adaptive sweep's plan and each stratum's seeds and verdict under it,
/// judged over the grid's current cells and settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Strata {
    pub plan: sweep_core::adaptive::SeedPlan,
    pub strata: Vec<sweep_core::adaptive::Stratum>,
}

/// A stored trial, for inspection and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    pub trial_id: String,
    pub sweep_id: String,
    pub state: TrialState,
    pub attempts: u32,
    /// Attempts that ended in a trial failure (the trainer raised an
    /// error). Only these use up `max_attempts`.
    pub failures: u32,
    /// Attempts lost to the infrastructure (lease expired: worker killed,
    /// node lost, network cut). Capped separately by [`MAX_INFRA_FAILURES`].
    pub infra_failures: u32,
    /// Times the trial was handed back on preemption (no attempt used).
    pub handbacks: u32,
    /// The step the latest attempt resumed from (0: from scratch), as the
    /// worker reported it.
    pub resumed_step: Option<i64>,
    pub last_error: Option<String>,
    pub worker_id: Option<String>,
    pub summary: TrialSummary,
    /// The newest checkpoint step the store vouches for.
    pub checkpoint_step: Option<i64>,
    /// Provenance of the latest attempt.
    pub device: Option<String>,
    pub threads: Option<u32>,
}

/// Infrastructure failures after which a trial is failed anyway, so a trial
/// that kills every worker it lands on (e.g. out of memory) cannot loop
/// forever.
pub const MAX_INFRA_FAILURES: u32 = 10;

/// The coordinator's storage. Times are milliseconds since the Unix epoch,
/// passed in by the caller so tests control the clock.
#[async_trait]
pub trait Store: Analytics + Archive + Send + Sync + 'static {
    /// Stores the sweep and every trial of its grid not stored yet. Resubmitting
    /// a cancelled sweep re-queues its cancelled trials. With a seed plan,
    /// every stratum is judged, so a resubmit that raises `max_seeds`
    /// continues strata that had stopped at the old bound.
    async fn submit(&self, spec: &GridSpec, now_ms: i64) -> Result<SubmitOutcome, StoreError>;

    /// The store's identity: a UUID written once when its schema was
    /// created. Checkpoints record it, so a checkpoint of another database
    /// is never resumed from.
    fn store_id(&self) -> &str;

    /// Claims the highest-priority, oldest queued trial for `who`, recording
    /// its worker ID, identity, device and threads on the trial; then up to
    /// `max - 1` more queued trials of the same sweep, cell, settings hash
    /// and vouched checkpoint step (NULL equals NULL), in queue order: a
    /// group a worker trains together (one fused model for a cell's seeds),
    /// all resuming from the same position. Each trial gets its own lease,
    /// exactly as [`Store::lease_for`] would grant it; the first is the
    /// queue's head. `max` 0 counts as 1. Empty when nothing is queued, or
    /// when `who` failed `who.quarantine_after` trials in a row or more. A
    /// trial is never in two answers, however many calls race.
    async fn lease_group(&self, who: Leaser<'_>, max: u32, now_ms: i64, ttl_ms: i64) -> Result<Vec<Lease>, StoreError>;

    /// Claims the highest-priority, oldest queued trial for `who`, recording
    /// its worker ID, identity, device and threads on the trial: a
    /// [`Store::lease_group`] of one.
    async fn lease_for(&self, who: Leaser<'_>, now_ms: i64, ttl_ms: i64) -> Result<Option<Lease>, StoreError> {
        Ok(self.lease_group(who, 1, now_ms, ttl_ms).await?.into_iter().next())
    }

    /// [`Store::lease_for`] with only a worker ID (no identity, no provenance).
    async fn lease(&self, worker_id: &str, now_ms: i64, ttl_ms: i64) -> Result<Option<Lease>, StoreError> {
        self.lease_for(Leaser { worker_id, ..Default::default() }, now_ms, ttl_ms).await
    }

    /// Who holds `lease_id`, while it is the trial's current lease.
    async fn lease_owner(&self, lease_id: &str) -> Result<Option<LeaseOwner>, StoreError>;

    /// Counts one more failed trial for (`holder`, `worker_id`); returns how
    /// many it failed in a row.
    async fn record_failure(&self, holder: &str, worker_id: &str, now_ms: i64) -> Result<u32, StoreError>;

    /// A completed trial: (`holder`, `worker_id`) starts again from zero.
    async fn clear_failures(&self, holder: &str, worker_id: &str) -> Result<(), StoreError>;

    /// Trials (`holder`, `worker_id`) failed in a row.
    async fn failures_in_a_row(&self, holder: &str, worker_id: &str) -> Result<u32, StoreError>;

    /// Renews a lease and records progress.
    async fn heartbeat(
        &self,
        lease_id: &str,
        progress: Progress,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<HeartbeatVerdict, StoreError>;

    /// Stores metric points of the trial held under `lease_id`; returns how
    /// many were new. Refused with `LeaseLost` unless the lease is current.
    ///
    /// `truncate_after`: first delete the trial's points with a step above
    /// it. A resumed attempt sends its checkpoint's step (or 0 when it starts
    /// over), so points of an abandoned attempt past that step are replaced,
    /// never mixed with the new attempt's.
    async fn put_metrics(
        &self,
        lease_id: &str,
        points: &[MetricRow],
        truncate_after: Option<i64>,
    ) -> Result<u64, StoreError> {
        self.put_batch(lease_id, points, truncate_after, None).await
    }

    /// [`Store::put_metrics`] with a checkpoint barrier, in one transaction:
    /// after `truncate_after = T` the vouched checkpoint step becomes NULL
    /// when T is 0 and `MIN(vouched, T)` otherwise; then, with
    /// `checkpoint_step = S`, it becomes S (the worker is about to write a
    /// checkpoint at S, and every point up to S is stored).
    async fn put_batch(
        &self,
        lease_id: &str,
        points: &[MetricRow],
        truncate_after: Option<i64>,
        checkpoint_step: Option<i64>,
    ) -> Result<u64, StoreError>;

    /// Hands a running trial back to the queue (preemption): no attempt is
    /// used. Idempotent for the same lease only while it is current.
    async fn release(&self, lease_id: &str, reason: &str) -> Result<(), StoreError>;

    /// Pushes the deadline of every running lease to at least `now_ms +
    /// ttl_ms`. Called when a coordinator starts: while it was down nobody
    /// could heartbeat, so expiring those leases would punish live workers.
    async fn extend_running_leases(&self, now_ms: i64, ttl_ms: i64) -> Result<u64, StoreError>;

    /// Finishes the trial held under `lease_id`. Repeating the call after it
    /// succeeded is a no-op (a worker may retry when the answer was lost).
    /// In a sweep with a seed plan, the trial's stratum is judged in the
    /// same transaction (`sweep_core::adaptive`); returns the trials that
    /// added (0 without a plan).
    async fn complete(
        &self,
        lease_id: &str,
        outcome: FinalOutcome,
        summary: &TrialSummary,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(self.complete_with(lease_id, outcome, summary, PointBatch::default(), None, now_ms).await?.added)
    }

    /// [`Store::complete`] with the attempt's last metric batch (stored as
    /// [`Store::put_batch`] would) and what it was produced with (its
    /// provenance) in the same transaction: the result is
    /// stored with all of them or not at all. A repeated call after success
    /// is a no-op that stores nothing again.
    async fn complete_with(
        &self,
        lease_id: &str,
        outcome: FinalOutcome,
        summary: &TrialSummary,
        last: PointBatch<'_>,
        provenance: Option<&sweep_core::Provenance>,
        now_ms: i64,
    ) -> Result<Completed, StoreError>;

    /// Gives the trial up: back to the queue, or failed once `max_attempts`
    /// attempts have failed (then its stratum is judged, as in
    /// [`Store::complete`]). Returns whether it was re-queued.
    async fn fail(&self, lease_id: &str, reason: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// Expires every lease whose deadline passed, as [`Store::fail`] would
    /// (a trial out of infrastructure attempts fails, and its stratum is
    /// judged). Returns the number of trials reaped.
    async fn reap_expired(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Counts and running trials for one sweep, or all sweeps when `None`.
    async fn status(&self, sweep_id: Option<&str>) -> Result<Vec<SweepStatus>, StoreError>;

    /// Cancels the queued and running trials of a sweep; returns how many.
    async fn cancel(&self, sweep_id: &str, now_ms: i64) -> Result<u64, StoreError>;

    /// An adaptive sweep's plan and strata, as the transactions that
    /// finish its trials judge them (`None` for a sweep without a plan).
    /// Reads every trial of the sweep: asked for one sweep at a time.
    async fn strata(&self, sweep_id: &str) -> Result<Option<Strata>, StoreError>;

    /// Every trial of a sweep (for tests and `sweep status --trials`).
    async fn trials(&self, sweep_id: &str) -> Result<Vec<TrialRecord>, StoreError>;

    /// Every metric point of a trial, ordered by name then step.
    async fn metrics(&self, trial_id: &str) -> Result<Vec<MetricRow>, StoreError>;

    /// Replaces the output tail of the attempt holding `lease_id`
    /// (`LeaseLost` when the lease is not current).
    async fn save_log(&self, lease_id: &str, text: &str, now_ms: i64) -> Result<(), StoreError>;

    /// The trial a full ID or a unique prefix of one (hex digits) names,
    /// and its attempts' output tails in attempt order.
    async fn logs(&self, id: &str) -> Result<(String, Vec<AttemptLog>), StoreError>;
}

/// Opens the store a URL names: `sqlite://PATH` (created if missing) or
/// `postgres://...`. Runs the embedded migrations.
///
/// This is how a coordinator opens its database: a SQLite file is locked
/// for this process (a second coordinator is refused) and checked
/// ([`SqliteStore::open_exclusive`]).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open_exclusive(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::InvalidArgument(format!(
            "unsupported database URL {url:?}: expected sqlite://PATH or postgres://..."
        )))
    }
}

pub(crate) fn new_store_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

pub(crate) fn new_lease_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
