//! The sweep worker: a daemon that leases trials from a coordinator over gRPC
//! and trains them.
//!
//! Layout: [`daemon`] is the async network side (lease loop, heartbeats,
//! metric upload with acknowledgements, reconnect with backoff); [`trainer`]
//! is the seam to the computation, which runs on its own thread;
//! [`uploader`] is the metric upload of one lease (batches, acknowledgements,
//! checkpoint barriers, refusals); `finish` holds the lease's other calls
//! (heartbeats; complete, fail, release with retries); `retry` is the one
//! reading of the coordinator's status codes and the backoff;
//! [`slots`] and [`admission`] decide how many trainings share the device,
//! within the free memory [`memory`] reads;
//! [`exec`] runs any command as a trial (`[trainer] kind = "exec"`), its
//! output kept in [`trial_log`];
//! [`simulated`] is a deterministic test double for orchestration tests;
//! `torch` (feature `torch`, default) is the real BMEnet trainer on libtorch.

pub mod admission;
pub mod daemon;
pub mod exec;
mod finish;
pub mod fuse;
mod log_shipper;
pub mod memory;
pub mod per_device;
pub mod provenance;
mod retry;
pub mod simulated;
pub mod slots;
pub mod telemetry;
pub mod trainer;
pub mod trial_log;
pub mod uploader;

#[cfg(feature = "torch")]
pub mod torch;
