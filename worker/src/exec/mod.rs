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

mod process;
pub mod protocol;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
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

/// How an exec trainer runs commands on this worker.
#[derive(Debug, Clone)]
pub struct ExecTrainer {
    /// The worker's checkpoint root (trial logs go under it).
    pub checkpoint_root: PathBuf,
    /// The worker's `--device`, given as `SWEEP_DEVICE`.
    pub device: String,
    /// From SIGTERM to SIGKILL.
    pub stop_grace: Duration,
}

/// Why the worker asked the command to stop.
#[derive(Debug, Clone, Copy)]
enum Stopping {
    Asked(StopReason),
    Diverged,
    TimedOut(u64),
}

/// What the socket reader hands the training thread: a line (understood,
/// or why not) and, for a checkpoint request, where to answer.
struct Incoming {
    line: Result<Message, String>,
    reply: Option<UnixStream>,
}

/// The most of the log quoted in a failure.
const FAILURE_TAIL_BYTES: usize = 2000;
/// How many bad lines are quoted in the log (all are counted).
const BAD_LINES_QUOTED: u64 = 5;

impl ExecTrainer {
    fn run(&self, job: &TrialJob, spec: &ExecSpec, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        let started = Instant::now();
        fn io(what: &'static str) -> impl Fn(std::io::Error) -> TrainError {
            move |e| TrainError::Other(format!("{what}: {e}"))
        }
        let checkpoint_dir = std::path::absolute(&job.checkpoint_dir).map_err(io("checkpoint folder"))?;
        std::fs::create_dir_all(&checkpoint_dir).map_err(io("checkpoint folder"))?;
        let log = TrialLog::open(&self.checkpoint_root, &job.trial_id).map_err(io("trial log"))?;
        let log = Arc::new(Mutex::new(log));
        let args = spec.args_for(job.spec.seed, |n| job.spec.level(n).map(level_text));
        note(&log, &format!("attempt {}: {:?} {:?}", job.attempt, spec.command, args));

        let scratch = tempfile::Builder::new().prefix("sweep-trial-").tempdir().map_err(io("scratch folder"))?;
        let config_path = scratch.path().join("trial.json");
        std::fs::write(&config_path, config_json(job, &checkpoint_dir)).map_err(io("trial config"))?;
        let socket_path = scratch.path().join("metrics.sock");
        let listener = UnixListener::bind(&socket_path).map_err(io("metrics socket"))?;
        listener.set_nonblocking(true).map_err(io("metrics socket"))?;

        ctx.resumed(job.resume_step.unwrap_or(0)).map_err(|_| TrainError::Other("the worker gave up".into()))?;
        let env = environment(job, spec, &checkpoint_dir, &config_path, &socket_path, &self.device);
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

        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel(64);
        let reader = {
            let done = Arc::clone(&done);
            std::thread::Builder::new()
                .name("exec-metrics".into())
                .spawn(move || read_socket(&listener, &tx, &done))
                .map_err(|e| TrainError::Other(format!("cannot start the metrics reader: {e}")))?
        };

        let mut run = Run::new(ctx, &log);
        let mut stopping: Option<(Instant, Stopping)> = None;
        let mut killed = false;
        let status = loop {
            if let Ok(incoming) = rx.recv_timeout(Duration::from_millis(100)) {
                if let Some(why) = run.handle(incoming, stopping.is_some()) {
                    stopping.get_or_insert_with(|| {
                        child.signal(Signal::SIGTERM);
                        (Instant::now(), why)
                    });
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
        // Whatever the command wrote before it exited is still read.
        done.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(incoming) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Some(why) = run.handle(incoming, true) {
                stopping.get_or_insert((Instant::now(), why));
            }
        }
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
            None => match status.code() {
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

/// What one run has heard from its command.
struct Run<'a> {
    ctx: &'a TrainContext,
    log: &'a Mutex<TrialLog>,
    step: i64,
    epoch: u32,
    last: std::collections::BTreeMap<String, f64>,
    best_test_accuracy: Option<f64>,
    finals: Vec<(String, f64)>,
    bad_lines: u64,
}

impl<'a> Run<'a> {
    fn new(ctx: &'a TrainContext, log: &'a Mutex<TrialLog>) -> Self {
        Run {
            ctx,
            log,
            step: 0,
            epoch: 0,
            last: Default::default(),
            best_test_accuracy: None,
            finals: Vec::new(),
            bad_lines: 0,
        }
    }

    /// Handles one line; `Some` when the command must be stopped.
    fn handle(&mut self, incoming: Incoming, stopping: bool) -> Option<Stopping> {
        let message = match incoming.line {
            Ok(m) => m,
            Err(why) => {
                self.bad_lines += 1;
                if self.bad_lines <= BAD_LINES_QUOTED {
                    note(self.log, &format!("bad metric line (skipped): {why}"));
                }
                return None;
            }
        };
        match message {
            Message::Point { step, epoch, values } => {
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
                        return Some(Stopping::Asked(StopReason::LeaseLost));
                    }
                    self.last.insert(name, value);
                }
                let loss = self.last.get("train_loss").or_else(|| self.last.get("loss")).copied();
                if self.ctx.progress(self.epoch.max(1), self.step, loss).is_err() {
                    return Some(Stopping::Asked(StopReason::LeaseLost));
                }
                None
            }
            Message::Final(values) => {
                for (name, value) in values {
                    if !value.is_finite() {
                        return self.diverged(&name, value);
                    }
                    self.finals.retain(|(n, _)| *n != name);
                    self.finals.push((name, value));
                }
                None
            }
            Message::Checkpoint(step) => {
                // Points before a checkpoint must be stored before it is
                // written: the next attempt does not send them again.
                let ok = !stopping && self.ctx.checkpoint(step);
                if let Some(mut s) = incoming.reply {
                    let _ = s.write_all(if ok { b"ok\n" } else { b"stop\n" });
                }
                None
            }
        }
    }

    fn diverged(&mut self, name: &str, value: f64) -> Option<Stopping> {
        note(self.log, &format!("{name} = {value} at step {}: the trial diverged", self.step));
        let _ = self.ctx.metric(self.step, self.epoch, "diverged_step", self.step as f64);
        Some(Stopping::Diverged)
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

    /// The result: the final values, else the last logged ones.
    fn summary(&self, started: Instant) -> TrialSummary {
        let value = |name: &str| {
            self.finals.iter().find(|(n, _)| n == name).map(|(_, v)| *v).or_else(|| self.last.get(name).copied())
        };
        let final_test_accuracy = value("test_accuracy");
        TrialSummary {
            dataset_sha256: None,
            final_train_loss: value("train_loss").or_else(|| value("loss")),
            final_test_loss: value("test_loss"),
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

/// Accepts connections on the metrics socket (one at a time; a command may
/// reconnect) and hands their lines over, until `done` and the current
/// connection has nothing more.
fn read_socket(listener: &UnixListener, tx: &mpsc::SyncSender<Incoming>, done: &AtomicBool) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if read_connection(stream, tx, done).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!("metrics socket: {e}");
                return;
            }
        }
    }
}

/// `Err` when the training thread stopped listening.
fn read_connection(stream: UnixStream, tx: &mpsc::SyncSender<Incoming>, done: &AtomicBool) -> Result<(), ()> {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(Duration::from_millis(200))).is_err() {
        return Ok(());
    }
    let reply = stream.try_clone().ok();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        match (&mut reader).take(protocol::MAX_LINE_BYTES as u64 + 1 - line.len() as u64).read_until(b'\n', &mut line) {
            Ok(0) if line.is_empty() => return Ok(()),
            Ok(_) if !line.ends_with(b"\n") && line.len() <= protocol::MAX_LINE_BYTES => {
                // End of stream after a last line without its newline, or
                // a read cut short: wait for more unless the stream ended.
                if reader.fill_buf().map_or(true, <[u8]>::is_empty) && !line.is_empty() {
                    send_line(&line, too_long, &reply, tx)?;
                    return Ok(());
                }
            }
            Ok(_) if !line.ends_with(b"\n") => {
                // Longer than a line may be: skip to its end.
                too_long = true;
                line.clear();
            }
            Ok(_) => {
                line.pop();
                send_line(&line, too_long, &reply, tx)?;
                too_long = false;
                line.clear();
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if done.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
            Err(_) => return Ok(()),
        }
    }
}

fn send_line(
    line: &[u8],
    too_long: bool,
    reply: &Option<UnixStream>,
    tx: &mpsc::SyncSender<Incoming>,
) -> Result<(), ()> {
    let parsed = if too_long {
        Err(format!("longer than {} bytes", protocol::MAX_LINE_BYTES))
    } else {
        match std::str::from_utf8(line) {
            Ok(text) if text.trim().is_empty() => return Ok(()),
            Ok(text) => protocol::parse(text),
            Err(_) => Err("not UTF-8".into()),
        }
    };
    let reply = match parsed {
        Ok(Message::Checkpoint(_)) => reply.as_ref().and_then(|s| s.try_clone().ok()),
        _ => None,
    };
    tx.send(Incoming { line: parsed, reply }).map_err(|_| ())
}

/// The trial as JSON (`SWEEP_TRIAL_CONFIG`).
fn config_json(job: &TrialJob, checkpoint_dir: &Path) -> String {
    let mut config = serde_json::Map::new();
    for (k, v) in job.spec.train.iter().chain(job.spec.cell.iter()) {
        config.insert(k.clone(), serde_json::to_value(v).unwrap_or_default());
    }
    let data = (!job.spec.data.is_none()).then_some(&job.spec.data);
    serde_json::json!({
        "trial_id": job.trial_id,
        "attempt": job.attempt,
        "seed": job.spec.seed,
        "factors": job.spec.cell,
        "settings": job.spec.train,
        "config": config,
        "data": data,
        "checkpoint_dir": checkpoint_dir,
        "resume_step": job.resume_step,
    })
    .to_string()
}

/// The command's environment: the worker's, the grid's `env`, and the
/// trial's `SWEEP_*` variables (which win).
fn environment(
    job: &TrialJob,
    spec: &ExecSpec,
    checkpoint_dir: &Path,
    config: &Path,
    socket: &Path,
    device: &str,
) -> Vec<(String, String)> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("SWEEP_TRIAL_ID".into(), job.trial_id.clone()),
        ("SWEEP_ATTEMPT".into(), job.attempt.to_string()),
        ("SWEEP_SEED".into(), job.spec.seed.to_string()),
        ("SWEEP_TRIAL_CONFIG".into(), path(config)),
        ("SWEEP_METRICS_SOCKET".into(), path(socket)),
        ("SWEEP_CHECKPOINT_DIR".into(), path(checkpoint_dir)),
        ("SWEEP_DEVICE".into(), device.to_owned()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ]);
    if let Some(step) = job.resume_step {
        env.push(("SWEEP_RESUME_STEP".into(), step.to_string()));
    }
    if !job.spec.data.is_none() {
        env.push(("SWEEP_DATA_DIR".into(), path(&job.spec.data.path)));
    }
    for (prefix, levels) in [("SWEEP_FACTOR_", &job.spec.cell.0), ("SWEEP_SETTING_", &job.spec.train)] {
        for (k, v) in levels {
            env.push((format!("{prefix}{}", k.to_ascii_uppercase()), level_text(v)));
        }
    }
    env
}
