//! The sweep domain, free of I/O frameworks: what a grid is ([`grid`]), what
//! identifies a trial ([`trial`]), the statistics reports are made of
//! ([`stats`]) and the factorial effects built on them ([`effects`]).
//!
//! Everything here is deterministic and synchronous, so it is shared by the
//! CLI (which validates a grid before it is sent), the coordinator (which
//! validates it again, since the wire is not trusted) and the worker.

pub mod adaptive;
pub mod analysis_metric;
pub mod archive;
pub mod bmenet;
pub mod cell;
pub mod effects;
pub mod exec;
pub mod grid;
mod grid_exec;
mod grid_parse;
mod grid_rules;
mod grid_validate;
pub mod level;
pub mod point;
pub mod quote;
pub mod results;
pub mod schema;
pub mod state;
pub mod stats;
pub mod stored;
mod toml_doc;
pub mod trial;

pub use bmenet::{InitScheme, Optimizer, Precision, TrainConfig, MAX_DEPTH};
pub use cell::Cell;
pub use exec::{ExecSpec, TrainerSpec};
pub use grid::{
    DataConfig, Factor, GridError, GridSpec, RunConfig, Settings, MAX_DATASET_LEN, MAX_NAME_LEN, MAX_PATH_LEN,
    MAX_SEEDS_PER_CELL, MAX_TRIALS, NO_DATASET,
};
pub use level::{Level, LevelKind};
pub use results::{CurveSums, GradFlowSums, Provenance, SweepResults, TrialResult};
pub use schema::Schema;
pub use state::TrialState;
pub use trial::{TrialId, TrialSpec};

/// The default trainer's schema (BMEnet's). A grid's or trial's own is
/// [`GridSpec::schema`] / [`TrialSpec::schema`].
pub fn schema() -> &'static Schema {
    &bmenet::SCHEMA
}
