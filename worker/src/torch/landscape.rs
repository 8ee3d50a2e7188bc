//! The loss landscape of Li, Xu, Taylor, Studer & Goldstein (NeurIPS 2018,
//! "Visualizing the loss landscape of neural nets"): the training loss
//! around the trained weights `w*` along one or two random directions,
//! `L(w* + a d1 + b d2)` for `a, b` on a grid over `-span..=span`.
//!
//! Directions are filter-normalised, as the paper does: a Gaussian draw
//! with the shape of every convolution and linear weight, each filter (one
//! output channel or neuron) rescaled to the norm of the same filter of
//! the trained weights, so the plot does not depend on the weights' scale
//! (which batch norm leaves free). Biases and batch-norm parameters get no
//! direction (zero), and batch norm evaluates on its running statistics as
//! trained. Each member of a fused group gets its own directions, drawn
//! from its seed; the loss is evaluated on the first `images` training
//! images (no augmentation), with the accuracy.
//!
//! The weights are moved in place and restored exactly (copied back from
//! a saved copy) after the study, also when it is stopped.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use sweep_core::bmenet::LandscapeConfig;
use tch::{TchError, Tensor};

use super::device_data::DeviceSplit;
use super::eval::evaluate_first;
use super::fused::FusedNet;

/// Per grid point, per member: the loss and accuracy. Points are in
/// row-major order (`i * resolution + j` for 2-D: `i` along the first
/// direction).
#[derive(Debug, Clone, PartialEq)]
pub struct Landscape {
    pub loss: Vec<Vec<f64>>,
    pub accuracy: Vec<Vec<f64>>,
}

/// Standard normal draws (Box-Muller), from a generator of the member's
/// seed and the direction's number.
fn normals(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let v: f64 = rng.random();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// The weights that get a direction: every convolution and linear weight
/// (two or more dimensions), by name.
fn directed(net: &FusedNet) -> Vec<(String, Tensor)> {
    net.trainable().into_iter().filter(|(n, t)| n.ends_with(".weight") && t.dim() >= 2).collect()
}

/// Direction number `which` for every member (member `k` from `seeds[k]`),
/// fused like the weights: name -> `[K * rows, ...]`, filter-normalised.
pub fn direction(net: &FusedNet, seeds: &[u64], which: u64) -> Result<BTreeMap<String, Tensor>, TchError> {
    let _guard = tch::no_grad_guard();
    let mut rngs: Vec<rand::rngs::StdRng> = seeds
        .iter()
        .map(|&s| rand::rngs::StdRng::seed_from_u64(s.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (0x1a2d_5ca9 + which)))
        .collect();
    let mut out = BTreeMap::new();
    for (name, w) in directed(net) {
        let mut parts = Vec::with_capacity(seeds.len());
        for (k, rng) in rngs.iter_mut().enumerate() {
            let slice = net.slice(&name, k)?;
            let raw = Tensor::from_slice(&normals(rng, slice.numel()))
                .f_reshape(slice.size().as_slice())?
                .f_to_device(w.device())?;
            // Per filter (dimension 0): scale to the trained filter's norm.
            let rows = slice.size()[0];
            let flat_w = slice.f_detach()?.f_reshape([rows, -1])?;
            let flat_d = raw.f_reshape([rows, -1])?;
            let wn = flat_w.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?;
            let dn = flat_d.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?.f_clamp_min(1e-12)?;
            parts.push(flat_d.f_mul(&wn.f_div(&dn)?)?.f_reshape(slice.size().as_slice())?);
        }
        out.insert(name, Tensor::f_cat(&parts, 0)?);
    }
    Ok(out)
}

/// Evaluates the grid of `cfg` around `net`'s weights on the first
/// `cfg.images` images of `train`; `Ok(None)` when `stopped` said stop
/// (asked before each point). The weights are restored either way.
pub fn study(
    net: &FusedNet,
    train: &DeviceSplit,
    cfg: &LandscapeConfig,
    seeds: &[u64],
    mut stopped: impl FnMut() -> bool,
) -> Result<Option<Landscape>, TchError> {
    let d1 = direction(net, seeds, 1)?;
    let d2 = if cfg.dims == 2 { Some(direction(net, seeds, 2)?) } else { None };
    let weights = directed(net);
    let saved: Vec<Tensor> = {
        let _guard = tch::no_grad_guard();
        weights
            .iter()
            .map(|(_, w)| {
                let mut copy = w.f_zeros_like()?;
                copy.f_copy_(w)?;
                Ok(copy)
            })
            .collect::<Result<_, TchError>>()?
    };
    let restore = |weights: &[(String, Tensor)]| -> Result<(), TchError> {
        let _guard = tch::no_grad_guard();
        for ((_, w), s) in weights.iter().zip(&saved) {
            w.shallow_clone().f_copy_(s)?;
        }
        Ok(())
    };
    let r = cfg.resolution;
    let second: Vec<u32> = if cfg.dims == 2 { (0..r).collect() } else { vec![r / 2] };
    let mut out = Landscape { loss: Vec::new(), accuracy: Vec::new() };
    for i in 0..r {
        for &j in &second {
            if stopped() {
                restore(&weights)?;
                return Ok(None);
            }
            let (a, b) = (cfg.coordinate(i), cfg.coordinate(j));
            {
                let _guard = tch::no_grad_guard();
                for ((name, w), s) in weights.iter().zip(&saved) {
                    let mut moved = s.f_add(&d1[name].f_mul_scalar(a)?)?;
                    if let Some(d2) = &d2 {
                        moved = moved.f_add(&d2[name].f_mul_scalar(b)?)?;
                    }
                    w.shallow_clone().f_copy_(&moved)?;
                }
            }
            let evals = evaluate_first(net, train, cfg.images as usize, &[]);
            let evals = match evals {
                Ok(e) => e,
                Err(e) => {
                    restore(&weights)?;
                    return Err(e);
                }
            };
            out.loss.push(evals.iter().map(|e| e.loss).collect());
            out.accuracy.push(evals.iter().map(|e| e.accuracy).collect());
        }
    }
    restore(&weights)?;
    Ok(Some(out))
}

/// Each member's sharpness: the mean loss rise, over the grid points on
/// the axes nearest `span / 2` from the trained weights, above the loss at
/// the trained weights (the grid's middle point).
pub fn sharpness(l: &Landscape, cfg: &LandscapeConfig) -> Vec<f64> {
    let r = cfg.resolution as usize;
    let mid = r / 2;
    let quarter = ((r - 1) as f64 / 4.0).round() as usize;
    let index = |i: usize, j: usize| if cfg.dims == 2 { i * r + j } else { i };
    let origin = &l.loss[index(mid, mid)];
    let mut around = vec![index(mid - quarter, mid), index(mid + quarter, mid)];
    if cfg.dims == 2 {
        around.extend([index(mid, mid - quarter), index(mid, mid + quarter)]);
    }
    (0..origin.len())
        .map(|m| around.iter().map(|&p| l.loss[p][m]).sum::<f64>() / around.len() as f64 - origin[m])
        .collect()
}
