//! The exec trainer: a trial is one run of the grid's command
//! (`[trainer] kind = "exec"`, [`sweep_core::exec`]).
//!
//! The command gets its trial three ways: a JSON file
//! (`SWEEP_TRIAL_CONFIG`), environment variables (`SWEEP_FACTOR_<NAME>`,
//! `SWEEP_SETTING_<NAME>`, `SWEEP_SEED`, ...) and `{name}` placeholders in
//! `args`. It writes metrics as JSON lines to a Unix socket
//! (`SWEEP_METRICS_SOCKET`, [`protocol`]); its stdout and stderr go to the
//! trial's log ([`crate::trial_log`]). A stop (shutdown, cancel, lost
//! lease), a timeout or a divergence sends SIGTERM to its process group,
//! and SIGKILL once the stop grace is over. Exit 0 is success,
//! [`HAND_BACK_EXIT_CODE`] hands the trial back, anything else fails the
//! attempt with the log's last lines.

mod environment;
mod process;
pub mod protocol;
mod socket;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sweep_core::exec::{level_text, ExecSpec, HAND_BACK_EXIT_CODE};
use sweep_core::TrainerSpec;

use crate::trainer::{StopReason, TrainContext, TrainError, TrainOutcome, Trainer, TrialJob, TrialSummary};
use crate::trial_log::{self, TrialLog};
use process::{Child, Launch};
use protocol::Message;
use socket::Incoming;

/// How an exec trainer runs commands on this worker.
#[derive(Debug, Clone)]
pub struct ExecTrainer {
    /// The worker's checkpoint root (trial logs go under it).
    pub checkpoint_root: PathBuf,
    /// The worker's `--device`, given as `SWEEP_DEVICE`.
    pub device: String,
    /// The worker's `--data-root`: replaces a trial's `data.path` in
    /// `SWEEP_DATA_DIR`, as it does for BMEnet.
    pub data_root: Option<PathBuf>,
    /// From SIGTERM to SIGKILL.
    pub stop_grace: Duration,
    /// Whether this worker runs commands at all (`--allow-exec`): an exec
    /// trial runs whatever its grid names, so a client token becomes code
    /// execution on the worker.
    pub allowed: bool,
}

/// Why the worker asked the command to stop.
#[derive(Debug, Clone, Copy)]
enum Stopping {
    Asked(StopReason),
    Diverged,
    TimedOut(u64),
    /// Not asked: the command exited (its last lines are being read).
    Exited,
}

impl Stopping {
    /// Whether a checkpoint asked for now may still be vouched for.
    fn allows_checkpoint(self) -> bool {
        matches!(self, Stopping::Asked(r) if r.keeps_checkpoint())
    }
}

/// What a handled line asks of the run loop.
enum Handled {
    Go,
    Stop(Stopping),
    CheckpointWhileStopping,
}

/// The most of the log quoted in a failure.
const FAILURE_TAIL_BYTES: usize = 2000;
/// How many bad lines are quoted in the log (all are counted).
const BAD_LINES_QUOTED: u64 = 5;

impl ExecTrainer {
    fn run(&self, job: &TrialJob, spec: &ExecSpec, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        fn io(what: &'static str) -> impl Fn(std::io::Error) -> TrainError {
            move |e| TrainError::Other(format!("{what}: {e}"))
        }
        if !self.allowed {
            return Err(TrainError::Other(
                "this worker does not run training commands (exec trials): start it with --allow-exec to let \
                 anyone holding a client token run commands on it"
                    .into(),
            ));
        }
        if let Some(reason) = ctx.should_stop() {
            return Ok(TrainOutcome::Stopped(reason));
        }
        let started = Instant::now();
        let checkpoint_dir = std::path::absolute(&job.checkpoint_dir).map_err(io("checkpoint folder"))?;
        let log = TrialLog::open(&self.checkpoint_root, &job.trial_id).map_err(io("trial log"))?;
        let log = Arc::new(Mutex::new(log));
        let resume = resume_step(job, &checkpoint_dir, &log).map_err(io("checkpoint folder"))?;
        let args = spec.args_for(job.spec.seed, |n| job.spec.level(n).map(level_text));
        note(&log, &format!("attempt {}: {:?} {:?} (resume step {resume:?})", job.attempt, spec.command, args));

        let scratch = tempfile::Builder::new().prefix("sweep-trial-").tempdir().map_err(io("scratch folder"))?;
        let config_path = scratch.path().join("trial.json");
        std::fs::write(&config_path, environment::config_json(job, &checkpoint_dir, resume))
            .map_err(io("trial config"))?;
        let socket_path = scratch.path().join("metrics.sock");
        let listener = UnixListener::bind(&socket_path).map_err(io("metrics socket"))?;
        listener.set_nonblocking(true).map_err(io("metrics socket"))?;

        ctx.resumed(resume.unwrap_or(0)).map_err(|_| TrainError::Other("the worker gave up".into()))?;
        let place = environment::Place {
            checkpoint_dir: &checkpoint_dir,
            config: &config_path,
            socket: &socket_path,
            data_root: self.data_root.as_deref(),
        };
        let env = environment::environment(job, spec, &place, resume, &self.device);
        let launch = Launch {
            program: &spec.command[0],
            args: &[&spec.command[1..], &args[..]].concat(),
            env: &env,
            workdir: spec.workdir.as_deref(),
        };
        let mut child = Child::spawn(&launch, &log).map_err(|m| {
            note(&log, &m);
            TrainError::Other(m)
        })?;

        // The reader stops however this function ends.
        let done = Done(Arc::new(AtomicBool::new(false)));
        let (tx, rx) = mpsc::sync_channel(64);
        let reader = {
            let done = Arc::clone(&done.0);
            std::thread::Builder::new()
                .name("exec-metrics".into())
                .spawn(move || socket::serve(&listener, &tx, &done))
                .map_err(|e| TrainError::Other(format!("cannot start the metrics reader: {e}")))?
        };

        let mut run = Run::new(ctx, &log, &checkpoint_dir, resume.unwrap_or(0));
        let mut stopping: Option<(Instant, Stopping)> = None;
        let mut killed = false;
        let status = loop {
            if let Ok(incoming) = rx.recv_timeout(Duration::from_millis(100)) {
                match run.handle(incoming, stopping.map(|(_, w)| w)) {
                    Handled::Go => {}
                    Handled::Stop(why) => {
                        stopping.get_or_insert_with(|| {
                            note(&log, &format!("stopping the command ({why:?}): SIGTERM"));
                            child.signal(Signal::SIGTERM);
                            (Instant::now(), why)
                        });
                    }
                    // A checkpoint after SIGTERM: its writing gets the
                    // whole grace again.
                    Handled::CheckpointWhileStopping => {
                        if let Some((since, _)) = &mut stopping {
                            *since = Instant::now();
                        }
                    }
                }
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(TrainError::Other(format!("cannot wait for the command: {e}"))),
            }
            match stopping {
                None => {
                    let why = match (ctx.should_stop(), spec.timeout_secs) {
                        (Some(r), _) => Some(Stopping::Asked(r)),
                        (None, Some(t)) if started.elapsed() >= Duration::from_secs(t) => Some(Stopping::TimedOut(t)),
                        _ => None,
                    };
                    if let Some(why) = why {
                        note(&log, &format!("stopping the command ({why:?}): SIGTERM"));
                        child.signal(Signal::SIGTERM);
                        stopping = Some((Instant::now(), why));
                    }
                }
                Some((since, _)) if !killed && since.elapsed() >= self.stop_grace => {
                    note(&log, &format!("the command did not stop within {:?}: SIGKILL", self.stop_grace));
                    child.signal(Signal::SIGKILL);
                    killed = true;
                }
                Some(_) => {}
            }
        };
        child.drain_output(Duration::from_secs(2));
        // Whatever the command wrote before it exited is still read (for
        // at most 5 s; then the readers are cut off).
        done.0.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(incoming) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Handled::Stop(why) = run.handle(incoming, Some(Stopping::Exited)) {
                stopping.get_or_insert((Instant::now(), why));
            }
        }
        drop(rx);
        let _ = reader.join();
        note(&log, &format!("the command exited: {status}"));
        run.report_bad_lines();

        let tail = || trial_log::tail(&self.checkpoint_root, &job.trial_id, FAILURE_TAIL_BYTES).unwrap_or_default();
        match stopping.map(|(_, why)| why) {
            Some(Stopping::Asked(reason)) => Ok(TrainOutcome::Stopped(reason)),
            Some(Stopping::Diverged) => Ok(TrainOutcome::Diverged(run.summary(started))),
            Some(Stopping::TimedOut(t)) => Err(TrainError::Other(format!(
                "the command ran past its timeout ({t} s) and was stopped; its last output:\n{}",
                tail()
            ))),
            Some(Stopping::Exited) | None => match status.code() {
                Some(0) => {
                    run.send_finals();
                    Ok(TrainOutcome::Succeeded(run.summary(started)))
                }
                Some(HAND_BACK_EXIT_CODE) => Ok(TrainOutcome::HandBack(format!(
                    "the command exited with {HAND_BACK_EXIT_CODE} (hand back): queued again without using an attempt"
                ))),
                _ => Err(TrainError::Other(format!("the command failed ({status}); its last output:\n{}", tail()))),
            },
        }
    }
}

/// Sets the reader's stop flag when dropped.
struct Done(Arc<AtomicBool>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The file in a trial's checkpoint folder that says which coordinator
/// database its checkpoints were written for.
const STORE_MARK: &str = ".sweep-store";
/// The file that holds the newest step the command said it wrote
/// (`{"checkpointed": N}`).
const WRITTEN_MARK: &str = ".sweep-checkpointed";

fn write_confirmed(dir: &Path, step: i64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{WRITTEN_MARK}.tmp"));
    std::fs::write(&tmp, step.to_string())?;
    std::fs::rename(&tmp, dir.join(WRITTEN_MARK))
}

/// The step the command may resume from: the newest one it wrote here
/// for this database, when the coordinator vouches for it or a later one
/// (points after it are then stored again). Otherwise it starts over and
/// the folder is emptied (another machine's trial, another database's
/// run, or a checkpoint killed while being written). Marks the folder as
/// this database's.
fn resume_step(job: &TrialJob, dir: &Path, log: &Mutex<TrialLog>) -> std::io::Result<Option<i64>> {
    std::fs::create_dir_all(dir)?;
    let mark = dir.join(STORE_MARK);
    let ours = std::fs::read_to_string(&mark).is_ok_and(|s| s.trim() == job.store_id);
    let written: Option<i64> = std::fs::read_to_string(dir.join(WRITTEN_MARK)).ok().and_then(|s| s.trim().parse().ok());
    let holds_checkpoints = std::fs::read_dir(dir)?.flatten().any(|e| e.file_name() != STORE_MARK);
    let resume = match (job.resume_step, written) {
        (Some(vouched), Some(w)) if ours && w <= vouched => Some(w),
        (Some(vouched), _) => {
            note(
                log,
                &format!(
                    "the coordinator vouches for step {vouched}, but this worker has no written checkpoint of this \
                     trial for it: starting over"
                ),
            );
            None
        }
        (None, _) => None,
    };
    if resume.is_none() && holds_checkpoints {
        crate::trainer::discard_checkpoints(dir, false)?;
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&mark, &job.store_id)?;
    Ok(resume)
}

impl Trainer for ExecTrainer {
    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        match &job.spec.trainer {
            TrainerSpec::Exec(spec) => self.run(job, spec, ctx),
            other => Err(TrainError::Other(format!("the exec trainer was given a {} trial", other.kind()))),
        }
    }
}

/// A worker's trainer: exec trials to the [`ExecTrainer`], the others to
/// the built-in one.
pub struct WithExec {
    pub exec: ExecTrainer,
    pub builtin: Box<dyn Trainer>,
}

fn is_exec(job: &TrialJob) -> bool {
    matches!(job.spec.trainer, TrainerSpec::Exec(_))
}

impl Trainer for WithExec {
    fn footprint(&self, jobs: &[(TrialJob, TrainContext)]) -> u64 {
        if jobs.iter().any(|(j, _)| is_exec(j)) {
            0
        } else {
            self.builtin.footprint(jobs)
        }
    }

    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        if is_exec(job) {
            self.exec.train(job, ctx)
        } else {
            self.builtin.train(job, ctx)
        }
    }

    fn train_group(&mut self, jobs: &[(TrialJob, TrainContext)]) -> Vec<Result<TrainOutcome, TrainError>> {
        // A group is one cell's seeds: one trainer for all of them.
        if jobs.iter().any(|(j, _)| is_exec(j)) {
            jobs.iter().map(|(job, ctx)| self.exec.train(job, ctx)).collect()
        } else {
            self.builtin.train_group(jobs)
        }
    }
}

/// The most distinct metric names one run may log (and final values it
/// may report); more are bad lines.
const MAX_NAMES: usize = 1024;

/// What one run has heard from its command.
struct Run<'a> {
    ctx: &'a TrainContext,
    log: &'a Mutex<TrialLog>,
    checkpoint_dir: &'a Path,
    /// The newest checkpoint step answered `ok`.
    vouched: Option<i64>,
    step: i64,
    epoch: u32,
    last: BTreeMap<String, f64>,
    best_test_accuracy: Option<f64>,
    finals: BTreeMap<String, f64>,
    bad_lines: u64,
}

impl<'a> Run<'a> {
    /// A run that starts at `step` (its resume step, or 0).
    fn new(ctx: &'a TrainContext, log: &'a Mutex<TrialLog>, checkpoint_dir: &'a Path, step: i64) -> Self {
        Run {
            ctx,
            log,
            checkpoint_dir,
            vouched: None,
            step,
            epoch: 0,
            last: BTreeMap::new(),
            best_test_accuracy: None,
            finals: BTreeMap::new(),
            bad_lines: 0,
        }
    }

    fn bad(&mut self, why: &str) -> Handled {
        self.bad_lines += 1;
        if self.bad_lines <= BAD_LINES_QUOTED {
            note(self.log, &format!("bad metric line (skipped): {why}"));
        }
        Handled::Go
    }

    /// Handles one line (`stopping`: why the command was asked to stop,
    /// if it was).
    fn handle(&mut self, incoming: Incoming, stopping: Option<Stopping>) -> Handled {
        let message = match incoming.line {
            Ok(m) => m,
            Err(why) => return self.bad(&why),
        };
        match message {
            Message::Point { step, epoch, values } => {
                let new_names = values.iter().filter(|(n, _)| !self.last.contains_key(n)).count();
                if self.last.len() + new_names > MAX_NAMES {
                    return self.bad(&format!("more than {MAX_NAMES} distinct metric names"));
                }
                self.step = step.unwrap_or(self.step);
                self.epoch = epoch.unwrap_or(self.epoch);
                for (name, value) in values {
                    if !value.is_finite() {
                        return self.diverged(&name, value);
                    }
                    if name == "test_accuracy" {
                        self.best_test_accuracy = Some(self.best_test_accuracy.map_or(value, |b| b.max(value)));
                    }
                    if self.ctx.metric(self.step, self.epoch, name.as_str(), value).is_err() {
                        return Handled::Stop(Stopping::Asked(StopReason::LeaseLost));
                    }
                    self.last.insert(name, value);
                }
                let loss = self.last.get("train_loss").or_else(|| self.last.get("loss")).copied();
                if self.ctx.progress(self.epoch.max(1), self.step, loss).is_err() {
                    return Handled::Stop(Stopping::Asked(StopReason::LeaseLost));
                }
                Handled::Go
            }
            Message::Final(values) => {
                let new_names = values.iter().filter(|(n, _)| !self.finals.contains_key(n)).count();
                if self.finals.len() + new_names > MAX_NAMES {
                    return self.bad(&format!("more than {MAX_NAMES} final values"));
                }
                for (name, value) in values {
                    if !value.is_finite() {
                        return self.diverged(&name, value);
                    }
                    self.finals.insert(name, value);
                }
                Handled::Go
            }
            Message::Checkpointed(step) => {
                // Written: the newest step vouched for and on disk is what a
                // later attempt here resumes from.
                if self.vouched.is_some_and(|v| v >= step) {
                    if let Err(e) = write_confirmed(self.checkpoint_dir, step) {
                        note(self.log, &format!("cannot record checkpoint {step} as written: {e}"));
                    }
                } else {
                    return self.bad(&format!("checkpointed {step}: no `checkpoint` request for it was answered ok"));
                }
                Handled::Go
            }
            Message::Checkpoint(step) => {
                // Points before a checkpoint must be stored before it is
                // written: the next attempt does not send them again. After
                // SIGTERM, only a stop that keeps checkpoints (shutdown,
                // cancel) still gets one.
                let allowed = stopping.is_none_or(Stopping::allows_checkpoint);
                let ok = allowed && self.ctx.checkpoint(step);
                if ok {
                    self.vouched = Some(step);
                }
                if let Some(mut s) = incoming.reply {
                    let _ = s.write_all(if ok { b"ok\n" } else { b"stop\n" });
                }
                match (ok, stopping) {
                    (true, Some(_)) => Handled::CheckpointWhileStopping,
                    _ => Handled::Go,
                }
            }
        }
    }

    fn diverged(&mut self, name: &str, value: f64) -> Handled {
        note(self.log, &format!("{name} = {value} at step {}: the trial diverged", self.step));
        let _ = self.ctx.metric(self.step, self.epoch, "diverged_step", self.step as f64);
        Handled::Stop(Stopping::Diverged)
    }

    fn report_bad_lines(&self) {
        if self.bad_lines > 0 {
            note(self.log, &format!("{} bad metric line(s) skipped", self.bad_lines));
            let _ = self.ctx.metric(self.step, self.epoch, "exec/bad_lines", self.bad_lines as f64);
        }
    }

    /// The final values as `final/<name>` points (what `sweep report
    /// --metric NAME` reads) at the last step.
    fn send_finals(&self) {
        for (name, value) in &self.finals {
            let _ = self.ctx.metric(self.step, self.epoch, format!("final/{name}"), *value);
        }
    }

    /// The result: the final values, else the last logged ones. Only
    /// values in the built-in result's domains fill it (a negative "loss"
    /// stays a final value, reported by name).
    fn summary(&self, started: Instant) -> TrialSummary {
        let value = |name: &str| self.finals.get(name).or_else(|| self.last.get(name)).copied();
        let loss = |name: &str| value(name).filter(|x| x.is_finite() && *x >= 0.0);
        let final_test_accuracy = value("test_accuracy");
        TrialSummary {
            dataset_sha256: None,
            final_train_loss: loss("train_loss").or_else(|| loss("loss")),
            final_test_loss: loss("test_loss"),
            final_test_accuracy,
            best_test_accuracy: match (self.best_test_accuracy, final_test_accuracy) {
                (Some(b), Some(f)) => Some(b.max(f)),
                (b, f) => b.or(f),
            },
            wall_seconds: started.elapsed().as_secs_f64(),
        }
    }
}

fn note(log: &Mutex<TrialLog>, text: &str) {
    if let Ok(mut l) = log.lock() {
        if let Err(e) = l.note(text) {
            tracing::warn!("cannot write the trial's log: {e}");
        }
    }
}
