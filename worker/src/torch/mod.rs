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
//! - [`train`]: [`TorchTrainer`], the [`crate::trainer::Trainer`] the worker
//!   runs trials with.
//!
//! Only this module links libtorch; it exists with the `torch` feature.

pub mod bmenet;
pub mod checkpoint;
pub mod cifar;
pub mod optim;
pub mod summary;
pub mod train;

pub use bmenet::{BmeConfig, BmeNet, ModelError};
pub use summary::{model_table, param_counts};
pub use train::TorchTrainer;

/// The device to train on: the first CUDA GPU when libtorch sees one, else
/// the CPU.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}
