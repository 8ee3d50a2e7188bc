//! Test-set evaluation of every member of a training group, under
//! `no_grad` and with `train = false` (batch norm uses its running
//! statistics). Gradient norms are [`super::fused::FusedNet::grad_norms`].

use tch::{Device, Kind, TchError, Tensor};

use super::cifar::CLASSES;
use super::device_data::DeviceSplit;
use super::fused::FusedNet;

/// Test images per forward pass when evaluating (BN uses running stats in
/// eval mode, so this does not change results, only speed and memory).
pub const EVAL_BATCH: usize = 500;

/// Test-set results.
#[derive(Debug, Clone)]
pub struct Eval {
    /// Mean cross-entropy per image.
    pub loss: f64,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// `confusion[true][pred]`.
    pub confusion: [[u64; CLASSES]; CLASSES],
}

impl Eval {
    /// The accuracy on the images of class `k`; `None` when it has none.
    pub fn class_accuracy(&self, k: usize) -> Option<f64> {
        let total: u64 = self.confusion[k].iter().sum();
        (total > 0).then(|| self.confusion[k][k] as f64 / total as f64)
    }
}

/// Evaluates every member of `net` on every image of `split` (on `net`'s
/// device), in order: one [`Eval`] per member. Each test batch is fed to
/// all members at once (the images repeated along the channel axis).
pub fn evaluate(net: &FusedNet, split: &DeviceSplit) -> Result<Vec<Eval>, TchError> {
    evaluate_without(net, split, &[])
}

/// [`evaluate`] with the blocks at indices `removed` replaced by the
/// identity ([`FusedNet::forward_without`]).
pub fn evaluate_without(net: &FusedNet, split: &DeviceSplit, removed: &[usize]) -> Result<Vec<Eval>, TchError> {
    evaluate_first(net, split, split.len(), removed)
}

/// [`evaluate_without`] on the first `count` images of `split` only.
pub fn evaluate_first(
    net: &FusedNet,
    split: &DeviceSplit,
    count: usize,
    removed: &[usize],
) -> Result<Vec<Eval>, TchError> {
    let _guard = tch::no_grad_guard();
    let k = net.members();
    let mut confusion = vec![[[0u64; CLASSES]; CLASSES]; k];
    let mut loss_sum = vec![0.0; k];
    let order: Vec<usize> = (0..count.min(split.len())).collect();
    for chunk in order.chunks(EVAL_BATCH) {
        let (x, y) = split.batch(chunk, None)?;
        let x = if k == 1 { x } else { x.f_repeat([1, k as i64, 1, 1])? };
        let logits = net.forward_without(&x, false, removed);
        let n = chunk.len() as i64;
        let labels = y.f_unsqueeze(0)?.f_expand([k as i64, n], false)?;
        let losses = logits
            .f_reshape([k as i64 * n, -1])?
            .f_log_softmax(-1, Kind::Float)?
            .f_nll_loss::<Tensor>(&labels.f_reshape([-1])?, None, tch::Reduction::None, -100)?
            .f_view([k as i64, n])?
            .f_sum_dim_intlist(1, false, Kind::Double)?
            .f_to_device(Device::Cpu)?;
        let losses = Vec::<f64>::try_from(&losses)?;
        let preds = logits.f_argmax(-1, false).and_then(|p| p.f_to_device(Device::Cpu))?;
        let preds = Vec::<i64>::try_from(&preds.f_reshape([-1])?)?;
        let truth = Vec::<i64>::try_from(&y.f_to_device(Device::Cpu)?)?;
        for m in 0..k {
            loss_sum[m] += losses[m];
            let member_preds = &preds[m * chunk.len()..(m + 1) * chunk.len()];
            for (&t, &p) in truth.iter().zip(member_preds) {
                if let Some(cell) = confusion[m].get_mut(t as usize).and_then(|row| row.get_mut(p as usize)) {
                    *cell += 1;
                }
            }
        }
    }
    let n = order.len().max(1) as f64;
    Ok(confusion
        .into_iter()
        .zip(loss_sum)
        .map(|(confusion, loss)| {
            let correct: u64 = (0..CLASSES).map(|c| confusion[c][c]).sum();
            Eval { loss: loss / n, accuracy: correct as f64 / n, confusion }
        })
        .collect())
}
