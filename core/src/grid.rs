//! `grid.toml`: the user's description of a sweep, parsed and validated.
//!
//! The key names here are a user contract (see the README's grid.toml
//! reference); renaming one breaks every grid file out there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adaptive::SeedPlan;
use crate::cell::Cell;
use crate::exec::TrainerSpec;
use crate::level::Level;
use crate::schema::Schema;

/// One factor of a grid: a name the trainer's schema knows and its levels
/// (non-empty, distinct, each valid for the key), crossed with the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub name: String,
    pub levels: Vec<Level>,
}

/// Fixed settings: every `[train]` key that is not a factor, with its value
/// (defaults filled in). Sorted by key: part of each trial's identity.
pub type Settings = BTreeMap<String, Level>;

/// `[data]`: where the data is and how much of it to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Only `"cifar10"` for now.
    pub dataset: String,
    /// Resolved against the grid file's folder at parse time.
    pub path: PathBuf,
    pub train_subset: Option<u64>,
    pub test_subset: Option<u64>,
}

/// `[run]`: scheduling settings. Not part of a trial's identity.
/// The whole table is optional; see [`Default`] for the values used then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub max_attempts: u32,
    pub priority: i32,
    /// Keep each succeeded trial's final weights instead of deleting its
    /// checkpoints once the result is stored (analyses of trained networks
    /// need them).
    #[serde(default)]
    pub keep_weights: bool,
    /// `target_halfwidth`, `max_seeds`, `contrast`: seeds added where the
    /// contrast's effect is still open ([`crate::adaptive`]). `None`: the
    /// planned seeds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<SeedPlan>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { max_attempts: 3, priority: 0, keep_weights: false, adaptive: None }
    }
}

/// The most seeds `run.max_seeds` may ask for per cell.
pub const MAX_SEEDS_PER_CELL: u32 = 1000;

/// Datasets a grid may name in `data.dataset` (the first is the default).
pub const DATASETS: &[&str] = &["cifar10", NO_DATASET];

/// The dataset of an exec grid without `[data]`: its command makes or
/// finds its own data (`path` empty, no subsets).
pub const NO_DATASET: &str = "none";

impl DataConfig {
    /// No data: an exec grid without `[data]`.
    pub fn none() -> DataConfig {
        DataConfig { dataset: NO_DATASET.to_owned(), path: PathBuf::new(), train_subset: None, test_subset: None }
    }

    pub fn is_none(&self) -> bool {
        self.dataset == NO_DATASET
    }
}

/// The most trials (cells × seeds) one grid may expand to. A typo such as
/// `seeds = 30000` should be an error, not a queue that takes a year.
pub const MAX_TRIALS: u64 = 100_000;

/// The longest sweep name; names end up in IDs, file names and tables.
pub const MAX_NAME_LEN: usize = 64;

/// The longest `data.path`, in bytes (PATH_MAX on Linux). It is copied into
/// every trial's spec, so it must be bounded.
pub const MAX_PATH_LEN: usize = 4096;

/// The longest `data.dataset`, in bytes.
pub const MAX_DATASET_LEN: usize = 32;

/// A parsed, validated grid file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    pub name: String,
    pub seeds: Vec<u64>,
    /// The factors in the schema's key order (expansion and display order).
    pub factors: Vec<Factor>,
    /// `[train]`: the settings that are not factors.
    pub train: Settings,
    pub data: DataConfig,
    pub run: RunConfig,
    /// `[trainer]`: BMEnet unless the grid names another.
    #[serde(default, skip_serializing_if = "TrainerSpec::is_bmenet")]
    pub trainer: TrainerSpec,
}

/// A grid file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `line`/`column` are 1-based; `key` is the dotted key (e.g. `grid.depth`),
    /// empty when a syntax error cannot be tied to one.
    #[error("{path}:{line}:{column}: {}{message}", key_prefix(.key))]
    Invalid { path: PathBuf, line: usize, column: usize, key: String, message: String },
    /// A spec that arrived without a file (e.g. over the wire) and is invalid.
    #[error("{key}: {message}")]
    Spec { key: String, message: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl GridSpec {
    /// Reads and validates a grid file. Relative data paths resolve against
    /// the file's folder.
    pub fn from_file(path: &Path) -> Result<GridSpec, GridError> {
        let text = std::fs::read_to_string(path).map_err(|source| GridError::Io { path: path.to_owned(), source })?;
        GridSpec::parse(&text, path)
    }

    /// Parses grid text; `path` names the file in errors and anchors relative
    /// data paths (made absolute and lexically normalised, without touching
    /// the filesystem).
    ///
    /// Required: `name`, `seeds`, the four `[grid]` factors and `data.path`.
    /// Everything else has a default: each `[train]` key the lecture demo's
    /// value ([`TrainConfig::default`]), `data.dataset` `"cifar10"`, no
    /// subsets, and `[run]` [`RunConfig::default`]. Every mistake is a
    /// [`GridError::Invalid`] pointing at the offending value (or at the
    /// table that lacks a key) with its dotted key.
    pub fn parse(text: &str, path: &Path) -> Result<GridSpec, GridError> {
        crate::grid_parse::parse(text, path)
    }

    /// Checks the invariants that parsing guarantees, for a spec built some
    /// other way (e.g. received over gRPC).
    pub fn validate(&self) -> Result<(), GridError> {
        crate::grid_validate::validate_spec(self)
    }

    /// The full factorial in factor order (the last factor varying
    /// fastest), seeds innermost.
    pub fn expand(&self) -> Vec<crate::TrialSpec> {
        let mut out = Vec::with_capacity(self.cell_count() * self.seeds.len());
        for cell in self.cells() {
            out.extend(self.trials_of(&cell));
        }
        out
    }

    /// The grid's cells in [`GridSpec::expand`]'s order (the first factor
    /// slowest), without their seeds.
    pub fn cells(&self) -> Vec<Cell> {
        let mut out = Vec::with_capacity(self.cell_count());
        let mut index = vec![0usize; self.factors.len()];
        if self.factors.iter().any(|f| f.levels.is_empty()) {
            return out;
        }
        loop {
            out.push(self.factors.iter().zip(&index).map(|(f, &i)| (f.name.clone(), f.levels[i].clone())).collect());
            // Odometer: advance the last factor, carrying leftwards.
            let mut k = self.factors.len();
            loop {
                if k == 0 {
                    return out;
                }
                k -= 1;
                index[k] += 1;
                if index[k] < self.factors[k].levels.len() {
                    break;
                }
                index[k] = 0;
            }
        }
    }

    /// The trials of one cell, one per seed, in seed order.
    pub fn trials_of(&self, cell: &Cell) -> Vec<crate::TrialSpec> {
        self.seeds.iter().map(|&seed| self.trial(cell.clone(), seed)).collect()
    }

    /// Whether `cell` is one of the grid's cells (a level of each factor,
    /// and no other key).
    pub fn has_cell(&self, cell: &Cell) -> bool {
        cell.0.len() == self.factors.len()
            && self.factors.iter().all(|f| cell.get(&f.name).is_some_and(|l| f.levels.contains(l)))
    }

    /// The trial of `cell` with `seed` under this grid's settings.
    pub fn trial(&self, cell: Cell, seed: u64) -> crate::TrialSpec {
        crate::TrialSpec {
            cell,
            train: self.train.clone(),
            data: self.data.clone(),
            seed,
            trainer: self.trainer.clone(),
        }
    }

    /// Number of cells (factor combinations), not counting seeds.
    pub fn cell_count(&self) -> usize {
        self.factors.iter().map(|f| f.levels.len()).product()
    }

    /// The factor called `name`, if the grid varies (or fixes) it there.
    pub fn factor(&self, name: &str) -> Option<&Factor> {
        self.factors.iter().find(|f| f.name == name)
    }

    /// The levels of factor `name` (empty when it is not a factor).
    pub fn levels(&self, name: &str) -> &[Level] {
        self.factor(name).map_or(&[], |f| &f.levels)
    }

    /// The schema of the trainer this grid is for.
    pub fn schema(&self) -> &'static Schema {
        self.trainer.schema()
    }
}
