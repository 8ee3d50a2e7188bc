//! [`TorchTrainer`]: trains one BMEnet trial on CIFAR-10 the way the
//! lecture's demo does (DLStudio's `playing_with_skip_connections.py`), with
//! every setting taken from the trial's spec; this module is the training
//! loop. The spec is typed once, at the start, by the core's rules
//! ([`crate::trainer::resolve`]); batches come from [`super::batch`],
//! evaluation from [`super::eval`], checkpoints through [`super::resume`].
//!
//! - cross-entropy loss; SGD (lr, momentum, weight decay) or Adam;
//! - shuffled every epoch, optionally augmented (see [`super::batch`]);
//! - evaluation with `train = false` under `no_grad` after every epoch.
//!
//! Reproducibility: libtorch's RNG is seeded with the trial seed before the
//! network is built (so the initial weights depend on the seed only), and
//! every later random choice comes from a Rust RNG seeded from (seed, epoch,
//! batch). So the same seed gives the same loss curve on CPU, and a trial
//! resumed from a checkpoint continues exactly as if it had not stopped (the
//! optimiser state is checkpointed too, see [`super::optim`]).
//!
//! Metrics (all through [`TrainContext::metric`], step = batches trained):
//! - every `log_every` batches: `train_loss` (mean over those batches) and
//!   `grad_norm/<group>` (L2 norm of the loss gradient over the group's
//!   parameters; groups `stem`, `block01`.., `fc1`, `fc2` sort input to
//!   output), plus a progress report;
//! - every epoch end: `test_loss`, `test_accuracy` (a fraction),
//!   `images_per_sec` (training images per second of training time);
//! - at the end: `class_accuracy/<k>` and `confusion/<true>/<pred>` (counts);
//! - on divergence (the logged training loss is NaN or infinite):
//!   `diverged_step` (value = the step) and nothing non-finite;
//! - at the start, only when the data holds fewer images than
//!   `data.train_subset` (`test_subset`) asks for: `train_images_used`
//!   (`test_images_used`), with a warning in the worker's log.
//!
//! A checkpoint is written after every epoch and where the trainer is asked
//! to stop (when the stop reason keeps one), each after a checkpoint
//! barrier ([`TrainContext::checkpoint`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sweep_core::bmenet::BmenetTrial;
use sweep_core::Optimizer as OptKind;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use super::batch::{derived_rng, epoch_permutation, make_batch, Normalise};
use super::bmenet::{BmeConfig, BmeNet, ParamGroup};
use super::cifar::{self, CifarData, CLASSES};
use super::eval::{evaluate, grad_norms, Eval};
use super::optim::Optimizer;
use super::resume::{Position, Run};
use crate::trainer::{StopReason, TrainContext, TrainError, TrainOutcome, Trainer, TrialJob, TrialSummary};

/// Trains BMEnet trials with libtorch on one device.
///
/// Lives on the worker's training thread (libtorch tensors never cross
/// threads); the dataset is loaded once per process through
/// [`cifar::load_cached`].
pub struct TorchTrainer {
    device: Device,
    data_root_override: Option<PathBuf>,
}

impl TorchTrainer {
    /// `data_root_override` replaces every trial's `data.path` (a worker
    /// whose copy of CIFAR-10 lives elsewhere than the submitter's).
    pub fn new(device: Device, data_root_override: Option<PathBuf>) -> Self {
        TorchTrainer { device, data_root_override }
    }

    pub fn device(&self) -> Device {
        self.device
    }
}

impl Trainer for TorchTrainer {
    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        // tch's non-fallible calls panic on a libtorch error (e.g. CUDA out
        // of memory); that must fail this trial, not kill the worker.
        let run =
            catch_unwind(AssertUnwindSafe(|| run_trial(self.device, self.data_root_override.as_deref(), job, ctx)));
        match run {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(Halt::Stop(reason))) => Ok(TrainOutcome::Stopped(reason)),
            Ok(Err(Halt::Fail(e))) => Err(e),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(std::string::ToString::to_string))
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(TrainError::Other(format!("libtorch failed: {msg}")))
            }
        }
    }
}

/// Why the training loop ended early.
enum Halt {
    Stop(StopReason),
    Fail(TrainError),
}

impl From<TrainError> for Halt {
    fn from(e: TrainError) -> Self {
        Halt::Fail(e)
    }
}

impl From<StopReason> for Halt {
    fn from(r: StopReason) -> Self {
        Halt::Stop(r)
    }
}

impl From<tch::TchError> for Halt {
    fn from(e: tch::TchError) -> Self {
        Halt::Fail(TrainError::Other(format!("libtorch: {e}")))
    }
}

/// Sends one event; a gone daemon means the lease is lost.
fn send(r: Result<(), StopReason>) -> Result<(), Halt> {
    r.map_err(Halt::Stop)
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

/// The optimiser the trial's settings ask for, over every trainable
/// parameter (in name order, which its checkpointed state relies on).
fn optimizer(vs: &nn::VarStore, trial: &BmenetTrial) -> Optimizer {
    let tc = &trial.train;
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    match tc.optimizer {
        OptKind::Sgd => Optimizer::sgd(named, tc.lr, tc.momentum, tc.weight_decay),
        OptKind::Adam => Optimizer::adam(named, tc.lr, tc.weight_decay),
    }
}

fn run_trial(
    device: Device,
    data_override: Option<&Path>,
    job: &TrialJob,
    ctx: &TrainContext,
) -> Result<TrainOutcome, Halt> {
    let started = Instant::now();
    let trial = crate::trainer::resolve(&job.spec)?;
    let data = load_data(&trial, data_override)?;

    // Seed before building: the initial weights depend on the seed alone.
    tch::manual_seed(trial.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = BmeNet::new(&vs.root(), &BmeConfig::from(&trial)).map_err(|e| TrainError::Model(e.to_string()))?;
    let opt = optimizer(&vs, &trial);
    let mut run = Run { job, vs, opt, started };
    let mut p = run.resume(device)?;

    // Tell the coordinator where this attempt starts, so points an abandoned
    // attempt logged past this step are replaced rather than mixed in.
    send(ctx.resumed(p.step))?;
    report_short_data(job, &trial, &data, ctx)?;

    let groups = net.param_groups();
    let mut t = Loop { trial: &trial, ctx, device, data: &data, net, groups, norm: Normalise::new(), run };
    let mut last_eval: Option<Eval> = None;
    for epoch in p.next_epoch..=trial.train.epochs {
        match t.epoch(&mut p, epoch)? {
            EpochEnd::Evaluated(eval) => last_eval = Some(*eval),
            EpochEnd::Diverged => return t.diverged(&p, epoch),
        }
    }
    t.finish(&p, last_eval)
}

/// Fewer images than the grid asked for: say so, in the log and as a
/// metric the report can show.
fn report_short_data(job: &TrialJob, trial: &BmenetTrial, data: &CifarData, ctx: &TrainContext) -> Result<(), Halt> {
    if let Some(asked) = trial.data.train_subset {
        if (data.train.len() as u64) < asked {
            tracing::warn!(trial = %job.trial_id, asked, used = data.train.len(), "data.train_subset asks for more training images than {} holds; training on all {}", data.root.display(), data.train.len());
            send(ctx.metric(0, 0, "train_images_used", data.train.len() as f64))?;
        }
    }
    if let Some(asked) = trial.data.test_subset {
        if (data.test.len() as u64) < asked {
            tracing::warn!(trial = %job.trial_id, asked, used = data.test.len(), "data.test_subset asks for more test images than {} holds; testing on all {}", data.root.display(), data.test.len());
            send(ctx.metric(0, 0, "test_images_used", data.test.len() as f64))?;
        }
    }
    Ok(())
}

/// How an epoch ended, when the trial goes on.
enum EpochEnd {
    /// Trained, evaluated and checkpointed.
    Evaluated(Box<Eval>),
    /// The training loss became NaN or infinite.
    Diverged,
}

/// Everything the training loop of one attempt uses.
struct Loop<'a> {
    trial: &'a BmenetTrial,
    ctx: &'a TrainContext,
    device: Device,
    data: &'a CifarData,
    net: BmeNet,
    groups: Vec<ParamGroup>,
    norm: Normalise,
    run: Run<'a>,
}

impl Loop<'_> {
    /// Trains `epoch` from `p`'s position, evaluates and checkpoints.
    fn epoch(&mut self, p: &mut Position, epoch: u32) -> Result<EpochEnd, Halt> {
        let n = self.data.train.len();
        let bs = self.trial.train.batch_size as usize;
        let batches = n.div_ceil(bs) as u64;
        let order = epoch_permutation(self.trial.seed, epoch, n);
        let first = if epoch == p.next_epoch { p.next_batch.min(batches) } else { 0 };
        let epoch_started = Instant::now();
        let mut images = 0usize;
        // The window's loss stays on the device between logging steps, so
        // a GPU is not synchronised every batch.
        let mut window: Option<Tensor> = None;
        for b in first..batches {
            if let Some(reason) = self.ctx.should_stop() {
                p.next_epoch = epoch;
                p.next_batch = b;
                p.window_sum += take_window(&mut window)?;
                // After a lost lease (or a refused batch) the trial is not
                // ours to checkpoint: someone else may already be writing
                // newer checkpoints here. Otherwise: checkpoint barrier
                // (every point up to here acknowledged), then checkpoint.
                if reason.keeps_checkpoint() {
                    self.run.checkpoint(self.ctx, p)?;
                }
                return Err(Halt::Stop(reason));
            }
            let lo = b as usize * bs;
            let idx = &order[lo..(lo + bs).min(n)];
            if self.step(p, epoch, b, idx, &mut window)? {
                return Ok(EpochEnd::Diverged);
            }
            images += idx.len();
        }
        p.window_sum += take_window(&mut window)?;
        if !p.window_sum.is_finite() {
            return Ok(EpochEnd::Diverged);
        }
        let secs = epoch_started.elapsed().as_secs_f64();
        let eval = evaluate(&self.net, &self.data.test, &self.norm, self.device)?;
        p.last_test_loss = Some(eval.loss);
        p.last_test_accuracy = Some(eval.accuracy);
        p.best_test_accuracy = Some(p.best_test_accuracy.map_or(eval.accuracy, |b| b.max(eval.accuracy)));
        let ctx = self.ctx;
        send(ctx.metric(p.step, epoch, "test_loss", eval.loss))?;
        send(ctx.metric(p.step, epoch, "test_accuracy", eval.accuracy))?;
        if images > 0 && secs > 0.0 {
            send(ctx.metric(p.step, epoch, "images_per_sec", images as f64 / secs))?;
        }
        send(ctx.progress(epoch, p.step, p.last_train_loss))?;
        p.next_epoch = epoch + 1;
        p.next_batch = 0;
        // Checkpoint only once every point up to here is acknowledged: a
        // resumed attempt skips this epoch, so its points must not be lost.
        if !self.run.checkpoint(ctx, p)? {
            return Err(Halt::Stop(ctx.should_stop().unwrap_or(StopReason::LeaseLost)));
        }
        Ok(EpochEnd::Evaluated(Box::new(eval)))
    }

    /// Trains batch `b` (images `idx`) of `epoch`: forward, backward, the
    /// logged mean loss and gradient norms every `log_every` batches, then
    /// the optimiser step. `true`: the logged loss is not finite (the
    /// trial diverged; no step taken).
    fn step(
        &mut self,
        p: &mut Position,
        epoch: u32,
        b: u64,
        idx: &[usize],
        window: &mut Option<Tensor>,
    ) -> Result<bool, Halt> {
        let tc = &self.trial.train;
        let mut aug = tc.augment.then(|| derived_rng(self.trial.seed, epoch, b));
        let (x, y) = make_batch(&self.data.train, idx, aug.as_mut(), &self.norm, self.device)?;
        let logits = self.net.forward_t(&x, true);
        let loss = logits
            .f_log_softmax(-1, Kind::Float)
            .and_then(|l| l.f_nll_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100))?;
        self.run.opt.zero_grad();
        loss.f_backward()?;
        // Summed in f64 so a window split by a checkpoint adds up the
        // same as an uninterrupted one.
        let l = loss.f_detach().and_then(|l| l.f_to_kind(Kind::Double))?;
        *window = Some(match window.take() {
            None => l,
            Some(w) => w.f_add(&l)?,
        });
        p.window_n += 1;
        p.step += 1;

        if p.step % i64::from(tc.log_every) == 0 {
            p.window_sum += take_window(window)?;
            let mean = p.window_sum / p.window_n as f64;
            p.window_sum = 0.0;
            p.window_n = 0;
            if !mean.is_finite() {
                return Ok(true);
            }
            p.last_train_loss = Some(mean);
            let ctx = self.ctx;
            send(ctx.metric(p.step, epoch, "train_loss", mean))?;
            let norms = grad_norms(&self.groups)?;
            for (g, v) in self.groups.iter().zip(norms) {
                send(ctx.metric(p.step, epoch, format!("grad_norm/{}", g.name), v))?;
            }
            send(ctx.progress(epoch, p.step, Some(mean)))?;
        }
        self.run.opt.step()?;
        Ok(false)
    }

    /// The end of a trained trial: the final per-class metrics, the final
    /// weights when the sweep keeps them, and the summary. (A trial resumed
    /// from its final checkpoint lands here directly and re-evaluates the
    /// trained weights.)
    fn finish(&self, p: &Position, last_eval: Option<Eval>) -> Result<TrainOutcome, Halt> {
        let eval = match last_eval {
            Some(e) => e,
            None => evaluate(&self.net, &self.data.test, &self.norm, self.device)?,
        };
        let ctx = self.ctx;
        let final_epoch = self.trial.train.epochs.max(1);
        for k in 0..CLASSES {
            if let Some(acc) = eval.class_accuracy(k) {
                send(ctx.metric(p.step, final_epoch, format!("class_accuracy/{k}"), acc))?;
            }
        }
        for t in 0..CLASSES {
            for q in 0..CLASSES {
                let c = eval.confusion[t][q] as f64;
                send(ctx.metric(p.step, final_epoch, format!("confusion/{t}/{q}"), c))?;
            }
        }
        let final_train_loss = p.last_train_loss.or_else(|| (p.window_n > 0).then(|| p.window_sum / p.window_n as f64));
        if self.run.job.keep_weights {
            self.run.save_final()?;
        }
        Ok(TrainOutcome::Succeeded(TrialSummary {
            final_train_loss,
            final_test_loss: Some(eval.loss),
            final_test_accuracy: Some(eval.accuracy),
            best_test_accuracy: p.best_test_accuracy.or(Some(eval.accuracy)),
            wall_seconds: self.run.wall_seconds(p),
        }))
    }

    /// The end of a trial whose training loss became NaN or infinite at
    /// step `p.step`: a `diverged_step` point (the non-finite loss itself
    /// is never sent) and a summary without a final training loss.
    fn diverged(&self, p: &Position, epoch: u32) -> Result<TrainOutcome, Halt> {
        tracing::warn!(trial = %self.run.job.trial_id, step = p.step, "training loss became NaN or infinite: trial diverged");
        send(self.ctx.metric(p.step, epoch, "diverged_step", p.step as f64))?;
        Ok(TrainOutcome::Diverged(TrialSummary {
            final_train_loss: None,
            final_test_loss: p.last_test_loss,
            final_test_accuracy: p.last_test_accuracy,
            best_test_accuracy: p.best_test_accuracy,
            wall_seconds: self.run.wall_seconds(p),
        }))
    }
}

/// Reads the device-side loss sum of the current window and clears it.
fn take_window(window: &mut Option<Tensor>) -> Result<f64, Halt> {
    match window.take() {
        None => Ok(0.0),
        Some(w) => Ok(w.f_double_value(&[])?),
    }
}
