//! Variance propagation, the lecture's explanation of vanishing gradients
//! (Glorot & Bengio, 2010; the lecture's Eqs. 5 and 6), measured on the
//! network being trained next to what the equations predict from each
//! layer's fan and weight variance.
//!
//! For every weight layer `l` (convolutions and linear layers, input to
//! output), per member, on a fixed batch (the first [`BATCH`] training
//! images, unaugmented, batch norm on its running statistics so nothing
//! changes):
//! - `forward`: the variance of the layer's input `z^l`;
//! - `forward_predicted`: Eq. 5, `Var[x] * prod_{l' < l} n_in(l') Var[w^l']`
//!   with `Var[x]` the measured input variance;
//! - `backward`: the variance of the gradient of the loss with respect to
//!   the layer's output `s^l` (before its activation);
//! - `backward_predicted`: Eq. 6, `Var[dL/ds^last] * prod_{l' > l}
//!   n_out(l') Var[w^l']` with the last layer's measured value.
//!
//! `n_in` is the fan-in (input channels x kernel area, or the input width),
//! `n_out` the fan-out (output channels x kernel area); `Var[w]` the
//! variance of the layer's weights. The equations ignore ReLU, batch norm,
//! pooling and the skip connections: where the measured curve leaves the
//! predicted one is what those parts of the network do.

use tch::{Kind, TchError, Tensor};

use super::device_data::DeviceSplit;
use super::fused::{FusedNet, Traced};

/// Training images in the fixed batch.
pub const BATCH: usize = 64;

/// One layer's measured and predicted variances, for one member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerVariance {
    pub forward: f64,
    pub forward_predicted: f64,
    pub backward: f64,
    pub backward_predicted: f64,
}

/// Per member `[K, ...]` variances of a fused activation: `[N, K*C, H, W]`
/// (members along channels) or `[K, N, in]` (members first).
fn per_member(t: &Tensor, k: i64, members_first: bool) -> Result<Vec<f64>, TchError> {
    let t = t.f_to_kind(Kind::Double)?;
    let rows = if members_first {
        t.f_reshape([k, -1])?
    } else {
        let n = t.size()[0];
        t.f_reshape([n, k, -1])?.f_transpose(0, 1)?.f_reshape([k, -1])?
    };
    Vec::<f64>::try_from(&rows.f_var_dim(1, false, false)?.f_to_device(tch::Device::Cpu)?)
}

/// Measures every layer of every member of `net` on the first [`BATCH`]
/// images of `train`: `result[member][layer]`, layers in forward order.
pub fn measure(net: &FusedNet, train: &DeviceSplit) -> Result<Vec<Vec<LayerVariance>>, TchError> {
    let k = net.members() as i64;
    let order: Vec<usize> = (0..train.len().min(BATCH)).collect();
    let (x, y) = train.batch(&order, None)?;
    let x = if k == 1 { x } else { x.f_repeat([1, k, 1, 1])? };
    let labels = y.f_unsqueeze(0)?.f_expand([k, order.len() as i64], false)?.f_contiguous()?;
    let (logits, layers) = net.forward_traced(&x, false);
    let loss = FusedNet::member_losses(&logits, &labels)?.f_sum(Kind::Float)?;
    // Gradients with respect to the layers' outputs only: the weights'
    // `.grad` is left as it was.
    let outputs: Vec<&Tensor> = layers.iter().map(|l| &l.output).collect();
    let grads = Tensor::f_run_backward(&[&loss], &outputs, false, false)?;
    let _guard = tch::no_grad_guard();
    let mut forward = Vec::with_capacity(layers.len());
    let mut backward = Vec::with_capacity(layers.len());
    let mut factor_in = Vec::with_capacity(layers.len());
    let mut factor_out = Vec::with_capacity(layers.len());
    for (l, g) in layers.iter().zip(&grads) {
        let members_first = l.input.dim() == 3;
        forward.push(per_member(&l.input, k, members_first)?);
        backward.push(per_member(g, k, members_first)?);
        let w_var = weight_variance(l, k)?;
        factor_in.push(w_var.iter().map(|v| v * l.fan_in as f64).collect::<Vec<_>>());
        factor_out.push(w_var.iter().map(|v| v * l.fan_out as f64).collect::<Vec<_>>());
    }
    let n = layers.len();
    let mut out = vec![Vec::with_capacity(n); k as usize];
    for (m, member) in out.iter_mut().enumerate() {
        let mut fwd_pred = vec![0.0; n];
        let mut bwd_pred = vec![0.0; n];
        if n > 0 {
            fwd_pred[0] = forward[0][m];
            for l in 1..n {
                fwd_pred[l] = fwd_pred[l - 1] * factor_in[l - 1][m];
            }
            bwd_pred[n - 1] = backward[n - 1][m];
            for l in (0..n - 1).rev() {
                bwd_pred[l] = bwd_pred[l + 1] * factor_out[l + 1][m];
            }
        }
        for l in 0..n {
            member.push(LayerVariance {
                forward: forward[l][m],
                forward_predicted: fwd_pred[l],
                backward: backward[l][m],
                backward_predicted: bwd_pred[l],
            });
        }
    }
    Ok(out)
}

/// Each member's weight variance of layer `l`.
fn weight_variance(l: &Traced, k: i64) -> Result<Vec<f64>, TchError> {
    let w = l.weight.f_detach()?.f_to_kind(Kind::Double)?.f_reshape([k, -1])?;
    Vec::<f64>::try_from(&w.f_var_dim(1, false, false)?.f_to_device(tch::Device::Cpu)?)
}
