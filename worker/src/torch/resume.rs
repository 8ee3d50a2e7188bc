//! The mapping between a training run and its checkpoints: what the loop's
//! position ([`Position`]) becomes on disk ([`CheckpointMeta`] plus the
//! weights and optimiser state), and back on resume.
//!
//! A checkpoint is resumed only when [`TrialJob::may_resume`] allows (same
//! coordinator database, which vouches for the step); any other checkpoint
//! folder is logged, deleted and training starts from scratch. A checkpoint
//! is written only after a checkpoint barrier ([`crate::trainer::TrainContext::checkpoint`]):
//! every metric point up to its step is acknowledged first. The on-disk
//! format itself is [`super::checkpoint`]'s.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use tch::{nn, Device, Kind, Tensor};

use super::checkpoint::{self, CheckpointMeta, Latest};
use super::optim::Optimizer;
use crate::trainer::{TrainError, TrialJob};

/// Training progress that a checkpoint carries across attempts.
#[derive(Debug, Clone, Default)]
pub struct Position {
    /// The epoch (1-based) to continue with.
    pub next_epoch: u32,
    /// The batch within `next_epoch` to continue with.
    pub next_batch: u64,
    /// Batches trained so far.
    pub step: i64,
    /// The partial train-loss logging window: loss sum and batches.
    pub window_sum: f64,
    pub window_n: u64,
    pub last_train_loss: Option<f64>,
    pub last_test_loss: Option<f64>,
    pub last_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    /// Training wall time of earlier attempts.
    pub prior_wall: f64,
}

impl Position {
    /// The start of a trial trained from scratch.
    pub fn start() -> Self {
        Position { next_epoch: 1, ..Default::default() }
    }

    fn from_meta(m: &CheckpointMeta) -> Self {
        Position {
            next_epoch: m.next_epoch.max(1),
            next_batch: m.next_batch,
            step: m.global_step,
            window_sum: m.window_loss_sum,
            window_n: m.window_batches,
            last_train_loss: m.last_train_loss,
            last_test_loss: m.last_test_loss,
            last_test_accuracy: m.last_test_accuracy,
            best_test_accuracy: m.best_test_accuracy,
            prior_wall: m.wall_seconds,
        }
    }
}

/// What a checkpoint saves of one attempt: the weights, the optimiser,
/// and the job they belong to.
pub struct Run<'a> {
    pub job: &'a TrialJob,
    pub vs: nn::VarStore,
    pub opt: Optimizer,
    /// When this attempt started (its wall time adds to earlier attempts').
    pub started: Instant,
}

fn ckpt_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(e.to_string())
}

impl Run<'_> {
    /// Training wall time over all attempts, with `p`'s earlier ones.
    pub fn wall_seconds(&self, p: &Position) -> f64 {
        p.prior_wall + self.started.elapsed().as_secs_f64()
    }

    /// Writes a checkpoint at `p`. Call it only after the checkpoint
    /// barrier ([`crate::trainer::TrainContext::checkpoint`]) succeeded and while the trial
    /// is still ours (see [`super::member::Member::checkpoint`]).
    pub fn save(&self, p: &Position) -> Result<(), TrainError> {
        let spec = &self.job.spec;
        let meta = CheckpointMeta {
            version: checkpoint::FORMAT_VERSION,
            store_id: self.job.store_id.clone(),
            trial_id: self.job.trial_id.clone(),
            spec: spec.canonical(),
            next_epoch: p.next_epoch,
            next_batch: p.next_batch,
            global_step: p.step,
            optimizer: self.opt.kind().to_owned(),
            optimizer_steps: self.opt.steps(),
            rng_seed: spec.seed,
            rng_scheme: "splitmix(seed, epoch, batch) -> StdRng; torch seeded once for init".into(),
            window_loss_sum: p.window_sum,
            window_batches: p.window_n,
            last_train_loss: p.last_train_loss,
            last_test_loss: p.last_test_loss,
            last_test_accuracy: p.last_test_accuracy,
            best_test_accuracy: p.best_test_accuracy,
            wall_seconds: self.wall_seconds(p),
        };
        checkpoint::save(&self.job.checkpoint_dir, &meta, |dir| {
            self.vs.save(dir.join("weights.ot")).map_err(|e| format!("weights: {e}"))?;
            let mut state = self.opt.state_tensors();
            if state.is_empty() {
                // Plain SGD has no state; write a valid file anyway so every
                // checkpoint has the same three files.
                let empty = Tensor::f_zeros([0], (Kind::Float, Device::Cpu)).map_err(|e| e.to_string())?;
                state.push(("empty".to_owned(), empty));
            }
            let refs: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
            Tensor::save_multi(&refs, dir.join("optimizer.ot")).map_err(|e| format!("optimizer state: {e}"))
        })
        .map_err(TrainError::Checkpoint)?;
        Ok(())
    }

    /// Keeps the final weights (`<checkpoint dir>/final/`) for later
    /// analyses, with the spec they were trained with.
    pub fn save_final(&self) -> Result<(), TrainError> {
        let meta = serde_json::json!({
            "trial_id": self.job.trial_id,
            "store_id": self.job.store_id,
            "spec": self.job.spec.canonical(),
        });
        checkpoint::save_final(&self.job.checkpoint_dir, &meta, |dir| {
            self.vs.save(dir.join("weights.ot")).map_err(|e| format!("weights: {e}"))
        })
        .map_err(TrainError::Checkpoint)?;
        Ok(())
    }

    /// Restores the newest checkpoint this trial may resume from (weights
    /// and optimiser state onto `device`) and returns where training
    /// continues: [`Position::start`] when there is none. A checkpoint
    /// folder that must not be used is logged and deleted; a checkpoint of
    /// another spec or optimiser is an error.
    pub fn resume(&mut self, device: Device) -> Result<Position, TrainError> {
        let job = self.job;
        let found = match checkpoint::latest(&job.checkpoint_dir).map_err(TrainError::Checkpoint)? {
            Latest::None => None,
            Latest::OtherFormat { dir, reason } => {
                tracing::warn!(trial = %job.trial_id, "ignoring checkpoint {}: {reason}; deleting the trial's checkpoint folder and starting from scratch", dir.display());
                discard_folder(&job.checkpoint_dir)?;
                None
            }
            Latest::Found(ck) => match job.may_resume(&ck.meta.store_id, &ck.meta.trial_id, ck.meta.global_step) {
                Ok(()) => Some(ck),
                Err(why) => {
                    tracing::warn!(trial = %job.trial_id, "ignoring checkpoint {}: {why}; deleting the trial's checkpoint folder and starting from scratch", ck.dir.display());
                    discard_folder(&job.checkpoint_dir)?;
                    None
                }
            },
        };
        let Some(ck) = found else {
            return Ok(Position::start());
        };
        let m = &ck.meta;
        if m.spec != job.spec.canonical() {
            return Err(ckpt_err(format_args!("{}: checkpoint of a different trial spec", ck.dir.display())));
        }
        if m.optimizer != self.opt.kind() {
            return Err(ckpt_err(format_args!(
                "{}: optimizer {} in checkpoint, {} in spec",
                ck.dir.display(),
                m.optimizer,
                self.opt.kind()
            )));
        }
        self.vs.load(ck.weights()).map_err(|e| ckpt_err(format_args!("{}: {e}", ck.weights().display())))?;
        let saved: HashMap<String, Tensor> = Tensor::load_multi_with_device(ck.optimizer(), device)
            .map_err(|e| ckpt_err(format_args!("{}: {e}", ck.optimizer().display())))?
            .into_iter()
            .collect();
        self.opt
            .load_state(&saved, m.optimizer_steps)
            .map_err(|e| ckpt_err(format_args!("{}: {e}", ck.optimizer().display())))?;
        let p = Position::from_meta(m);
        tracing::info!(
            trial = %job.trial_id,
            epoch = p.next_epoch,
            batch = p.next_batch,
            step = p.step,
            "resuming from checkpoint {}",
            ck.dir.display()
        );
        Ok(p)
    }
}

/// Deletes a trial's checkpoint folder that must not be resumed from.
fn discard_folder(dir: &Path) -> Result<(), TrainError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ckpt_err(format_args!("{}: cannot delete an unusable checkpoint folder: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}
