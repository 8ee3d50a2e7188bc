//! Measurements of the network that train nothing, all under `no_grad`:
//! test-set evaluation ([`evaluate`], with `train = false`, so batch norm
//! uses its running statistics) and per-group gradient norms
//! ([`grad_norms`]).

use tch::nn::ModuleT;
use tch::{Device, Kind, TchError, Tensor};

use super::batch::{make_batch, Normalise};
use super::bmenet::{BmeNet, ParamGroup};
use super::cifar::{CifarSplit, CLASSES};

/// Test images per forward pass when evaluating (BN uses running stats in
/// eval mode, so this does not change results, only speed and memory).
const EVAL_BATCH: usize = 500;

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

/// Evaluates `net` on every image of `split`, in order.
pub fn evaluate(net: &BmeNet, split: &CifarSplit, norm: &Normalise, device: Device) -> Result<Eval, TchError> {
    let _guard = tch::no_grad_guard();
    let mut confusion = [[0u64; CLASSES]; CLASSES];
    let mut loss_sum = 0.0;
    let order: Vec<usize> = (0..split.len()).collect();
    for chunk in order.chunks(EVAL_BATCH) {
        let (x, y) = make_batch(split, chunk, None, norm, device)?;
        let logits = net.forward_t(&x, false);
        let loss = logits
            .f_log_softmax(-1, Kind::Float)
            .and_then(|l| l.f_nll_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100))
            .and_then(|l| l.f_double_value(&[]))?;
        loss_sum += loss;
        let preds = logits.f_argmax(-1, false).and_then(|p| p.f_to_device(Device::Cpu))?;
        let preds = Vec::<i64>::try_from(&preds)?;
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
pub fn grad_norms(groups: &[ParamGroup]) -> Result<Vec<f64>, TchError> {
    let _guard = tch::no_grad_guard();
    let mut sq = Vec::with_capacity(groups.len());
    for g in groups {
        let mut acc: Option<Tensor> = None;
        for p in &g.params {
            let grad = p.f_grad()?;
            if !grad.defined() {
                continue;
            }
            let s = grad.f_square().and_then(|s| s.f_sum(Kind::Float)).and_then(|s| s.f_reshape([1]))?;
            acc = Some(match acc {
                None => s,
                Some(a) => a.f_add(&s)?,
            });
        }
        let device = g.params.first().map_or(Device::Cpu, tch::Tensor::device);
        sq.push(match acc {
            Some(a) => a,
            None => Tensor::f_zeros([1], (Kind::Float, device))?,
        });
    }
    let norms = Tensor::f_cat(&sq, 0)
        .and_then(|t| t.f_sqrt())
        .and_then(|t| t.f_to_kind(Kind::Double))
        .and_then(|t| t.f_to_device(Device::Cpu))?;
    Vec::<f64>::try_from(&norms)
}
