//! Real training with libtorch (through tch): BMEnet from the
//! skip-connections lecture on CIFAR-10 (issue 3).
//!
//! - [`cifar`]: the CIFAR-10 binary format, a process-wide dataset cache and
//!   a synthetic-data generator for tests and demos without the real set;
//! - [`bmenet`]: the network, its init schemes and per-block parameter
//!   groups (for gradient-flow metrics);
//! - [`summary`]: the per-layer table and both parameter totals;
//! - [`optim`]: SGD / Adam with checkpointable state;
//! - [`checkpoint`]: atomic on-disk checkpoints;
//! - [`batch`]: batch assembly (shuffling, normalisation, augmentation);
//! - [`device_data`]: the data on the training device, batches built there;
//! - [`fused`]: K networks of one configuration as one (fused seeds);
//! - [`eval`]: test-set evaluation of every member, under `no_grad`;
//! - [`lesion`]: Veit et al.'s lesion study on the trained weights
//!   (`[analysis] lesion = true`);
//! - [`variance`]: Glorot & Bengio's variance propagation, measured next to
//!   the lecture's equations (`[analysis] variance = true`);
//! - [`landscape`]: Li et al.'s loss landscape around the trained weights
//!   (`[analysis] landscape = true`);
//! - [`footprint`]: the device memory a training group is expected to take;
//! - [`resume`]: a run's position to and from its checkpoints;
//! - [`member`]: one trial of a training group (its spec, position,
//!   checkpoints and metrics);
//! - [`group`]: the training loop, for one trial or a fused group;
//! - [`train`]: [`TorchTrainer`], the [`crate::trainer::Trainer`] the worker
//!   runs trials with: splits what it is given into fusable groups.
//!
//! Only this module links libtorch; it exists with the `torch` feature.

// `u32::is_multiple_of` is newer (1.87) than the workspace's rust-version.
#![allow(clippy::manual_is_multiple_of)]

pub mod batch;
pub mod bmenet;
pub mod checkpoint;
pub mod cifar;
pub mod device_data;
pub mod eval;
pub mod footprint;
pub mod fused;
mod group;
pub mod landscape;
pub mod lesion;
mod member;
pub mod optim;
pub mod resume;
pub mod summary;
pub mod train;
pub mod variance;

pub use bmenet::{BmeConfig, BmeNet, ModelError};
pub use summary::{model_table, param_counts, try_model_table};
pub use train::TorchTrainer;

/// A libtorch error fails the trial (or the group) it happened in.
impl From<tch::TchError> for crate::trainer::TrainError {
    fn from(e: tch::TchError) -> Self {
        crate::trainer::TrainError::from_libtorch(&e.to_string())
    }
}

/// The device to train on: the first CUDA GPU when libtorch sees one, else
/// the CPU.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// A `--device` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {0:?}: expected cpu, cuda, cuda:N or auto")]
    Unknown(String),
    #[error("device {name:?}: libtorch sees {available} CUDA device(s){hint}")]
    Unavailable { name: String, available: usize, hint: &'static str },
}

/// Parses `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `auto` (first GPU, else
/// CPU). A CUDA device libtorch cannot see is an error here, at start-up,
/// rather than a failure of every trial later.
pub fn parse_device(s: &str) -> Result<tch::Device, DeviceError> {
    let s = s.trim();
    let index = match s.to_ascii_lowercase().as_str() {
        "cpu" => return Ok(tch::Device::Cpu),
        "auto" => return Ok(default_device()),
        "cuda" | "gpu" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => return Err(DeviceError::Unknown(s.to_owned())),
        },
    };
    let available = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
    if index >= available {
        let hint = if available == 0 { " (a CPU-only build, no GPU, or libtorch_cuda not linked)" } else { "" };
        return Err(DeviceError::Unavailable { name: s.to_owned(), available, hint });
    }
    Ok(tch::Device::Cuda(index))
}
