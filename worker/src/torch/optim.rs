//! SGD (with momentum, L2 weight decay) and Adam, written on tensors.
//!
//! Why not `tch::nn::Optimizer`: in tch 0.24 it wraps libtorch's C++
//! optimiser behind an opaque handle with no way to read or restore its
//! state (momentum buffers, Adam moments and step count), so a resumed trial
//! would restart with zero momentum and its loss curve would differ from an
//! uninterrupted run. These implementations follow PyTorch's `torch.optim.SGD`
//! (dampening 0, no Nesterov) and `torch.optim.Adam` (L2 decay added to the
//! gradient, bias-corrected moments, no AMSGrad) update rules step for step,
//! and expose their state as named tensors for the checkpoint.

use std::collections::HashMap;

use tch::{TchError, Tensor};

/// Adam's fixed hyper-parameters (PyTorch's defaults); the grid only sets the
/// learning rate and weight decay. `momentum` is not used by Adam.
pub const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
pub const ADAM_EPS: f64 = 1e-8;

#[derive(Debug)]
enum Rule {
    Sgd { momentum: f64, bufs: Vec<Tensor> },
    Adam { m: Vec<Tensor>, v: Vec<Tensor> },
}

/// An optimiser over a fixed, named list of parameters.
#[derive(Debug)]
pub struct Optimizer {
    names: Vec<String>,
    params: Vec<Tensor>,
    lr: f64,
    weight_decay: f64,
    steps: i64,
    rule: Rule,
}

fn zeros_like_all(params: &[Tensor]) -> Vec<Tensor> {
    params.iter().map(|p| p.zeros_like().detach()).collect()
}

impl Optimizer {
    /// SGD over `params` (name, tensor); the order of `params` is the order
    /// of the state in checkpoints, so pass them sorted by name.
    pub fn sgd(params: Vec<(String, Tensor)>, lr: f64, momentum: f64, weight_decay: f64) -> Self {
        let (names, params): (Vec<_>, Vec<_>) = params.into_iter().unzip();
        let bufs = if momentum != 0.0 { zeros_like_all(&params) } else { Vec::new() };
        Optimizer { names, params, lr, weight_decay, steps: 0, rule: Rule::Sgd { momentum, bufs } }
    }

    /// Adam over `params` (name, tensor), betas (0.9, 0.999), eps 1e-8.
    pub fn adam(params: Vec<(String, Tensor)>, lr: f64, weight_decay: f64) -> Self {
        let (names, params): (Vec<_>, Vec<_>) = params.into_iter().unzip();
        let m = zeros_like_all(&params);
        let v = zeros_like_all(&params);
        Optimizer { names, params, lr, weight_decay, steps: 0, rule: Rule::Adam { m, v } }
    }

    /// Optimiser steps taken (restored from checkpoints).
    pub fn steps(&self) -> i64 {
        self.steps
    }

    pub fn kind(&self) -> &'static str {
        match self.rule {
            Rule::Sgd { .. } => "sgd",
            Rule::Adam { .. } => "adam",
        }
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update from the current gradients. Parameters without a gradient
    /// are left alone.
    pub fn step(&mut self) -> Result<(), TchError> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let (lr, wd) = (self.lr, self.weight_decay);
        match &mut self.rule {
            Rule::Sgd { momentum, bufs } => {
                for (i, p) in self.params.iter_mut().enumerate() {
                    let g = p.f_grad()?;
                    if !g.defined() {
                        continue;
                    }
                    let d = if wd != 0.0 { g.f_add(&p.f_mul_scalar(wd)?)? } else { g };
                    if *momentum != 0.0 {
                        // buf = momentum * buf + d (PyTorch starts buf at d,
                        // which is the same as starting it at zero).
                        let buf = &mut bufs[i];
                        let _ = buf.f_mul_scalar_(*momentum)?;
                        let _ = buf.f_add_(&d)?;
                        let _ = p.f_sub_(&buf.f_mul_scalar(lr)?)?;
                    } else {
                        let _ = p.f_sub_(&d.f_mul_scalar(lr)?)?;
                    }
                }
            }
            Rule::Adam { m, v } => {
                let (b1, b2) = ADAM_BETAS;
                let t = self.steps as i32;
                let bc1 = 1.0 - b1.powi(t);
                let bc2 = 1.0 - b2.powi(t);
                let step_size = lr / bc1;
                for (i, p) in self.params.iter_mut().enumerate() {
                    let g = p.f_grad()?;
                    if !g.defined() {
                        continue;
                    }
                    let g = if wd != 0.0 { g.f_add(&p.f_mul_scalar(wd)?)? } else { g };
                    // The operations (and so the rounding) of
                    // torch.optim.Adam's single-tensor path:
                    //   exp_avg.lerp_(grad, 1 - beta1)
                    //   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    //   denom = (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps)
                    //   param.addcdiv_(exp_avg, denom, value=-step_size)
                    // (tch's addcmul_/addcdiv_ have no `value`: it is folded
                    // into the first factor, which is what libtorch's kernels
                    // compute first anyway). Mathematically equal
                    // formulations round differently, and Adam can amplify
                    // that: docs/fidelity.md.
                    let _ = m[i].f_lerp_(&g, 1.0 - b1)?;
                    let _ = v[i].f_mul_scalar_(b2)?;
                    let _ = v[i].f_addcmul_(&g.f_mul_scalar(1.0 - b2)?, &g)?;
                    let denom = v[i].f_sqrt()?.f_div_scalar(bc2.sqrt())?.f_add_scalar(ADAM_EPS)?;
                    let _ = p.f_addcdiv_(&m[i].f_mul_scalar(-step_size)?, &denom)?;
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors, for a checkpoint (`sgd.momentum.<param>`,
    /// `adam.m.<param>`, `adam.v.<param>`); the step count goes in the
    /// checkpoint's metadata.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        match &self.rule {
            Rule::Sgd { bufs, .. } => {
                for (n, b) in self.names.iter().zip(bufs) {
                    out.push((format!("sgd.momentum.{n}"), b.shallow_clone()));
                }
            }
            Rule::Adam { m, v } => {
                for (n, t) in self.names.iter().zip(m) {
                    out.push((format!("adam.m.{n}"), t.shallow_clone()));
                }
                for (n, t) in self.names.iter().zip(v) {
                    out.push((format!("adam.v.{n}"), t.shallow_clone()));
                }
            }
        }
        out
    }

    /// Restores what [`Optimizer::state_tensors`] saved. Every expected
    /// tensor must be present with the right shape.
    pub fn load_state(&mut self, saved: &HashMap<String, Tensor>, steps: i64) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        let names = self.names.clone();
        let restore = |prefix: &str, dst: &mut [Tensor]| -> Result<(), String> {
            for (n, d) in names.iter().zip(dst.iter_mut()) {
                let key = format!("{prefix}.{n}");
                let src = saved.get(&key).ok_or_else(|| format!("optimizer state lacks {key}"))?;
                if src.size() != d.size() {
                    return Err(format!("{key}: shape {:?}, expected {:?}", src.size(), d.size()));
                }
                d.f_copy_(src).map_err(|e| format!("{key}: {e}"))?;
            }
            Ok(())
        };
        match &mut self.rule {
            Rule::Sgd { bufs, .. } => restore("sgd.momentum", bufs)?,
            Rule::Adam { m, v } => {
                restore("adam.m", m)?;
                restore("adam.v", v)?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}
