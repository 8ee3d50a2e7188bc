//! [`TorchTrainer`]: trains BMEnet trials on CIFAR-10 the way the lecture's
//! demo does (DLStudio's `playing_with_skip_connections.py`), with every
//! setting taken from the trial's spec, one at a time or as a fused group of
//! seeds ([`Trainer::train_group`]). Each trial's spec is typed once, at the
//! start, by the core's rules ([`crate::trainer::resolve`]) in
//! [`super::member`]; the loop itself is [`super::group`]; batches come
//! from [`super::batch`], evaluation from [`super::eval`], checkpoints
//! through [`super::resume`].
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
//! On a CUDA device the trainer turns on cuDNN's benchmark mode, which
//! times the convolution algorithms for each input shape and keeps the
//! fastest. That trades bitwise run-to-run reproducibility on a GPU for
//! speed: the chosen algorithm (and so the rounding) may differ between
//! runs, so two GPU runs of one seed agree closely but not to the bit.
//! CPU results are unaffected.
//!
//! Metrics (all through [`crate::trainer::TrainContext::metric`], step =
//! batches trained):
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
//! barrier ([`crate::trainer::TrainContext::checkpoint`]).
//!
//! A group fuses only trials that train the same network the same way from
//! the same place: the same spec but for the seed, resumed at the same
//! step. The coordinator leases groups that way; whatever else arrives is
//! split into such groups, trained one after the other.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use tch::Device;

use super::group;
use super::member::Member;
use crate::trainer::{panic_message, TrainContext, TrainError, TrainOutcome, Trainer, TrialJob};

/// Trains BMEnet trials with libtorch on one device.
///
/// Lives on the worker's training thread (libtorch tensors never cross
/// threads); the dataset is loaded once per process through
/// [`super::cifar::load_cached`].
pub struct TorchTrainer {
    device: Device,
    data_root_override: Option<PathBuf>,
}

impl TorchTrainer {
    /// `data_root_override` replaces every trial's `data.path` (a worker
    /// whose copy of CIFAR-10 lives elsewhere than the submitter's).
    pub fn new(device: Device, data_root_override: Option<PathBuf>) -> Self {
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
            // Make the CUDA context now, before the slot admission reads the
            // device's free memory: it is no training's footprint.
            let _ = tch::Tensor::f_zeros([1], (tch::Kind::Float, device));
        }
        TorchTrainer { device, data_root_override }
    }

    pub fn device(&self) -> Device {
        self.device
    }
}

/// What must be equal for two trials to train as one group: the spec but
/// for the seed, and the position they resume at.
fn group_key(m: &Member<'_>) -> (String, i64, u32, u64) {
    let mut spec = m.job().spec.clone();
    spec.seed = 0;
    (spec.canonical(), m.p.step, m.p.next_epoch, m.p.next_batch)
}

impl Trainer for TorchTrainer {
    /// [`super::footprint::estimate`] of the first job's configuration with
    /// every job as a member (generous when the jobs split into groups
    /// trained one after the other); 0 when the spec does not resolve.
    fn footprint(&self, jobs: &[(TrialJob, TrainContext)]) -> u64 {
        let Some(((first, _), _)) = jobs.split_first() else { return 0 };
        crate::trainer::resolve(&first.spec)
            .ok()
            .and_then(|t| super::footprint::estimate(&t, jobs.len()).ok())
            .unwrap_or(0)
    }

    fn train(&mut self, job: &TrialJob, ctx: &TrainContext) -> Result<TrainOutcome, TrainError> {
        let jobs = [(job.clone(), ctx.clone())];
        self.train_group(&jobs).pop().unwrap_or_else(|| Err(TrainError::Other("no result".into())))
    }

    fn train_group(&mut self, jobs: &[(TrialJob, TrainContext)]) -> Vec<Result<TrainOutcome, TrainError>> {
        let mut results: Vec<Option<Result<TrainOutcome, TrainError>>> = jobs.iter().map(|_| None).collect();
        let over = self.data_root_override.as_deref();
        // tch's non-fallible calls panic on a libtorch error (e.g. CUDA out
        // of memory); that must fail the trials, not kill the worker.
        let mut started: Vec<(usize, Member<'_>)> = Vec::new();
        for (i, (job, ctx)) in jobs.iter().enumerate() {
            match catch_unwind(AssertUnwindSafe(|| Member::start(job, ctx, over))) {
                Ok(Ok(m)) => started.push((i, m)),
                Ok(Err(h)) => results[i] = Some(h.into_end()),
                Err(p) => results[i] = Some(Err(TrainError::from_libtorch(&panic_message(&*p)))),
            }
        }
        while !started.is_empty() {
            let key = group_key(&started[0].1);
            let (mine, rest): (Vec<_>, Vec<_>) = started.into_iter().partition(|(_, m)| group_key(m) == key);
            started = rest;
            let (slots, mut members): (Vec<usize>, Vec<Member<'_>>) = mine.into_iter().unzip();
            if members.len() > 1 {
                tracing::info!(trials = members.len(), step = members[0].p.step, "training as one fused group");
            }
            let device = self.device;
            let failed = match catch_unwind(AssertUnwindSafe(|| group::train(device, &mut members))) {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(p) => Some(TrainError::from_libtorch(&panic_message(&*p))),
            };
            for (i, m) in slots.into_iter().zip(members) {
                results[i] = Some(match (m.end, &failed) {
                    (Some(end), _) => end,
                    (None, Some(why)) => Err(why.clone()),
                    (None, None) => Err(TrainError::Other("training ended without a result".into())),
                });
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(TrainError::Other("not trained".into())))).collect()
    }
}
