//! The sweep worker: a daemon that leases trials from a coordinator over gRPC
//! and trains them.
//!
//! Layout: [`daemon`] is the async network side (lease loop, heartbeats,
//! metric upload with acknowledgements, reconnect with backoff); [`trainer`]
//! is the seam to the computation, which runs on its own thread;
//! [`simulated`] is a deterministic test double for orchestration tests;
//! `torch` (feature `torch`, default) is the real BMEnet trainer on libtorch.

pub mod daemon;
pub mod simulated;
pub mod trainer;

#[cfg(feature = "torch")]
pub mod torch;
