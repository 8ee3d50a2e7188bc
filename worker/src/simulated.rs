//! `SimulatedTrainer`: a deterministic TEST DOUBLE for orchestration tests
//! and benchmarks. It trains nothing. It produces a plausible, seed-determined
//! loss curve quickly so tests of leasing, retries, metric upload and resume
//! can run hundreds of trials in seconds. The `sweep-worker` binary only uses
//! it behind a hidden flag; it is never the product.
//!
//! It honours checkpoints like a real trainer: a JSON file per trial with the
//! last finished epoch, so resume-after-kill is testable without libtorch.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::trainer::{Summary, TrainContext, TrainError, TrainOutcome, Trainer, TrialJob};

pub struct SimulatedTrainer {
    /// Sleep per simulated batch, so a trial lasts long enough to be killed.
    pub step_delay: Duration,
}

impl SimulatedTrainer {
    pub fn new(step_delay: Duration) -> Self {
        Self { step_delay }
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

fn read_checkpoint(dir: &Path) -> Result<u32, TrainError> {
    match std::fs::read_to_string(dir.join("simulated.json")) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(TrainError::Checkpoint(format!("{}: {e}", dir.display()))),
    }
}

fn write_checkpoint(dir: &Path, epoch: u32) -> Result<(), TrainError> {
    let err = |e: std::io::Error| TrainError::Checkpoint(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join("simulated.json.tmp");
    std::fs::write(&tmp, epoch.to_string()).map_err(err)?;
    std::fs::rename(&tmp, dir.join("simulated.json")).map_err(err)
}

impl Trainer for SimulatedTrainer {
    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        let start = Instant::now();
        let s = &job.spec;
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
        let first_epoch = read_checkpoint(&job.checkpoint_dir)? + 1;
        ctx.resumed(((first_epoch - 1) as u64 * steps_per_epoch) as i64)?;
        let mut summary = Summary::default();
        let mut window = Vec::new();
        for epoch in first_epoch..=s.train.epochs {
            for b in 0..steps_per_epoch {
                if let Some(reason) = ctx.should_stop() {
                    return Ok(TrainOutcome::Stopped(reason));
                }
                if !self.step_delay.is_zero() {
                    std::thread::sleep(self.step_delay);
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
                        let v = 0.5 * (-decay).exp() * (0.3 + 0.7 * (-rate * step as f64 / steps_per_epoch as f64).exp());
                        ctx.metric(step as i64, epoch, format!("grad_norm/{name}"), v * (1.0 + 0.1 * noise(s.seed ^ g as u64, step)))?;
                    }
                    ctx.progress(epoch, step as i64, Some(mean))?;
                    summary.final_train_loss = Some(mean);
                }
            }
            let step = (epoch as u64 * steps_per_epoch) as i64;
            let acc = (0.1 + 0.8 * (1.0 - (-rate * epoch as f64).exp()) + 0.02 * noise(s.seed ^ 7, epoch as u64)).clamp(0.0, 1.0);
            let test_loss = loss_at(step as u64) + 0.1;
            ctx.metric(step, epoch, "test_accuracy", acc)?;
            ctx.metric(step, epoch, "test_loss", test_loss)?;
            summary.final_test_accuracy = Some(acc);
            summary.final_test_loss = Some(test_loss);
            summary.best_test_accuracy = Some(summary.best_test_accuracy.map_or(acc, |b: f64| b.max(acc)));
            // Like a real trainer: checkpoint only once this epoch's points
            // are acknowledged, since a resumed attempt will not redo them.
            ctx.flush();
            if let Some(reason) = ctx.should_stop() {
                return Ok(TrainOutcome::Stopped(reason));
            }
            write_checkpoint(&job.checkpoint_dir, epoch)?;
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
