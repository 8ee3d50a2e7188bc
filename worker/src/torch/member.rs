//! One trial of a training group ([`super::group`]): its job, its typed
//! settings, its position, and a plain BMEnet of its own on the CPU that
//! holds its weights and optimiser state whenever they go to or come from
//! disk (initialisation, resume, checkpoints, final weights). Everything
//! the trial tells the daemon goes through here, so one member's lost lease
//! or full stop never touches the others.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sweep_core::bmenet::BmenetTrial;
use sweep_core::Optimizer as OptKind;
use tch::{nn, Device, Tensor};

use super::bmenet::{BmeConfig, BmeNet};
use super::cifar::{self, CifarData, CLASSES};
use super::eval::Eval;
use super::fused::FusedNet;
use super::optim::Optimizer;
use super::resume::{Position, Run};
use crate::trainer::{StopReason, TrainContext, TrainError, TrainOutcome, TrialJob, TrialSummary};

/// A plain network's variables by name, with whether each is trained.
pub(super) type Vars = BTreeMap<String, (Tensor, bool)>;

/// A member's place in its fused group: the group's network and
/// optimiser, and the member's index in them.
pub(super) struct Slot<'g> {
    pub(super) net: &'g FusedNet,
    pub(super) opt: &'g Optimizer,
    pub(super) k: usize,
}

/// One trial of a group.
pub(super) struct Member<'a> {
    pub(super) ctx: &'a TrainContext,
    pub(super) trial: BmenetTrial,
    pub(super) data: Arc<CifarData>,
    pub(super) run: Run<'a>,
    /// `run.vs`'s variables (shallow clones).
    pub(super) vars: Vars,
    pub(super) p: Position,
    pub(super) last_eval: Option<Eval>,
    /// `Some` once this trial is over (the others may train on).
    pub(super) end: Option<Result<TrainOutcome, TrainError>>,
}

/// The optimiser the trial's settings ask for, over `named` (in name order,
/// which its checkpointed state relies on).
pub(super) fn optimizer(trial: &BmenetTrial, named: Vec<(String, Tensor)>) -> Optimizer {
    let tc = &trial.train;
    match tc.optimizer {
        OptKind::Sgd => Optimizer::sgd(named, tc.lr, tc.momentum, tc.weight_decay),
        OptKind::Adam => Optimizer::adam(named, tc.lr, tc.weight_decay),
    }
}

/// The dataset's checksum for the result's provenance (`None`, logged,
/// when its files cannot be read again).
fn dataset_sha256(data: &CifarData) -> Option<String> {
    cifar::checksum(&data.root).map_err(|e| tracing::warn!("cannot checksum the dataset for provenance: {e}")).ok()
}

/// The trial's data (through the process-wide cache), with at least one
/// training and one test image.
fn load_data(trial: &BmenetTrial, data_override: Option<&Path>) -> Result<Arc<CifarData>, TrainError> {
    let path = data_override.unwrap_or(&trial.data.path);
    let data = cifar::load_cached(path, trial.data.train_subset, trial.data.test_subset)
        .map_err(|e| TrainError::Data(e.to_string()))?;
    if data.train.is_empty() {
        return Err(TrainError::Data(format!("{}: no training images", data.root.display())));
    }
    if data.test.is_empty() {
        return Err(TrainError::Data(format!("{}: no test images", data.root.display())));
    }
    Ok(data)
}

/// Held while libtorch's generator is seeded and a network drawn from it.
static INIT_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl<'a> Member<'a> {
    /// Types the job's spec, loads its data, builds its network (libtorch's
    /// RNG seeded with the trial seed first, on the CPU, so the initial
    /// weights depend on the seed alone, whatever the device), resumes from
    /// its checkpoint when the coordinator vouches for one, and tells the
    /// daemon where this attempt starts.
    pub(super) fn start(job: &'a TrialJob, ctx: &'a TrainContext, data_override: Option<&Path>) -> Result<Self, Halt> {
        let started = Instant::now();
        let trial = crate::trainer::resolve(&job.spec)?;
        let data = load_data(&trial, data_override)?;
        let vs = nn::VarStore::new(Device::Cpu);
        {
            // libtorch has one CPU generator per process: slots building
            // networks at once must not draw from each other's seed.
            let _seeded = INIT_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            tch::manual_seed(trial.seed as i64);
            BmeNet::new(&vs.root(), &BmeConfig::from(&trial)).map_err(|e| TrainError::Model(e.to_string()))?;
        }
        let vars: Vars = vs.variables().into_iter().map(|(n, t)| (n, (t.shallow_clone(), t.requires_grad()))).collect();
        let trained =
            vars.iter().filter(|(_, (_, tr))| *tr).map(|(n, (t, _))| (n.clone(), t.shallow_clone())).collect();
        let opt = optimizer(&trial, trained);
        let mut run = Run { job, vs, opt, started };
        let p = run.resume(Device::Cpu)?;
        let m = Member { ctx, trial, data, run, vars, p, last_eval: None, end: None };
        // Where this attempt starts, so points an abandoned attempt logged
        // past this step are replaced rather than mixed in.
        ctx.resumed(m.p.step)?;
        m.report_short_data()?;
        Ok(m)
    }

    pub(super) fn job(&self) -> &TrialJob {
        self.run.job
    }

    pub(super) fn training(&self) -> bool {
        self.end.is_none()
    }

    /// Fewer images than the grid asked for: say so, in the log and as a
    /// metric the report can show.
    fn report_short_data(&self) -> Result<(), Halt> {
        let (trial, data, ctx, id) = (&self.trial, &self.data, self.ctx, &self.run.job.trial_id);
        if let Some(asked) = trial.data.train_subset {
            if (data.train.len() as u64) < asked {
                tracing::warn!(trial = %id, asked, used = data.train.len(), "data.train_subset asks for more training images than {} holds; training on all {}", data.root.display(), data.train.len());
                ctx.metric(0, 0, "train_images_used", data.train.len() as f64)?;
            }
        }
        if let Some(asked) = trial.data.test_subset {
            if (data.test.len() as u64) < asked {
                tracing::warn!(trial = %id, asked, used = data.test.len(), "data.test_subset asks for more test images than {} holds; testing on all {}", data.root.display(), data.test.len());
                ctx.metric(0, 0, "test_images_used", data.test.len() as f64)?;
            }
        }
        Ok(())
    }

    /// Copies this member's slice `k` of the fused weights and optimiser
    /// state into its plain network, for a checkpoint or the final weights.
    fn pull(&mut self, slot: &Slot<'_>) -> Result<(), TrainError> {
        let Slot { net, opt, k } = *slot;
        net.copy_member_into(k, &self.vars)?;
        let mut state = HashMap::new();
        for (name, t) in opt.state_tensors() {
            let param = name.splitn(3, '.').nth(2).unwrap_or_default();
            state.insert(name.clone(), net.slice_like(param, &t, k)?);
        }
        self.run.opt.load_state(&state, opt.steps()).map_err(TrainError::Other)
    }

    /// The checkpoint barrier, then this member's checkpoint (slice `k` of
    /// `net` and `opt`). `false`: not written (the daemon gave up on the
    /// trial's points, or the trial is no longer ours).
    pub(super) fn checkpoint(&mut self, slot: &Slot<'_>) -> Result<bool, TrainError> {
        if !self.ctx.checkpoint(self.p.step) {
            return Ok(false);
        }
        if self.ctx.should_stop().is_some_and(|r| !r.keeps_checkpoint()) {
            return Ok(false);
        }
        self.pull(slot)?;
        self.run.save(&self.p)?;
        Ok(true)
    }

    /// Stops this member before batch `batch` of `epoch` for `reason`,
    /// checkpointing first when the reason keeps one. `window` is the
    /// member's part of the running loss window.
    pub(super) fn stop(&mut self, reason: StopReason, epoch: u32, batch: u64, window: f64, slot: &Slot<'_>) {
        self.p.next_epoch = epoch;
        self.p.next_batch = batch;
        self.p.window_sum += window;
        // After a lost lease (or a refused batch) the trial is not ours to
        // checkpoint: someone else may already be writing newer checkpoints.
        if reason.keeps_checkpoint() {
            if let Err(e) = self.checkpoint(slot) {
                self.end = Some(Err(e));
                return;
            }
        }
        self.end = Some(Ok(TrainOutcome::Stopped(reason)));
    }

    /// Ends this member on a [`Halt`] (a stop request or an error).
    pub(super) fn halt(&mut self, h: Halt) {
        self.end = Some(h.into_end());
    }

    /// The end of a trial whose training loss became NaN or infinite at
    /// step `p.step`: a `diverged_step` point (the non-finite loss itself is
    /// never sent) and a summary without a final training loss.
    pub(super) fn diverge(&mut self, epoch: u32) {
        let p = &self.p;
        tracing::warn!(trial = %self.run.job.trial_id, step = p.step, "training loss became NaN or infinite: trial diverged");
        if let Err(r) = self.ctx.metric(p.step, epoch, "diverged_step", p.step as f64) {
            return self.halt(Halt::Stop(r));
        }
        self.end = Some(Ok(TrainOutcome::Diverged(TrialSummary {
            dataset_sha256: dataset_sha256(&self.data),
            final_train_loss: None,
            final_test_loss: p.last_test_loss,
            final_test_accuracy: p.last_test_accuracy,
            best_test_accuracy: p.best_test_accuracy,
            wall_seconds: self.run.wall_seconds(p),
        })));
    }

    /// Records an epoch's evaluation, sends its metrics and checkpoints.
    pub(super) fn epoch_end(
        &mut self,
        epoch: u32,
        eval: Eval,
        images_per_sec: Option<f64>,
        slot: &Slot<'_>,
    ) -> Result<(), Halt> {
        let ctx = self.ctx;
        let p = &mut self.p;
        p.last_test_loss = Some(eval.loss);
        p.last_test_accuracy = Some(eval.accuracy);
        p.best_test_accuracy = Some(p.best_test_accuracy.map_or(eval.accuracy, |b| b.max(eval.accuracy)));
        let step = p.step;
        ctx.metric(step, epoch, "test_loss", eval.loss)?;
        ctx.metric(step, epoch, "test_accuracy", eval.accuracy)?;
        if let Some(ips) = images_per_sec {
            ctx.metric(step, epoch, "images_per_sec", ips)?;
        }
        ctx.progress(epoch, step, self.p.last_train_loss)?;
        self.p.next_epoch = epoch + 1;
        self.p.next_batch = 0;
        self.last_eval = Some(eval);
        // Checkpoint only once every point up to here is acknowledged: a
        // resumed attempt skips this epoch, so its points must not be lost.
        if !self.checkpoint(slot)? {
            return Err(Halt::Stop(ctx.should_stop().unwrap_or(StopReason::LeaseLost)));
        }
        Ok(())
    }

    /// The end of a trained trial: the final per-class metrics, the final
    /// weights when the sweep keeps them, and the summary.
    pub(super) fn finish(&mut self, eval: Eval, slot: &Slot<'_>) -> Result<TrainOutcome, Halt> {
        let ctx = self.ctx;
        let p = &self.p;
        let final_epoch = self.trial.train.epochs.max(1);
        for c in 0..CLASSES {
            if let Some(acc) = eval.class_accuracy(c) {
                ctx.metric(p.step, final_epoch, format!("class_accuracy/{c}"), acc)?;
            }
        }
        for t in 0..CLASSES {
            for q in 0..CLASSES {
                let n = eval.confusion[t][q] as f64;
                ctx.metric(p.step, final_epoch, format!("confusion/{t}/{q}"), n)?;
            }
        }
        let final_train_loss = p.last_train_loss.or_else(|| (p.window_n > 0).then(|| p.window_sum / p.window_n as f64));
        let summary = TrialSummary {
            dataset_sha256: dataset_sha256(&self.data),
            final_train_loss,
            final_test_loss: Some(eval.loss),
            final_test_accuracy: Some(eval.accuracy),
            best_test_accuracy: p.best_test_accuracy.or(Some(eval.accuracy)),
            wall_seconds: self.run.wall_seconds(p),
        };
        if self.run.job.keep_weights {
            self.pull(slot)?;
            self.run.save_final()?;
        }
        Ok(TrainOutcome::Succeeded(summary))
    }
}

/// Why a member's training ended early.
pub(super) enum Halt {
    Stop(StopReason),
    Fail(TrainError),
}

impl From<TrainError> for Halt {
    fn from(e: TrainError) -> Self {
        Halt::Fail(e)
    }
}

impl From<tch::TchError> for Halt {
    fn from(e: tch::TchError) -> Self {
        Halt::Fail(e.into())
    }
}

/// A daemon that is gone (or asks to stop) ends the member: its events can
/// no longer be delivered.
impl From<StopReason> for Halt {
    fn from(r: StopReason) -> Self {
        Halt::Stop(r)
    }
}

impl Halt {
    /// How the member ended: stopped, or failed.
    pub(super) fn into_end(self) -> Result<TrainOutcome, TrainError> {
        match self {
            Halt::Stop(reason) => Ok(TrainOutcome::Stopped(reason)),
            Halt::Fail(e) => Err(e),
        }
    }
}
