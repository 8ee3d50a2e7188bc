//! The training loop: one or more trials of the same configuration (the
//! seeds of one grid cell, same settings, same position) trained together
//! as one [`FusedNet`]. A single trial is a group of one; the loop is the
//! same, so everything below holds for both.
//!
//! - each member draws its own batches (its own shuffle, its own crops and
//!   flips, from (seed, epoch, batch)), and the batches are stacked along
//!   the channel axis; the members share their data (the same spec but the
//!   seed), held on the device for the group's life and batched there
//!   ([`super::device_data`]);
//! - cross-entropy per member, summed; the gradient of member `k`'s slice
//!   is that of its own loss alone (see [`super::fused`]);
//! - every `log_every` batches: each member's `train_loss` (mean over those
//!   batches) and `grad_norm/<group>`, plus a progress report;
//! - every epoch end: each member's `test_loss`, `test_accuracy`,
//!   `images_per_sec` (its own training images per second of the group's
//!   training time), then its checkpoint after a checkpoint barrier;
//! - at the end: `class_accuracy/<k>` and `confusion/<true>/<pred>`.
//!
//! A member whose logged loss becomes NaN or infinite ends as diverged; a
//! member whose daemon side asks it to stop (lease lost, cancelled,
//! shutdown) ends as stopped. The others train on: the ended member's slice
//! keeps computing until the group ends (its loss no longer counts and its
//! weights are never saved again), which costs time but nothing else, since
//! no kernel mixes members.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::batch::{derived_rng, epoch_permutation, Normalise};
use super::bmenet::{group_names, BmeConfig, ModelError};
use super::device_data::DeviceSplit;
use super::eval::{evaluate, Eval};
use super::fused::FusedNet;
use super::member::{optimizer, Halt, Member, Slot, Vars};
use super::optim::Optimizer;
use super::{landscape, lesion, variance};
use crate::trainer::TrainError;
use sweep_core::bmenet::analysis_metrics as M;
use sweep_core::bmenet::VARIANCE_STEPS;

/// Trains `members` (same configuration, same position) to their ends;
/// each member's [`Member::end`] says how it ended. `Err`: libtorch failed
/// the group as a whole (every member still training fails with it).
pub(super) fn train(device: Device, members: &mut [Member<'_>]) -> Result<(), TrainError> {
    let Some(first) = members.first() else { return Ok(()) };
    let trial = first.trial.clone();
    let (start_epoch, start_batch) = (first.p.next_epoch, first.p.next_batch);
    let cfg = BmeConfig::from(&trial);
    let vars: Vec<&Vars> = members.iter().map(|m| &m.vars).collect();
    // Moving the weights to the device is where a full device fails first.
    let net = FusedNet::from_members(&cfg, &vars, device)
        .map_err(|e| match e {
            ModelError::Torch(m) => TrainError::from_libtorch(&m),
            e => TrainError::Model(e.to_string()),
        })?
        .with_precision(trial.train.precision);
    let opt = optimizer(&trial, net.trainable());
    let groups = group_names(cfg.depth).map_err(|e| TrainError::Model(e.to_string()))?;
    let data = first.data.clone();
    if members.iter().any(|m| !Arc::ptr_eq(&m.data, &data) && *m.data != *data) {
        return Err(TrainError::Data("the trials of a fused group must train on the same data".into()));
    }
    let norm = Normalise::new();
    let train = DeviceSplit::new(&data.train, &norm, device)?;
    let test = DeviceSplit::new(&data.test, &norm, device)?;
    let mut g = Group { members, net, opt, device, train, test, window: None, groups, stepped: false };
    g.load_optimizer_state()?;
    if trial.analyses.variance && start_epoch <= 1 && start_batch == 0 && g.members[0].p.step == 0 {
        g.variance(0)?;
    }
    for epoch in start_epoch..=trial.train.epochs {
        let first_batch = if epoch == start_epoch { start_batch } else { 0 };
        g.epoch(epoch, first_batch)?;
        if !g.any_training() {
            return Ok(());
        }
    }
    Ok(g.finish()?)
}

struct Group<'g, 'a> {
    members: &'g mut [Member<'a>],
    net: FusedNet,
    opt: Optimizer,
    device: Device,
    /// The members' training and test images, on the device.
    train: DeviceSplit,
    test: DeviceSplit,
    /// Whether the first step has been taken (and said, see
    /// [`crate::trainer::TrainContext::stepped`]).
    stepped: bool,
    /// Each member's loss summed since its last logged step, on the device
    /// (`[K]`, f64), so a GPU is not synchronised every batch.
    window: Option<Tensor>,
    /// Gradient-norm groups, input to output.
    groups: Vec<String>,
}

impl Group<'_, '_> {
    fn any_training(&self) -> bool {
        self.members.iter().any(Member::training)
    }

    /// The optimiser state of every member (zero unless resumed), stacked.
    fn load_optimizer_state(&mut self) -> Result<(), tch::TchError> {
        let per_member: Vec<HashMap<String, Tensor>> =
            self.members.iter().map(|m| m.run.opt.state_tensors().into_iter().collect()).collect();
        let mut stacked = HashMap::new();
        for (name, _) in self.opt.state_tensors() {
            let parts: Vec<&Tensor> = per_member.iter().filter_map(|m| m.get(&name)).collect();
            if parts.len() == per_member.len() {
                stacked.insert(name, Tensor::f_cat(&parts, 0)?);
            }
        }
        let steps = self.members[0].run.opt.steps();
        self.opt.load_state(&stacked, steps).map_err(tch::TchError::Kind)
    }

    /// Reads each member's running loss sum and clears it.
    fn take_window(&mut self) -> Result<Vec<f64>, tch::TchError> {
        let k = self.members.len();
        match self.window.take() {
            None => Ok(vec![0.0; k]),
            Some(w) => Vec::<f64>::try_from(&w.f_to_device(Device::Cpu)?),
        }
    }

    /// Member `k`'s running loss sum, left in place.
    fn peek_window(&self, k: usize) -> Result<f64, tch::TchError> {
        match &self.window {
            None => Ok(0.0),
            Some(w) => w.f_double_value(&[k as i64]),
        }
    }

    /// Trains `epoch` from batch `first`, evaluates and checkpoints.
    fn epoch(&mut self, epoch: u32, first: u64) -> Result<(), tch::TchError> {
        let n = self.train.len();
        let bs = self.members[0].trial.train.batch_size as usize;
        let batches = n.div_ceil(bs) as u64;
        let orders: Vec<Vec<usize>> = self.members.iter().map(|m| epoch_permutation(m.trial.seed, epoch, n)).collect();
        let started = Instant::now();
        let mut images = 0usize;
        for b in first.min(batches)..batches {
            self.poll_stops(epoch, b)?;
            if !self.any_training() {
                return Ok(());
            }
            let lo = b as usize * bs;
            let hi = (lo + bs).min(n);
            self.step(epoch, b, &orders, lo..hi)?;
            images += hi - lo;
        }
        let sums = self.take_window()?;
        for (m, s) in self.members.iter_mut().zip(sums) {
            if m.training() {
                m.p.window_sum += s;
                if !m.p.window_sum.is_finite() {
                    m.diverge(epoch);
                }
            }
        }
        if !self.any_training() {
            return Ok(());
        }
        let secs = started.elapsed().as_secs_f64();
        let ips = (images > 0 && secs > 0.0).then(|| images as f64 / secs);
        let evals = evaluate(&self.net, &self.test)?;
        // Before the epoch's checkpoint, which is written once every point
        // up to it is acknowledged.
        if self.members[0].trial.analyses.variance {
            self.variance(epoch)?;
        }
        for (k, (m, eval)) in self.members.iter_mut().zip(evals).enumerate() {
            if m.training() {
                if let Err(h) = m.epoch_end(epoch, eval, ips, &Slot { net: &self.net, opt: &self.opt, k }) {
                    m.halt(h);
                }
            }
        }
        Ok(())
    }

    /// Stops, before batch `b`, every member the daemon asked to stop.
    fn poll_stops(&mut self, epoch: u32, b: u64) -> Result<(), tch::TchError> {
        for k in 0..self.members.len() {
            let m = &self.members[k];
            let Some(reason) = m.training().then(|| m.ctx.should_stop()).flatten() else { continue };
            let window = self.peek_window(k)?;
            self.members[k].stop(reason, epoch, b, window, &Slot { net: &self.net, opt: &self.opt, k });
        }
        Ok(())
    }

    /// Trains one batch (images `range` of each member's order): forward,
    /// backward, the logged losses and gradient norms every `log_every`
    /// batches, then the optimiser step.
    fn step(
        &mut self,
        epoch: u32,
        b: u64,
        orders: &[Vec<usize>],
        range: std::ops::Range<usize>,
    ) -> Result<(), tch::TchError> {
        let mut xs = Vec::with_capacity(self.members.len());
        let mut ys = Vec::with_capacity(self.members.len());
        for (m, order) in self.members.iter().zip(orders) {
            let mut aug = m.trial.train.augment.then(|| derived_rng(m.trial.seed, epoch, b));
            let (x, y) = self.train.batch(&order[range.clone()], aug.as_mut())?;
            xs.push(x);
            ys.push(y);
        }
        let x = if xs.len() == 1 { xs.remove(0) } else { Tensor::f_cat(&xs, 1)? };
        let y = Tensor::f_stack(&ys, 0)?;
        let logits = self.net.forward_t(&x, true);
        let losses = FusedNet::member_losses(&logits, &y)?;
        let active: Vec<i64> =
            (0..self.members.len() as i64).filter(|&k| self.members[k as usize].training()).collect();
        let total = if active.len() == self.members.len() {
            losses.f_sum(Kind::Float)?
        } else {
            let idx = Tensor::f_from_slice(&active)?.f_to_device(self.device)?;
            losses.f_index_select(0, &idx)?.f_sum(Kind::Float)?
        };
        self.opt.zero_grad();
        total.f_backward()?;
        // Summed in f64 so a window split by a checkpoint adds up the same
        // as an uninterrupted one.
        let l = losses.f_detach()?.f_to_kind(Kind::Double)?;
        self.window = Some(match self.window.take() {
            None => l,
            Some(w) => w.f_add(&l)?,
        });
        let mut log_now = false;
        for m in self.members.iter_mut().filter(|m| m.training()) {
            m.p.window_n += 1;
            m.p.step += 1;
            log_now = m.p.step % i64::from(m.trial.train.log_every) == 0;
        }
        if log_now {
            self.log(epoch)?;
        }
        self.opt.step()?;
        if !self.stepped {
            self.stepped = true;
            self.members.iter().for_each(|m| m.ctx.stepped());
        }
        Ok(())
    }

    /// Each member's mean loss over the logging window (a non-finite one
    /// ends the member as diverged), gradient norms and progress.
    fn log(&mut self, epoch: u32) -> Result<(), tch::TchError> {
        let sums = self.take_window()?;
        let mut norms: Option<Vec<Vec<f64>>> = None;
        for (k, s) in sums.into_iter().enumerate() {
            let m = &mut self.members[k];
            if !m.training() {
                continue;
            }
            m.p.window_sum += s;
            let mean = m.p.window_sum / m.p.window_n as f64;
            m.p.window_sum = 0.0;
            m.p.window_n = 0;
            if !mean.is_finite() {
                m.diverge(epoch);
                continue;
            }
            m.p.last_train_loss = Some(mean);
            if norms.is_none() {
                norms = Some(self.net.grad_norms()?);
            }
            let member_norms = norms.as_ref().map(|n| n[k].as_slice()).unwrap_or_default();
            let m = &mut self.members[k];
            if let Err(h) = send_log(m, epoch, mean, &self.groups, member_norms) {
                m.halt(h);
            }
        }
        Ok(())
    }

    /// Ends every member still training: evaluates the trained weights
    /// (once for all, unless the last epoch just did), then each member's
    /// final metrics and summary. A member resumed from its final
    /// checkpoint lands here directly.
    fn finish(&mut self) -> Result<(), tch::TchError> {
        // A group resumed from its final checkpoint takes no step: it is
        // measured here, once its weights and data are on the device, so
        // slot admission does not wait on it through its analyses.
        if !self.stepped {
            self.stepped = true;
            self.members.iter().for_each(|m| m.ctx.stepped());
        }
        let need = self.members.iter().any(|m| m.training() && m.last_eval.is_none());
        let fresh = if need { Some(evaluate(&self.net, &self.test)?) } else { None };
        let mut evals = Vec::with_capacity(self.members.len());
        for (k, m) in self.members.iter_mut().enumerate() {
            evals.push(match (m.last_eval.take(), &fresh) {
                (Some(e), _) => Some(e),
                (None, Some(f)) => Some(f[k].clone()),
                (None, None) => None,
            });
        }
        if self.members[0].trial.analyses.lesion {
            self.lesion(&evals)?;
        }
        if let Some(cfg) = self.members[0].trial.analyses.landscape {
            self.landscape(&cfg)?;
        }
        for (k, eval) in evals.into_iter().enumerate() {
            let m = &mut self.members[k];
            let Some(eval) = eval.filter(|_| m.training()) else { continue };
            match m.finish(eval, &Slot { net: &self.net, opt: &self.opt, k }) {
                Ok(outcome) => m.end = Some(Ok(outcome)),
                Err(h) => m.halt(h),
            }
        }
        Ok(())
    }
}

impl Group<'_, '_> {
    /// The variance analysis ([`variance::measure`]) on the current weights,
    /// sent as each training member's `analysis/variance/*` metrics
    /// ([`M`]) at step `epoch * VARIANCE_STEPS +
    /// layer` (layers numbered from 1, input to output; epoch 0 is the
    /// initialisation).
    fn variance(&mut self, epoch: u32) -> Result<(), tch::TchError> {
        let measured = variance::measure(&self.net, &self.train)?;
        send_to_training(self.members, |k, m| {
            for (l, v) in measured[k].iter().enumerate() {
                let step = i64::from(epoch) * VARIANCE_STEPS + l as i64 + 1;
                for (name, value, predicted) in [
                    (M::VARIANCE_FORWARD, v.forward, false),
                    (M::VARIANCE_FORWARD_PREDICTED, v.forward_predicted, true),
                    (M::VARIANCE_BACKWARD, v.backward, false),
                    (M::VARIANCE_BACKWARD_PREDICTED, v.backward_predicted, true),
                ] {
                    // A prediction is a product over every layer: it can
                    // overflow, or underflow to 0 (about 650 layers at the
                    // default init); neither is sent (and nothing
                    // non-finite goes on the wire).
                    if value.is_finite() && !(predicted && value == 0.0) {
                        m.ctx.metric(step, epoch, name, value)?;
                    }
                }
            }
            Ok(())
        });
        Ok(())
    }

    /// The loss landscape ([`landscape::study`]) around the trained
    /// weights, sent as each member's `analysis/landscape/*` metrics
    /// ([`M`]): loss and accuracy at step = grid point (row-major),
    /// sharpness and seconds at step 0. Stops as [`Self::lesion`] does.
    fn landscape(&mut self, cfg: &sweep_core::bmenet::LandscapeConfig) -> Result<(), tch::TchError> {
        let seeds: Vec<u64> = self.members.iter().map(|m| m.trial.seed).collect();
        let started = Instant::now();
        let members = &mut *self.members;
        let Some(study) = landscape::study(&self.net, &self.train, cfg, &seeds, || shed_stopped(members))? else {
            return Ok(());
        };
        let seconds = started.elapsed().as_secs_f64();
        let sharpness = landscape::sharpness(&study, cfg);
        send_to_training(self.members, |k, m| {
            let (ctx, epoch) = (m.ctx, m.trial.train.epochs.max(1));
            for (p, (loss, acc)) in study.loss.iter().zip(&study.accuracy).enumerate() {
                // A loss can overflow far from the trained weights; nothing
                // non-finite goes on the wire.
                if loss[k].is_finite() {
                    ctx.metric(p as i64, epoch, M::LANDSCAPE_LOSS, loss[k])?;
                }
                ctx.metric(p as i64, epoch, M::LANDSCAPE_ACCURACY, acc[k])?;
            }
            if sharpness[k].is_finite() {
                ctx.metric(0, epoch, M::LANDSCAPE_SHARPNESS, sharpness[k])?;
            }
            ctx.metric(0, epoch, M::LANDSCAPE_SECONDS, seconds)
        });
        tracing::info!(points = study.loss.len(), seconds, "loss landscape done");
        Ok(())
    }

    /// The lesion study ([`lesion::study`]) on the trained weights, its
    /// results sent as each member's `analysis/lesion/*` metrics ([`M`]):
    /// per block at step = its position, per number of blocks removed at
    /// step = that number, and the seconds. A member asked to stop stops
    /// (its final checkpoint is written, so its next attempt redoes only
    /// the study); the others go on ([`shed_stopped`]).
    fn lesion(&mut self, evals: &[Option<Eval>]) -> Result<(), tch::TchError> {
        let intact: Vec<f64> = evals.iter().map(|e| e.as_ref().map_or(f64::NAN, |e| e.accuracy)).collect();
        let started = Instant::now();
        let members = &mut *self.members;
        let Some(study) = lesion::study(&self.net, &self.test, &intact, || shed_stopped(members))? else {
            return Ok(());
        };
        let seconds = started.elapsed().as_secs_f64();
        send_to_training(self.members, |k, m| {
            if intact[k].is_nan() {
                return Ok(());
            }
            let (ctx, epoch) = (m.ctx, m.trial.train.epochs.max(1));
            for (block, acc) in &study.per_block {
                ctx.metric(*block, epoch, M::LESION_BLOCK, acc[k])?;
            }
            for (removed, acc) in &study.per_removed {
                ctx.metric(*removed, epoch, M::LESION_REMOVED, acc[k])?;
            }
            ctx.metric(0, epoch, M::LESION_SECONDS, seconds)
        });
        tracing::info!(evaluations = study.evaluations, seconds, "lesion study done");
        Ok(())
    }
}

/// Sends each training member `k`'s points with `send(k, member)`; a member
/// whose points are refused (its lease lost, a stop) ends with that reason,
/// the others go on.
fn send_to_training(
    members: &mut [Member<'_>],
    send: impl Fn(usize, &Member<'_>) -> Result<(), crate::trainer::StopReason>,
) {
    for (k, m) in members.iter_mut().enumerate().filter(|(_, m)| m.training()) {
        if let Err(r) = send(k, m) {
            m.halt(Halt::Stop(r));
        }
    }
}

/// Stops each training member whose daemon asked it to, with its own
/// reason (one member's lost lease ends only that member); `true` once no
/// member is left training, which ends an analysis early.
fn shed_stopped(members: &mut [Member<'_>]) -> bool {
    for m in members.iter_mut().filter(|m| m.training()) {
        if let Some(reason) = m.ctx.should_stop() {
            m.halt(Halt::Stop(reason));
        }
    }
    !members.iter().any(Member::training)
}

fn send_log(m: &Member<'_>, epoch: u32, mean: f64, groups: &[String], norms: &[f64]) -> Result<(), Halt> {
    let (ctx, step) = (m.ctx, m.p.step);
    ctx.metric(step, epoch, "train_loss", mean)?;
    for (g, v) in groups.iter().zip(norms) {
        ctx.metric(step, epoch, format!("grad_norm/{g}"), *v)?;
    }
    Ok(ctx.progress(epoch, step, Some(mean))?)
}
