//! What a sweep produced, as the report reads it: every trial's final row
//! and per-cell sums of its curves and gradient norms. The coordinator
//! builds these from set-based queries; the wire carries them
//! (`AnalysisService.Analyze`); the CLI computes statistics from them.

use std::sync::Arc;

use crate::cell::Cell;
use crate::state::TrialState;

/// One trial's final row: its cell, seed, state and result values.
///
/// A sweep's trials share a few cells, settings and provenances: those are
/// `Arc`s, shared by the trials that have them (the store and the wire
/// conversion make one per distinct context of cell, settings and
/// provenance), so 100,000 trials cost 100,000 small rows, not 100,000
/// copies of their maps. Compare them by value (`*t.cell == c`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrialResult {
    /// The trial's ID (32 hex digits).
    pub trial_id: String,
    pub cell: Arc<Cell>,
    /// Hash of the cell with its train/data settings: two trials with the
    /// same levels but different `cell_key`s were trained differently.
    pub cell_key: String,
    pub seed: u64,
    pub state: TrialState,
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: Option<f64>,
    /// Provenance of the latest attempt: the worker's device (empty when
    /// unknown) and libtorch threads (0 when unknown or the default).
    pub device: String,
    pub threads: u32,
    /// The step at which the training loss became NaN or infinite
    /// (diverged trials that said so).
    pub diverged_step: Option<i64>,
    /// Training images the trial used, when fewer than asked for.
    pub train_images_used: Option<u64>,
    /// The trial's fixed `[train]` settings as stored (its factors are in
    /// `cell`; a setting its schema omits at the default is absent).
    pub settings: Arc<crate::Settings>,
    /// What the result was produced with (empty fields: unknown, e.g. a
    /// result from an older worker).
    pub provenance: Arc<Provenance>,
    /// The trainer's kind (`bmenet`, `exec`).
    pub trainer: String,
    /// The trial's final values by name (an exec command's
    /// `{"final": {...}}`, stored as `final/<name>` points): what `sweep
    /// report --metric NAME` reads.
    pub finals: std::collections::BTreeMap<String, f64>,
}

/// What a result was produced with, as its worker reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// The worker's version and `git describe` at build time.
    pub code_version: String,
    /// The libtorch its worker was built against, e.g. `2.11.0+cu130`.
    pub libtorch: String,
    /// The device's model (`NVIDIA H200`, a CPU's model name).
    pub device_name: String,
    /// SHA-256 (hex) of the dataset's files.
    pub dataset_sha256: String,
}

impl Provenance {
    pub fn is_empty(&self) -> bool {
        *self == Provenance::default()
    }
}

/// COUNT, SUM and SUM of squares of a metric at one step over a cell's
/// succeeded trials.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveSums {
    pub cell: Cell,
    pub metric: String,
    pub step: i64,
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

/// Gradient norm of one block at the first (`last == false`) or last logged
/// step of each succeeded trial, summed over a cell's trials.
#[derive(Debug, Clone, PartialEq)]
pub struct GradFlowSums {
    pub cell: Cell,
    /// The block name without the `grad_norm/` prefix (`stem`, `block01`, ..., `fc2`).
    pub block: String,
    pub last: bool,
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
    /// Mean over the trials of the step the value was logged at.
    pub mean_step: f64,
}

/// Everything a report is computed from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SweepResults {
    pub sweep_id: String,
    pub trials: Vec<TrialResult>,
    pub curves: Vec<CurveSums>,
    pub grad_flow: Vec<GradFlowSums>,
    /// The sweep's adaptive-seed plan, when it has one, and its strata as
    /// the coordinator judges them.
    pub adaptive: Option<crate::adaptive::SeedPlan>,
    pub strata: Vec<crate::adaptive::Stratum>,
}
