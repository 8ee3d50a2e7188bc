//! [`TorchTrainer`]: trains one BMEnet trial on CIFAR-10 the way the
//! lecture's demo does (DLStudio's `playing_with_skip_connections.py`), with
//! every setting taken from the trial's spec.
//!
//! - pixels scaled to [0, 1], then normalised with mean 0.5, std 0.5;
//! - cross-entropy loss; SGD (lr, momentum, weight decay) or Adam;
//! - shuffled every epoch; optional augmentation (random 32x32 crop of the
//!   image zero-padded by 4 pixels, horizontal flip with probability 1/2);
//! - evaluation with `train = false` under `no_grad`.
//!
//! Reproducibility: libtorch's RNG is seeded with the trial seed before the
//! network is built (so the initial weights depend on the seed only), and
//! every later random choice (epoch permutation, crops, flips) comes from a
//! Rust RNG seeded from (seed, epoch, batch). So the same seed gives the same
//! loss curve on CPU, and a trial resumed from a checkpoint continues exactly
//! as if it had not stopped (the optimiser state is checkpointed too, see
//! [`super::optim`]).
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
//! Checkpoints: resumed only when [`TrialJob::may_resume`] allows (same
//! coordinator database, which vouches for the step); any other checkpoint
//! folder is logged, deleted and training starts from scratch. Each is
//! written after a checkpoint barrier ([`TrainContext::checkpoint`]).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sweep_core::{GridError, Optimizer as OptKind, TrialSpec};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use super::bmenet::{BmeConfig, BmeNet, ParamGroup};
use super::checkpoint::{self, CheckpointMeta, Latest};
use super::cifar::{self, CifarSplit, CLASSES, IMAGE_BYTES};
use super::optim::Optimizer;
use crate::trainer::{StopReason, Summary, TrainContext, TrainError, TrainOutcome, Trainer, TrialJob};

/// Test images per forward pass when evaluating (BN uses running stats in
/// eval mode, so this does not change results, only speed and memory).
const EVAL_BATCH: usize = 500;

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
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
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

fn torch_err(e: tch::TchError) -> Halt {
    Halt::Fail(TrainError::Other(format!("libtorch: {e}")))
}

/// Checks the spec by the grid's own rules (`TrialSpec::validate`, the one
/// home of each rule), since a spec can arrive over the wire or from a
/// caller that skipped the parser; the error's kind follows the field.
fn validate(spec: &TrialSpec) -> Result<(), TrainError> {
    spec.validate().map_err(|e| {
        let message = e.to_string();
        match e {
            GridError::Spec { key, .. } if key == "depth" => TrainError::Model(message),
            GridError::Spec { key, .. } if key.starts_with("data.") => TrainError::Data(message),
            _ => TrainError::Other(message),
        }
    })
}

/// A 64-bit mix (SplitMix64 finaliser) so nearby (seed, epoch, batch)
/// triples give unrelated RNG streams.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn derived_rng(seed: u64, epoch: u32, batch: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(mix(seed) ^ epoch as u64) ^ batch))
}

/// The order of training images in `epoch`.
pub fn epoch_permutation(seed: u64, epoch: u32, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut derived_rng(seed, epoch, u64::MAX));
    idx
}

/// `(x / 255 - 0.5) / 0.5` for every byte value.
fn normalise_table() -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = ((i as f32 / 255.0) - 0.5) / 0.5;
    }
    t
}

/// Builds an input batch (N, 3, 32, 32) float and its labels (N) int64 on
/// `device`. With `augment`, each image is cropped at a random offset from
/// its 4-pixel zero-padded version (pad value: pixel 0, as torchvision's
/// `RandomCrop(32, padding=4)` pads before `ToTensor`) and flipped
/// horizontally with probability 1/2.
fn make_batch(
    split: &CifarSplit,
    idx: &[usize],
    augment: Option<&mut StdRng>,
    table: &[f32; 256],
    device: Device,
) -> Result<(Tensor, Tensor), Halt> {
    let mut xs = vec![0f32; idx.len() * IMAGE_BYTES];
    let mut ys = Vec::with_capacity(idx.len());
    let zero = table[0];
    let mut rng = augment;
    for (k, &i) in idx.iter().enumerate() {
        let src = split.image(i);
        let dst = &mut xs[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES];
        ys.push(split.labels[i] as i64);
        match rng.as_deref_mut() {
            None => {
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = table[*s as usize];
                }
            }
            Some(r) => {
                let dy: i64 = r.random_range(0..=8) - 4;
                let dx: i64 = r.random_range(0..=8) - 4;
                let flip: bool = r.random_bool(0.5);
                for c in 0..3 {
                    for y in 0..32i64 {
                        let sy = y + dy;
                        for x in 0..32i64 {
                            let xx = if flip { 31 - x } else { x };
                            let sx = xx + dx;
                            let v = if (0..32).contains(&sy) && (0..32).contains(&sx) {
                                table[src[(c * 1024 + sy * 32 + sx) as usize] as usize]
                            } else {
                                zero
                            };
                            dst[(c * 1024 + y * 32 + x) as usize] = v;
                        }
                    }
                }
            }
        }
    }
    let n = idx.len() as i64;
    let x = Tensor::f_from_slice(&xs)
        .and_then(|t| t.f_view([n, 3, 32, 32]))
        .and_then(|t| t.f_to_device(device))
        .map_err(torch_err)?;
    let y = Tensor::f_from_slice(&ys).and_then(|t| t.f_to_device(device)).map_err(torch_err)?;
    Ok((x, y))
}

/// Test-set results.
#[derive(Debug, Clone)]
struct Eval {
    loss: f64,
    accuracy: f64,
    /// `confusion[true][pred]`.
    confusion: [[u64; CLASSES]; CLASSES],
}

fn evaluate(net: &BmeNet, split: &CifarSplit, table: &[f32; 256], device: Device) -> Result<Eval, Halt> {
    let _guard = tch::no_grad_guard();
    let mut confusion = [[0u64; CLASSES]; CLASSES];
    let mut loss_sum = 0.0;
    let order: Vec<usize> = (0..split.len()).collect();
    for chunk in order.chunks(EVAL_BATCH) {
        let (x, y) = make_batch(split, chunk, None, table, device)?;
        let logits = net.forward_t(&x, false);
        let loss = logits
            .f_log_softmax(-1, Kind::Float)
            .and_then(|l| l.f_nll_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100))
            .and_then(|l| l.f_double_value(&[]))
            .map_err(torch_err)?;
        loss_sum += loss;
        let preds = logits.f_argmax(-1, false).and_then(|p| p.f_to_device(Device::Cpu)).map_err(torch_err)?;
        let preds = Vec::<i64>::try_from(&preds).map_err(torch_err)?;
        for (&i, &p) in chunk.iter().zip(&preds) {
            let t = split.labels[i] as usize;
            if let Some(row) = confusion.get_mut(t) {
                if let Some(cell) = row.get_mut(p as usize) {
                    *cell += 1;
                }
            }
        }
    }
    let n = split.len().max(1) as f64;
    let correct: u64 = (0..CLASSES).map(|k| confusion[k][k]).sum();
    Ok(Eval { loss: loss_sum / n, accuracy: correct as f64 / n, confusion })
}

/// L2 norm of the current gradient over each group's parameters, in group
/// order, read back in one transfer.
fn grad_norms(groups: &[ParamGroup]) -> Result<Vec<f64>, Halt> {
    let _guard = tch::no_grad_guard();
    let mut sq = Vec::with_capacity(groups.len());
    for g in groups {
        let mut acc: Option<Tensor> = None;
        for p in &g.params {
            let grad = p.f_grad().map_err(torch_err)?;
            if !grad.defined() {
                continue;
            }
            let s =
                grad.f_square().and_then(|s| s.f_sum(Kind::Float)).and_then(|s| s.f_reshape([1])).map_err(torch_err)?;
            acc = Some(match acc {
                None => s,
                Some(a) => a.f_add(&s).map_err(torch_err)?,
            });
        }
        let device = g.params.first().map_or(Device::Cpu, |p| p.device());
        sq.push(match acc {
            Some(a) => a,
            None => Tensor::f_zeros([1], (Kind::Float, device)).map_err(torch_err)?,
        });
    }
    let norms = Tensor::f_cat(&sq, 0)
        .and_then(|t| t.f_sqrt())
        .and_then(|t| t.f_to_kind(Kind::Double))
        .and_then(|t| t.f_to_device(Device::Cpu))
        .map_err(torch_err)?;
    Vec::<f64>::try_from(&norms).map_err(torch_err)
}

/// Sends one event; a gone daemon means the lease is lost.
fn send(r: Result<(), StopReason>) -> Result<(), Halt> {
    r.map_err(Halt::Stop)
}

/// Training progress that a checkpoint carries across attempts.
struct Progress {
    next_epoch: u32,
    next_batch: u64,
    step: i64,
    window_sum: f64,
    window_n: u64,
    last_train_loss: Option<f64>,
    last_test_loss: Option<f64>,
    last_test_accuracy: Option<f64>,
    best_test_accuracy: Option<f64>,
    prior_wall: f64,
}

struct Run<'a> {
    job: &'a TrialJob,
    vs: nn::VarStore,
    opt: Optimizer,
    started: Instant,
}

impl Run<'_> {
    fn save(&self, p: &Progress) -> Result<(), Halt> {
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
            wall_seconds: p.prior_wall + self.started.elapsed().as_secs_f64(),
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
        .map_err(|e| Halt::Fail(TrainError::Checkpoint(e)))?;
        Ok(())
    }

    /// The checkpoint barrier, then the checkpoint: written only once the
    /// coordinator acknowledged every point up to `p.step` (so it vouches
    /// for this checkpoint), and only while the trial is still ours.
    fn checkpoint(&self, ctx: &TrainContext, p: &Progress) -> Result<bool, Halt> {
        if !ctx.checkpoint(p.step) {
            return Ok(false);
        }
        if ctx.should_stop().is_some_and(|r| !r.keeps_checkpoint()) {
            return Ok(false);
        }
        self.save(p)?;
        Ok(true)
    }

    /// Keeps the final weights (`<checkpoint dir>/final/`) for later
    /// analyses, with the spec they were trained with.
    fn save_final(&self) -> Result<(), Halt> {
        let meta = serde_json::json!({
            "trial_id": self.job.trial_id,
            "store_id": self.job.store_id,
            "spec": self.job.spec.canonical(),
        });
        checkpoint::save_final(&self.job.checkpoint_dir, &meta, |dir| {
            self.vs.save(dir.join("weights.ot")).map_err(|e| format!("weights: {e}"))
        })
        .map_err(|e| Halt::Fail(TrainError::Checkpoint(e)))?;
        Ok(())
    }
}

/// Deletes a trial's checkpoint folder that must not be resumed from.
fn discard_folder(dir: &Path) -> Result<(), Halt> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Halt::Fail(TrainError::Checkpoint(format!(
            "{}: cannot delete an unusable checkpoint folder: {e}",
            dir.display()
        )))),
        _ => Ok(()),
    }
}

fn run_trial(
    device: Device,
    data_override: Option<&Path>,
    job: &TrialJob,
    ctx: &TrainContext,
) -> Result<TrainOutcome, Halt> {
    let started = Instant::now();
    let spec = &job.spec;
    let tc = &spec.train;
    validate(spec)?;
    let data_path = data_override.unwrap_or(&spec.data.path);
    let data = cifar::load_cached(data_path, spec.data.train_subset, spec.data.test_subset)
        .map_err(|e| TrainError::Data(e.to_string()))?;
    if data.train.is_empty() {
        return Err(TrainError::Data(format!("{}: no training images", data.root.display())).into());
    }
    if data.test.is_empty() {
        return Err(TrainError::Data(format!("{}: no test images", data.root.display())).into());
    }

    // Seed before building: the initial weights depend on the seed alone.
    tch::manual_seed(spec.seed as i64);
    let vs = nn::VarStore::new(device);
    let cfg = BmeConfig { depth: spec.depth, skip: spec.skip, batchnorm: spec.batchnorm, init: spec.init };
    let net = BmeNet::new(&vs.root(), &cfg).map_err(|e| TrainError::Model(e.to_string()))?;
    let groups = net.param_groups();

    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let opt = match tc.optimizer {
        OptKind::Sgd => Optimizer::sgd(named, tc.lr, tc.momentum, tc.weight_decay),
        OptKind::Adam => Optimizer::adam(named, tc.lr, tc.weight_decay),
    };
    let mut run = Run { job, vs, opt, started };

    let mut p = Progress {
        next_epoch: 1,
        next_batch: 0,
        step: 0,
        window_sum: 0.0,
        window_n: 0,
        last_train_loss: None,
        last_test_loss: None,
        last_test_accuracy: None,
        best_test_accuracy: None,
        prior_wall: 0.0,
    };
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
    if let Some(ck) = found {
        let m = &ck.meta;
        if m.spec != spec.canonical() {
            return Err(
                TrainError::Checkpoint(format!("{}: checkpoint of a different trial spec", ck.dir.display())).into()
            );
        }
        if m.optimizer != run.opt.kind() {
            return Err(TrainError::Checkpoint(format!(
                "{}: optimizer {} in checkpoint, {} in spec",
                ck.dir.display(),
                m.optimizer,
                run.opt.kind()
            ))
            .into());
        }
        run.vs.load(ck.weights()).map_err(|e| TrainError::Checkpoint(format!("{}: {e}", ck.weights().display())))?;
        let saved: HashMap<String, Tensor> = Tensor::load_multi_with_device(ck.optimizer(), device)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", ck.optimizer().display())))?
            .into_iter()
            .collect();
        run.opt
            .load_state(&saved, m.optimizer_steps)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", ck.optimizer().display())))?;
        p = Progress {
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
        };
        tracing::info!(
            trial = %job.trial_id,
            epoch = p.next_epoch,
            batch = p.next_batch,
            step = p.step,
            "resuming from checkpoint {}",
            ck.dir.display()
        );
    }

    // Tell the coordinator where this attempt starts, so points an abandoned
    // attempt logged past this step are replaced rather than mixed in.
    send(ctx.resumed(p.step))?;

    // Fewer images than the grid asked for: say so, in the log and as a
    // metric the report can show.
    if let Some(asked) = spec.data.train_subset {
        if (data.train.len() as u64) < asked {
            tracing::warn!(trial = %job.trial_id, asked, used = data.train.len(), "data.train_subset asks for more training images than {} holds; training on all {}", data.root.display(), data.train.len());
            send(ctx.metric(0, 0, "train_images_used", data.train.len() as f64))?;
        }
    }
    if let Some(asked) = spec.data.test_subset {
        if (data.test.len() as u64) < asked {
            tracing::warn!(trial = %job.trial_id, asked, used = data.test.len(), "data.test_subset asks for more test images than {} holds; testing on all {}", data.root.display(), data.test.len());
            send(ctx.metric(0, 0, "test_images_used", data.test.len() as f64))?;
        }
    }

    let table = normalise_table();
    let n = data.train.len();
    let bs = tc.batch_size as usize;
    let batches = n.div_ceil(bs) as u64;
    let log_every = tc.log_every as i64;
    let mut last_eval: Option<Eval> = None;

    for epoch in p.next_epoch..=tc.epochs {
        let order = epoch_permutation(spec.seed, epoch, n);
        let first = if epoch == p.next_epoch { p.next_batch.min(batches) } else { 0 };
        let epoch_started = Instant::now();
        let mut images = 0usize;
        // The window's loss stays on the device between logging steps, so
        // a GPU is not synchronised every batch.
        let mut window: Option<Tensor> = None;
        for b in first..batches {
            if let Some(reason) = ctx.should_stop() {
                p.next_epoch = epoch;
                p.next_batch = b;
                p.window_sum += take_window(&mut window)?;
                // After a lost lease (or a refused batch) the trial is not
                // ours to checkpoint: someone else may already be writing
                // newer checkpoints here. Otherwise: checkpoint barrier
                // (every point up to here acknowledged), then checkpoint.
                if reason.keeps_checkpoint() {
                    run.checkpoint(ctx, &p)?;
                }
                return Err(Halt::Stop(reason));
            }
            let lo = b as usize * bs;
            let idx = &order[lo..(lo + bs).min(n)];
            let mut aug = tc.augment.then(|| derived_rng(spec.seed, epoch, b));
            let (x, y) = make_batch(&data.train, idx, aug.as_mut(), &table, device)?;
            let logits = net.forward_t(&x, true);
            let loss = logits
                .f_log_softmax(-1, Kind::Float)
                .and_then(|l| l.f_nll_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100))
                .map_err(torch_err)?;
            run.opt.zero_grad();
            loss.f_backward().map_err(torch_err)?;
            // Summed in f64 so a window split by a checkpoint adds up the
            // same as an uninterrupted one.
            let l = loss.f_detach().and_then(|l| l.f_to_kind(Kind::Double)).map_err(torch_err)?;
            window = Some(match window.take() {
                None => l,
                Some(w) => w.f_add(&l).map_err(torch_err)?,
            });
            p.window_n += 1;
            p.step += 1;
            images += idx.len();

            if p.step % log_every == 0 {
                p.window_sum += take_window(&mut window)?;
                let mean = p.window_sum / p.window_n as f64;
                p.window_sum = 0.0;
                p.window_n = 0;
                if !mean.is_finite() {
                    return diverged(&p, &run, ctx, epoch);
                }
                p.last_train_loss = Some(mean);
                send(ctx.metric(p.step, epoch, "train_loss", mean))?;
                let norms = grad_norms(&groups)?;
                for (g, v) in groups.iter().zip(norms) {
                    send(ctx.metric(p.step, epoch, format!("grad_norm/{}", g.name), v))?;
                }
                send(ctx.progress(epoch, p.step, Some(mean)))?;
            }
            run.opt.step().map_err(torch_err)?;
        }
        p.window_sum += take_window(&mut window)?;
        if !p.window_sum.is_finite() {
            return diverged(&p, &run, ctx, epoch);
        }
        let secs = epoch_started.elapsed().as_secs_f64();
        let eval = evaluate(&net, &data.test, &table, device)?;
        p.last_test_loss = Some(eval.loss);
        p.last_test_accuracy = Some(eval.accuracy);
        p.best_test_accuracy = Some(p.best_test_accuracy.map_or(eval.accuracy, |b| b.max(eval.accuracy)));
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
        if !run.checkpoint(ctx, &p)? {
            return Err(Halt::Stop(ctx.should_stop().unwrap_or(StopReason::LeaseLost)));
        }
        last_eval = Some(eval);
    }

    // Finished. (A trial resumed from its final checkpoint lands here
    // directly and re-evaluates the trained weights.)
    let eval = match last_eval {
        Some(e) => e,
        None => evaluate(&net, &data.test, &table, device)?,
    };
    let final_epoch = tc.epochs.max(1);
    for k in 0..CLASSES {
        let total: u64 = eval.confusion[k].iter().sum();
        if total > 0 {
            let acc = eval.confusion[k][k] as f64 / total as f64;
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
    if job.keep_weights {
        run.save_final()?;
    }
    Ok(TrainOutcome::Succeeded(Summary {
        final_train_loss,
        final_test_loss: Some(eval.loss),
        final_test_accuracy: Some(eval.accuracy),
        best_test_accuracy: p.best_test_accuracy.or(Some(eval.accuracy)),
        wall_seconds: p.prior_wall + run.started.elapsed().as_secs_f64(),
    }))
}

/// The end of a trial whose training loss became NaN or infinite at step
/// `p.step`: a `diverged_step` point (the non-finite loss itself is never
/// sent) and a summary without a final training loss.
fn diverged(p: &Progress, run: &Run, ctx: &TrainContext, epoch: u32) -> Result<TrainOutcome, Halt> {
    tracing::warn!(trial = %run.job.trial_id, step = p.step, "training loss became NaN or infinite: trial diverged");
    send(ctx.metric(p.step, epoch, "diverged_step", p.step as f64))?;
    Ok(TrainOutcome::Diverged(Summary {
        final_train_loss: None,
        final_test_loss: p.last_test_loss,
        final_test_accuracy: p.last_test_accuracy,
        best_test_accuracy: p.best_test_accuracy,
        wall_seconds: p.prior_wall + run.started.elapsed().as_secs_f64(),
    }))
}

/// Reads the device-side loss sum of the current window and clears it.
fn take_window(window: &mut Option<Tensor>) -> Result<f64, Halt> {
    match window.take() {
        None => Ok(0.0),
        Some(w) => w.f_double_value(&[]).map_err(torch_err),
    }
}
