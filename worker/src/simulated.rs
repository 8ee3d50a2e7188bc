//! `SimulatedTrainer`: a deterministic TEST DOUBLE for orchestration tests
//! and benchmarks. It trains nothing. It produces a plausible, seed-determined
//! loss curve quickly so tests of leasing, retries, metric upload and resume
//! can run hundreds of trials in seconds. The `sweep-worker` binary only uses
//! it behind a hidden flag; it is never the product.
//!
//! It honours checkpoints like a real trainer: a JSON file per trial with the
//! last finished epoch and whose checkpoint it is, so resume-after-kill is
//! testable without libtorch.

use std::time::{Duration, Instant};

use crate::trainer::{StopReason, TrainContext, TrainError, TrainOutcome, Trainer, TrialJob, TrialSummary};

pub struct SimulatedTrainer {
    /// Sleep per simulated batch, so a trial lasts long enough to be killed.
    pub step_delay: Duration,
    /// Send one point the coordinator must refuse (step -1) right after the
    /// start, to test that a refused batch fails the trial.
    pub refused_metric: bool,
}

impl SimulatedTrainer {
    pub fn new(step_delay: Duration) -> Self {
        Self { step_delay, refused_metric: false }
    }
}

/// splitmix64: a tiny deterministic hash for seed-dependent noise.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn noise(seed: u64, step: u64) -> f64 {
    (mix(seed.wrapping_mul(1_000_003) ^ step) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// The simulated checkpoint: the last finished epoch, its global step, and
/// whose checkpoint it is (the same resume rule as the real trainer's).
#[derive(serde::Serialize, serde::Deserialize)]
struct SimCheckpoint {
    epoch: u32,
    step: i64,
    store_id: String,
    trial_id: String,
}

const SIM_FILE: &str = "simulated.json";

/// The epoch to continue after (0: start from scratch). A checkpoint this
/// trial may not resume from (see [`TrialJob::may_resume`]) is logged and
/// its folder deleted.
fn read_checkpoint(job: &TrialJob) -> Result<u32, TrainError> {
    let dir = &job.checkpoint_dir;
    let path = dir.join(SIM_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(TrainError::Checkpoint(format!("{}: {e}", path.display()))),
    };
    let verdict = match serde_json::from_str::<SimCheckpoint>(&text) {
        Err(e) => Err(format!("unreadable or older format ({e})")),
        Ok(c) => job.may_resume(&c.store_id, &c.trial_id, c.step).map(|()| c.epoch),
    };
    match verdict {
        Ok(epoch) => Ok(epoch),
        Err(why) => {
            tracing::warn!(trial = %job.trial_id, "ignoring checkpoint {}: {why}; starting from scratch", path.display());
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(TrainError::Checkpoint(format!("{}: {e}", dir.display())))
                }
                _ => Ok(0),
            }
        }
    }
}

fn write_checkpoint(job: &TrialJob, epoch: u32, step: i64) -> Result<(), TrainError> {
    let dir = &job.checkpoint_dir;
    let err = |e: std::io::Error| TrainError::Checkpoint(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join("simulated.json.tmp");
    let c = SimCheckpoint { epoch, step, store_id: job.store_id.clone(), trial_id: job.trial_id.clone() };
    std::fs::write(&tmp, serde_json::to_vec(&c).map_err(|e| TrainError::Checkpoint(e.to_string()))?).map_err(err)?;
    std::fs::rename(&tmp, dir.join(SIM_FILE)).map_err(err)
}

impl Trainer for SimulatedTrainer {
    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        let start = Instant::now();
        let s = &crate::trainer::resolve(&job.spec)?;
        let n_train = s.data.train_subset.unwrap_or(50_000).max(1);
        let steps_per_epoch = n_train.div_ceil(s.train.batch_size as u64).max(1);
        // Skips make the simulated loss fall faster, more so for deep nets;
        // batch-norm helps a little. Only the shape matters for tests.
        let depth = s.depth as f64;
        let rate = if s.skip { 1.0 } else { 8.0 / depth } * if s.batchnorm { 1.2 } else { 1.0 };
        let loss_at = |step: u64| {
            let t = step as f64 / steps_per_epoch as f64;
            2.3 * (-rate * t).exp() + 0.2 + 0.05 * noise(s.seed, step)
        };
        let cell_salt = job.spec.cell.canonical().bytes().fold(7u64, |h, b| mix(h ^ u64::from(b)));
        let first_epoch = read_checkpoint(job)? + 1;
        ctx.resumed(((first_epoch - 1) as u64 * steps_per_epoch) as i64)?;
        if self.refused_metric {
            ctx.metric(-1, first_epoch, "train_loss", 1.0)?;
        }
        let mut summary = TrialSummary::default();
        let mut window = Vec::new();
        for epoch in first_epoch..=s.train.epochs {
            for b in 0..steps_per_epoch {
                if let Some(reason) = ctx.should_stop() {
                    // Like the real trainer, which checkpoints where it
                    // stopped: wait for the acknowledgement of every point
                    // (the shutdown grace bounds this wait).
                    if reason.keeps_checkpoint() {
                        let done = (epoch as u64 - 1) * steps_per_epoch + b;
                        ctx.checkpoint(done as i64);
                    }
                    return Ok(TrainOutcome::Stopped(reason));
                }
                if !self.step_delay.is_zero() {
                    std::thread::sleep(self.step_delay);
                }
                if epoch == first_epoch && b == 0 {
                    ctx.stepped();
                }
                let step = (epoch as u64 - 1) * steps_per_epoch + b + 1;
                window.push(loss_at(step));
                if window.len() as u64 >= s.train.log_every as u64 || b + 1 == steps_per_epoch {
                    let mean = window.iter().sum::<f64>() / window.len() as f64;
                    window.clear();
                    ctx.metric(step as i64, epoch, "train_loss", mean)?;
                    // Gradient norms per layer group, input to output, like
                    // the torch trainer's: without skips they shrink towards
                    // the input (vanishing gradients), and all fall in time.
                    let groups = 4 * (s.depth / 8) + 6;
                    for g in 0..groups {
                        let name = match g {
                            0 => "stem".to_string(),
                            g if g == groups - 2 => "fc1".to_string(),
                            g if g == groups - 1 => "fc2".to_string(),
                            g => format!("block{g:02}"),
                        };
                        let decay = if s.skip { 0.02 } else { 0.2 } * (groups - 1 - g) as f64;
                        let v =
                            0.5 * (-decay).exp() * (0.3 + 0.7 * (-rate * step as f64 / steps_per_epoch as f64).exp());
                        ctx.metric(
                            step as i64,
                            epoch,
                            format!("grad_norm/{name}"),
                            v * (1.0 + 0.1 * noise(s.seed ^ g as u64, step)),
                        )?;
                    }
                    ctx.progress(epoch, step as i64, Some(mean))?;
                    summary.final_train_loss = Some(mean);
                }
            }
            let step = (epoch as u64 * steps_per_epoch) as i64;
            // Each cell draws its own accuracy noise, so two cells that
            // learn alike differ by noise, not by exactly 0.
            let acc =
                (0.1 + 0.8 * (1.0 - (-rate * epoch as f64).exp()) + 0.02 * noise(s.seed ^ cell_salt, epoch as u64))
                    .clamp(0.0, 1.0);
            let test_loss = loss_at(step as u64) + 0.1;
            ctx.metric(step, epoch, "test_accuracy", acc)?;
            ctx.metric(step, epoch, "test_loss", test_loss)?;
            summary.final_test_accuracy = Some(acc);
            summary.final_test_loss = Some(test_loss);
            summary.best_test_accuracy = Some(summary.best_test_accuracy.map_or(acc, |b: f64| b.max(acc)));
            // Like a real trainer: checkpoint only once this epoch's points
            // are acknowledged, since a resumed attempt will not redo them.
            if !ctx.checkpoint(step) {
                return Ok(TrainOutcome::Stopped(ctx.should_stop().unwrap_or(StopReason::LeaseLost)));
            }
            if let Some(reason) = ctx.should_stop() {
                if reason.keeps_checkpoint() {
                    write_checkpoint(job, epoch, step)?;
                }
                return Ok(TrainOutcome::Stopped(reason));
            }
            write_checkpoint(job, epoch, step)?;
        }
        summary.wall_seconds = start.elapsed().as_secs_f64();
        Ok(TrainOutcome::Succeeded(summary))
    }
}

impl From<crate::trainer::StopReason> for TrainError {
    fn from(r: crate::trainer::StopReason) -> Self {
        TrainError::Other(format!("stopped: {r:?}"))
    }
}
