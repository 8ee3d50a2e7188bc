//! Generated code for the `sweep.v1` gRPC protocol.
//!
//! These types stop at the edge: the coordinator, worker and CLI convert them
//! into `sweep_core` domain types with `TryFrom` as soon as they arrive.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sweep.v1");

    /// Encoded `FileDescriptorSet`, for tonic-reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sweep_descriptor.bin"));
}

pub mod client;
pub mod convert;
pub mod logging;
