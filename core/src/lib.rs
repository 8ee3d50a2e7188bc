//! The sweep domain, free of I/O frameworks: what a grid is ([`grid`]), what
//! identifies a trial ([`trial`]), the statistics reports are made of
//! ([`stats`]) and the factorial effects built on them ([`effects`]).
//!
//! Everything here is deterministic and synchronous, so it is shared by the
//! CLI (which validates a grid before it is sent), the coordinator (which
//! validates it again, since the wire is not trusted) and the worker.

pub mod effects;
pub mod grid;
mod grid_parse;
pub mod quote;
pub mod stats;
pub mod trial;

pub use grid::{
    DataConfig, Factors, GridError, GridSpec, InitScheme, Optimizer, RunConfig, TrainConfig, MAX_DATASET_LEN,
    MAX_DEPTH, MAX_NAME_LEN, MAX_PATH_LEN, MAX_TRIALS,
};
pub use trial::{TrialId, TrialSpec};
