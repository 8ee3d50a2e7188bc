//! The seam between the worker daemon and whatever trains a trial.
//!
//! The daemon owns the network side (leases, heartbeats, metric upload); a
//! [`Trainer`] owns the computation. A trainer lives on one dedicated thread
//! for the life of the worker process (so libtorch tensors never cross
//! threads and a dataset is loaded once per process, not once per trial) and
//! is given one [`TrialJob`] at a time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use sweep_core::bmenet::BmenetTrial;
use sweep_core::schema::Place;
use sweep_core::{GridError, TrialSpec};
use tokio::sync::mpsc;

/// One trial to train, as leased from the coordinator.
#[derive(Debug, Clone)]
pub struct TrialJob {
    pub trial_id: String,
    pub spec: TrialSpec,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Where this trial keeps its checkpoints (`<checkpoint root>/<trial id>`).
    /// A re-leased trial finds its last checkpoint here and resumes from it
    /// when [`TrialJob::may_resume`] allows.
    pub checkpoint_dir: PathBuf,
    /// Identity of the coordinator's database (`Assignment.store_id`); a
    /// checkpoint records it.
    pub store_id: String,
    /// The newest checkpoint step of this trial that the coordinator's
    /// database vouches for (`Assignment.resume_step`); `None`: start from
    /// scratch whatever lies in `checkpoint_dir`.
    pub resume_step: Option<i64>,
    /// Keep the final weights after success (`<checkpoint_dir>/final/`).
    pub keep_weights: bool,
}

impl TrialJob {
    /// Whether a checkpoint written for (`store_id`, `trial_id`) at `step`
    /// may be resumed from: only one this coordinator's database vouches
    /// for (same store, same trial, a step no newer than the vouched one).
    /// `Err` says why not, for the log.
    pub fn may_resume(&self, store_id: &str, trial_id: &str, step: i64) -> Result<(), String> {
        if trial_id != self.trial_id {
            return Err(format!("it belongs to trial {trial_id:?}"));
        }
        if store_id != self.store_id {
            return Err(format!(
                "it was written for another coordinator database (store {store_id:?}, this one is {:?})",
                self.store_id
            ));
        }
        match self.resume_step {
            None => Err("the coordinator vouches for no checkpoint of this trial".into()),
            Some(r) if step > r => {
                Err(format!("its step {step} is past the newest step the coordinator vouches for ({r})"))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Name of the folder, inside a trial's checkpoint folder, that keeps the
/// final weights of a succeeded trial when the sweep asks for them
/// (`[run] keep_weights`): `final/weights.ot` and `final/meta.json`.
pub const FINAL_DIR: &str = "final";

/// Called once the coordinator acknowledged the trial's result: the
/// checkpoints are no longer needed. With `keep_final`, `<dir>/final/` stays
/// (everything else goes); otherwise the whole folder goes.
pub fn discard_checkpoints(dir: &std::path::Path, keep_final: bool) -> std::io::Result<()> {
    if !keep_final {
        return match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
    }
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    for e in entries {
        let e = e?;
        if e.file_name() == FINAL_DIR {
            continue;
        }
        let path = e.path();
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// One scalar metric value. Keyed by (trial, name, step) in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub step: i64,
    pub epoch: u32,
    pub name: String,
    pub value: f64,
}

/// What the trainer tells the daemon while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    Metric(Metric),
    /// Progress for heartbeats and `sweep watch`: the epoch being trained
    /// (1-based), the global step, the last logged mean loss.
    Progress {
        epoch: u32,
        step: i64,
        loss: Option<f64>,
    },
    /// The attempt starts at this global step: its checkpoint's step, or 0
    /// when it starts over. Sent once, before any metric.
    Resumed {
        step: i64,
    },
    /// Answer on the channel once every metric sent before this event is
    /// acknowledged by the coordinator (see [`TrainContext::checkpoint`]).
    /// With `checkpoint_step`, the batch that carries the last of those
    /// points also carries `checkpoint_step`, so the coordinator vouches for
    /// a checkpoint at that step.
    Barrier {
        checkpoint_step: Option<i64>,
        ack: FlushAck,
    },
}

/// The answer channel of a [`TrainEvent::Barrier`]: `true` once acknowledged.
/// Dropped unanswered when the daemon gives up (lease lost, batch refused,
/// shutdown grace over).
#[derive(Debug, Clone)]
pub struct FlushAck(pub std::sync::mpsc::SyncSender<bool>);

impl PartialEq for FlushAck {
    /// Two flush requests are never the same request.
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

/// Why the daemon wants the trainer to stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// The sweep was cancelled.
    Cancelled = 1,
    /// The lease went to someone else; nothing more of ours will be accepted.
    LeaseLost = 2,
    /// The worker is shutting down (SIGTERM/SIGINT): checkpoint and hand back.
    Shutdown = 3,
    /// The coordinator refused a metric batch for good: the trial will be
    /// failed; nothing more of it will be accepted.
    Refused = 4,
}

impl StopReason {
    /// Whether the trainer should still write a checkpoint when stopping
    /// for this reason (not when the trial is no longer ours to write).
    pub fn keeps_checkpoint(self) -> bool {
        matches!(self, StopReason::Cancelled | StopReason::Shutdown)
    }
}

/// A shared stop flag: set by the daemon, polled by the trainer between steps.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicU8>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self, reason: StopReason) {
        let _ = self.0.compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
    }
    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::LeaseLost),
            3 => Some(StopReason::Shutdown),
            4 => Some(StopReason::Refused),
            _ => None,
        }
    }
}

/// What a trainer is handed besides the job: where to send events and the
/// stop flag to poll. A clone is another handle on the same trial.
#[derive(Clone)]
pub struct TrainContext {
    events: mpsc::Sender<TrainEvent>,
    stop: StopFlag,
    on_step: Option<StepHook>,
}

/// Called when a trial has taken its first training step (see
/// [`TrainContext::with_step_hook`]).
pub type StepHook = Arc<dyn Fn() + Send + Sync>;

impl TrainContext {
    pub fn new(events: mpsc::Sender<TrainEvent>, stop: StopFlag) -> Self {
        Self { events, stop, on_step: None }
    }

    /// This context, with `hook` called by [`TrainContext::stepped`].
    pub fn with_step_hook(mut self, hook: StepHook) -> Self {
        self.on_step = Some(hook);
        self
    }

    /// Says the trial has taken its first training step of this attempt
    /// (call it once, after that step): by then the training holds on the
    /// device what it will hold, and the slot admission measures it.
    pub fn stepped(&self) {
        if let Some(hook) = &self.on_step {
            hook();
        }
    }

    /// Sends a metric point. Blocks while the upload channel is full (it is
    /// bounded: training waits for a slow coordinator instead of growing
    /// memory). Returns `Err(StopReason::LeaseLost)` when the daemon side is
    /// gone.
    ///
    /// A non-finite value is never sent (the coordinator refuses it): it is
    /// dropped with a warning. Report divergence with a `diverged_step` point.
    pub fn metric(&self, step: i64, epoch: u32, name: impl Into<String>, value: f64) -> Result<(), StopReason> {
        let name = name.into();
        if !value.is_finite() {
            tracing::warn!(step, metric = %name, %value, "non-finite metric value not sent");
            return Ok(());
        }
        self.send(TrainEvent::Metric(Metric { step, epoch, name, value }))
    }

    /// Says where this attempt starts (checkpoint step, or 0). Call it once,
    /// before the first metric: stored points past this step from an
    /// abandoned attempt are then replaced instead of mixed in.
    pub fn resumed(&self, step: i64) -> Result<(), StopReason> {
        self.send(TrainEvent::Resumed { step })
    }

    /// The checkpoint barrier: blocks until every metric sent so far is
    /// acknowledged as stored by the coordinator, in a batch that tells it a
    /// checkpoint at `step` follows (so it vouches for that checkpoint).
    /// Returns `false` when the daemon gave up on them (lease lost, batch
    /// refused, shutdown grace over): then write NO checkpoint, since the
    /// coordinator would not vouch for it. Call it before writing a
    /// checkpoint: a resumed attempt never re-sends what precedes its
    /// checkpoint, so those points must already be safe.
    pub fn checkpoint(&self, step: i64) -> bool {
        self.barrier(Some(step))
    }

    /// Blocks until every metric sent so far is acknowledged (no checkpoint
    /// promised); `false` when the daemon gave up on them.
    pub fn flush(&self) -> bool {
        self.barrier(None)
    }

    fn barrier(&self, checkpoint_step: Option<i64>) -> bool {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.send(TrainEvent::Barrier { checkpoint_step, ack: FlushAck(tx) }).is_err() {
            return false;
        }
        rx.recv().unwrap_or(false)
    }

    /// Reports progress (for heartbeats and `sweep watch`).
    pub fn progress(&self, epoch: u32, step: i64, loss: Option<f64>) -> Result<(), StopReason> {
        self.send(TrainEvent::Progress { epoch, step, loss })
    }

    fn send(&self, ev: TrainEvent) -> Result<(), StopReason> {
        self.events.blocking_send(ev).map_err(|_| StopReason::LeaseLost)
    }

    /// `Some(reason)` once the daemon asked the trainer to stop.
    pub fn should_stop(&self) -> Option<StopReason> {
        self.stop.reason()
    }
}

/// The final numbers of a trial.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrialSummary {
    /// SHA-256 (hex) of the dataset's files, when the trainer read a
    /// dataset (provenance).
    pub dataset_sha256: Option<String>,
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: f64,
}

/// How a trial ended, when it did not end in an error.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    Succeeded(TrialSummary),
    /// The loss became NaN or infinite: a result, not a crash.
    Diverged(TrialSummary),
    /// Stopped on request before the end; the last checkpoint is on disk.
    Stopped(StopReason),
    /// The trainer cannot train it here (an exec command's hand-back exit
    /// code): queued again without using an attempt, with this reason.
    HandBack(String),
}

/// A trial that could not be trained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrainError {
    #[error("data: {0}")]
    Data(String),
    #[error("model: {0}")]
    Model(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The device ran out of memory (CUDA's "out of memory", or the CPU
    /// allocator's). Not the trial's fault when other trainings share the
    /// device: the daemon then hands the trial back and runs fewer at once.
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    #[error("{0}")]
    Other(String),
}

impl TrainError {
    /// A libtorch error (returned, or raised as a panic by tch's
    /// non-fallible calls) as a training error: an allocation failure is
    /// [`TrainError::OutOfMemory`], anything else [`TrainError::Other`].
    pub fn from_libtorch(message: &str) -> TrainError {
        let lower = message.to_ascii_lowercase();
        // CUDA's and the CPU allocator's, and cuBLAS's and cuDNN's own.
        let oom = ["out of memory", "can't allocate memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed"];
        if oom.iter().any(|p| lower.contains(p)) {
            TrainError::OutOfMemory(message.to_owned())
        } else {
            TrainError::Other(format!("libtorch: {message}"))
        }
    }
}

/// Checks a leased spec by the core's rules and types it: the one call a
/// trainer makes at its edge ([`sweep_core::bmenet::resolve`]; no rule is
/// repeated here). A spec can arrive over the wire or from a caller that
/// skipped the grid parser. The error's kind follows the key: an
/// architecture factor is a model error, a `data.*` key a data error.
pub fn resolve(spec: &TrialSpec) -> Result<BmenetTrial, TrainError> {
    sweep_core::bmenet::resolve(spec).map_err(|e| {
        let message = e.to_string();
        match e {
            GridError::Spec { key, .. } if key.starts_with("data.") => TrainError::Data(message),
            GridError::Spec { key, .. } if sweep_core::schema().key(&key).is_some_and(|k| k.place == Place::Factor) => {
                TrainError::Model(message)
            }
            _ => TrainError::Other(message),
        }
    })
}

/// The message of a caught panic (a trainer's, or libtorch's through tch's
/// non-fallible calls).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(std::string::ToString::to_string))
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Something that trains trials on the thread it was made on.
pub trait Trainer {
    /// Device memory, in bytes, that training `jobs` as one group would
    /// take, estimated before training; 0 when unknown. The slot admission
    /// ([`crate::admission`]) corrects it by what the first trainings
    /// actually took.
    fn footprint(&self, jobs: &[(TrialJob, TrainContext)]) -> u64 {
        let _ = jobs;
        0
    }

    /// Trains one trial.
    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError>;

    /// Trains the trials of one group lease (the seeds of one cell, same
    /// settings): one result per job, in order. By default one after the
    /// other; a trainer that can fuse them trains them together.
    fn train_group(&mut self, jobs: &[(TrialJob, TrainContext)]) -> Vec<Result<TrainOutcome, TrainError>> {
        jobs.iter().map(|(job, ctx)| self.train(job, ctx)).collect()
    }
}

/// Makes a trainer on the training thread that will use it (so nothing it
/// holds needs to be `Send`); called once per slot.
pub type TrainerFactory = Arc<dyn Fn() -> Result<Box<dyn Trainer>, TrainError> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(store: &str, resume: Option<i64>, dir: PathBuf) -> TrialJob {
        let grid = sweep_core::GridSpec::parse(
            "name = \"t\"\nseeds = 1\n[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n[data]\npath = \"d\"\n",
            std::path::Path::new("t.toml"),
        )
        .expect("grid");
        TrialJob {
            trial_id: "trial-a".into(),
            spec: grid.expand().remove(0),
            attempt: 1,
            checkpoint_dir: dir,
            store_id: store.into(),
            resume_step: resume,
            keep_weights: false,
        }
    }

    #[test]
    fn resume_only_what_this_store_vouches_for() {
        let j = job("db-1", Some(32), PathBuf::from("x"));
        assert!(j.may_resume("db-1", "trial-a", 32).is_ok());
        assert!(j.may_resume("db-1", "trial-a", 16).is_ok());
        let e = j.may_resume("db-1", "trial-a", 48).unwrap_err();
        assert!(e.contains("48") && e.contains("32"), "{e}");
        let e = j.may_resume("db-2", "trial-a", 16).unwrap_err();
        assert!(e.contains("another coordinator database"), "{e}");
        assert!(j.may_resume("db-1", "trial-b", 16).is_err());
        let fresh = job("db-1", None, PathBuf::from("x"));
        let e = fresh.may_resume("db-1", "trial-a", 0).unwrap_err();
        assert!(e.contains("vouches for no checkpoint"), "{e}");
    }

    #[test]
    fn discard_keeps_only_the_final_weights_when_asked() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("trial-a");
        std::fs::create_dir_all(dir.join("ckpt-000000000016")).unwrap();
        std::fs::write(dir.join("ckpt-000000000016/weights.ot"), b"w").unwrap();
        std::fs::create_dir_all(dir.join(FINAL_DIR)).unwrap();
        std::fs::write(dir.join(FINAL_DIR).join("weights.ot"), b"f").unwrap();
        std::fs::write(dir.join("simulated.json"), b"{}").unwrap();
        discard_checkpoints(&dir, true).unwrap();
        let left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(left, vec![FINAL_DIR.to_owned()]);
        assert_eq!(std::fs::read(dir.join(FINAL_DIR).join("weights.ot")).unwrap(), b"f");
        discard_checkpoints(&dir, false).unwrap();
        assert!(!dir.exists());
        // Nothing there is not an error.
        discard_checkpoints(&dir, false).unwrap();
        discard_checkpoints(&dir, true).unwrap();
    }
}
