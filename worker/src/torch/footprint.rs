//! The device memory a training group is expected to take, before it
//! starts: what the slot admission ([`crate::admission`]) reserves for it.
//! Deliberately simple and on the generous side; the admission corrects it
//! by what the first trainings actually took.
//!
//! Per member: weights, gradients and optimiser state (SGD's momentum: one
//! copy; Adam: two) in f32, plus the larger of the training step's and the
//! evaluation's activations. Training keeps every layer's output for the
//! backward pass and, during it, a gradient of the same size; evaluation
//! keeps only a layer's input and output, but for `EVAL_BATCH` images. On
//! top of the members: the group's copy of its data on the device
//! ([`super::device_data`]: padded uint8 images and int64 labels) and a
//! fixed allowance for cuDNN's workspace and the caching allocator's
//! rounding. Activations are counted at 32 bits whatever the trial's
//! `precision`: at bf16 the estimate is high, which costs packing, not
//! safety, and the learnt correction can bring it down.

use sweep_core::bmenet::{BmenetTrial, Optimizer};

use super::bmenet::ModelError;
use super::eval::EVAL_BATCH;
use super::summary::{layer_rows, param_counts};

/// Bytes of one f32.
const F32: u64 = 4;

/// cuDNN workspace and allocator rounding, per training group.
pub const FIXED_ALLOWANCE: u64 = 256 << 20;

/// The expected device memory, in bytes, of `members` trials of `trial`'s
/// configuration trained as one group.
pub fn estimate(trial: &BmenetTrial, members: usize) -> Result<u64, ModelError> {
    let (params, _) = param_counts(trial.depth, trial.skip, trial.batchnorm)?;
    let optimiser_copies = match trial.train.optimizer {
        Optimizer::Sgd => 1,
        Optimizer::Adam => 2,
    };
    let weights = params * F32 * (2 + optimiser_copies);
    let rows = layer_rows(trial.depth, trial.skip, trial.batchnorm)?;
    let per_image = |shape: &[i64]| shape.iter().skip(1).map(|&d| d.max(1) as u64).product::<u64>();
    let saved: u64 = rows.iter().map(|r| per_image(&r.shape)).sum();
    let widest = rows.iter().map(|r| per_image(&r.shape)).max().unwrap_or(0);
    let input = 3 * 32 * 32;
    // The variance analysis runs a forward and backward pass of its own
    // batch, keeping every layer's activations like a training step.
    let mut batch = u64::from(trial.train.batch_size);
    if trial.analyses.variance {
        batch = batch.max(super::variance::BATCH as u64);
    }
    let train = 2 * F32 * batch * (saved + input);
    let eval = 2 * F32 * EVAL_BATCH as u64 * widest.max(input);
    let images = trial.data.train_subset.unwrap_or(CIFAR_TRAIN).min(CIFAR_TRAIN)
        + trial.data.test_subset.unwrap_or(CIFAR_TEST).min(CIFAR_TEST);
    let data = images * (3 * 40 * 40 + 8);
    Ok(members.max(1) as u64 * (weights + train.max(eval)) + data + FIXED_ALLOWANCE)
}

/// CIFAR-10's training and test images (the most a split can hold).
const CIFAR_TRAIN: u64 = 50_000;
const CIFAR_TEST: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(depth: u32, batch: u32, optimizer: Optimizer) -> BmenetTrial {
        let mut t = sweep_core::bmenet::resolve(
            &sweep_core::GridSpec::parse(
                "name = \"t\"\nseeds = 1\n[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n[data]\npath = \"d\"\n",
                std::path::Path::new("t.toml"),
            )
            .expect("grid")
            .expand()
            .remove(0),
        )
        .expect("trial");
        t.depth = depth;
        t.train.batch_size = batch;
        t.train.optimizer = optimizer;
        t
    }

    #[test]
    fn grows_with_depth_batch_optimiser_and_members() {
        let base = estimate(&trial(8, 4, Optimizer::Sgd), 1).unwrap();
        assert!(base > FIXED_ALLOWANCE);
        assert!(estimate(&trial(32, 4, Optimizer::Sgd), 1).unwrap() > base);
        assert!(estimate(&trial(8, 256, Optimizer::Sgd), 1).unwrap() > base);
        assert!(estimate(&trial(8, 4, Optimizer::Adam), 1).unwrap() > base);
        let data = 60_000 * (3 * 40 * 40 + 8);
        let one = estimate(&trial(32, 64, Optimizer::Sgd), 1).unwrap() - FIXED_ALLOWANCE - data;
        let eight = estimate(&trial(32, 64, Optimizer::Sgd), 8).unwrap() - FIXED_ALLOWANCE - data;
        assert_eq!(eight, 8 * one);
        // Depth 32 (5.48M parameters) with SGD: 3 copies of the weights in
        // f32 are 66 MB; at batch 4 the activations are far smaller than
        // the evaluation's 500 images.
        let d32 = estimate(&trial(32, 4, Optimizer::Sgd), 1).unwrap() - FIXED_ALLOWANCE - data;
        assert!((60_000_000..400_000_000).contains(&d32), "{d32}");
    }
}
