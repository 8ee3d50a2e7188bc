//! `grid.toml`: the user's description of a sweep, parsed and validated.
//!
//! The key names here are a user contract (see the README's grid.toml
//! reference); renaming one breaks every grid file out there.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Weight-initialisation schemes (grid factor `init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// libtorch's own defaults.
    Default,
    XavierUniform,
    XavierNormal,
    /// Fan-in, ReLU gain.
    KaimingUniform,
    /// Fan-in, ReLU gain.
    KaimingNormal,
}

impl InitScheme {
    pub const ALL: [InitScheme; 5] = [
        InitScheme::Default,
        InitScheme::XavierUniform,
        InitScheme::XavierNormal,
        InitScheme::KaimingUniform,
        InitScheme::KaimingNormal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InitScheme::Default => "default",
            InitScheme::XavierUniform => "xavier_uniform",
            InitScheme::XavierNormal => "xavier_normal",
            InitScheme::KaimingUniform => "kaiming_uniform",
            InitScheme::KaimingNormal => "kaiming_normal",
        }
    }
}

impl std::fmt::Display for InitScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InitScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InitScheme::ALL.into_iter().find(|i| i.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = InitScheme::ALL.iter().map(|i| i.as_str()).collect();
            format!("unknown init scheme {}; expected one of {}", crate::quote::short(s), names.join(", "))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Sgd,
    Adam,
}

impl Optimizer {
    pub fn as_str(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
        }
    }
}

impl std::str::FromStr for Optimizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sgd" => Ok(Optimizer::Sgd),
            "adam" => Ok(Optimizer::Adam),
            _ => Err(format!("unknown optimizer {}; expected \"sgd\" or \"adam\"", crate::quote::short(s))),
        }
    }
}

/// The factors, crossed as a full factorial. Each list is non-empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factors {
    pub depth: Vec<u32>,
    pub skip: Vec<bool>,
    pub init: Vec<InitScheme>,
    pub batchnorm: Vec<bool>,
}

/// `[train]`: how every trial trains. Part of each trial's identity.
///
/// Every key may be left out of the file; the [`Default`] values are the
/// lecture demo's settings (6 epochs, batch size 4, SGD with lr 1e-4 and
/// momentum 0.9, no weight decay, a logged loss every 2000 batches, no
/// augmentation), so a grid that only varies the factors stays short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: u32,
    pub batch_size: u32,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Batches between logged mean training losses.
    pub log_every: u32,
    pub augment: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 6,
            batch_size: 4,
            optimizer: Optimizer::Sgd,
            lr: 1e-4,
            momentum: 0.9,
            weight_decay: 0.0,
            log_every: 2000,
            augment: false,
        }
    }
}

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
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { max_attempts: 3, priority: 0, keep_weights: false }
    }
}

/// Datasets a grid may name in `data.dataset` (the first is the default).
pub const DATASETS: &[&str] = &["cifar10"];

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

/// The deepest network a grid may ask for (`grid.depth`). Far beyond what
/// the ablations need (64), and small enough that one trial cannot build a
/// model that exhausts a worker.
pub const MAX_DEPTH: u32 = 1024;

/// A parsed, validated grid file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    pub name: String,
    pub seeds: Vec<u64>,
    pub grid: Factors,
    pub train: TrainConfig,
    pub data: DataConfig,
    pub run: RunConfig,
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
        crate::grid_parse::validate_spec(self)
    }

    /// The full factorial, seeds innermost, in a stable order.
    pub fn expand(&self) -> Vec<crate::TrialSpec> {
        let mut out = Vec::with_capacity(self.cell_count() * self.seeds.len());
        for &depth in &self.grid.depth {
            for &skip in &self.grid.skip {
                for &init in &self.grid.init {
                    for &batchnorm in &self.grid.batchnorm {
                        for &seed in &self.seeds {
                            out.push(crate::TrialSpec {
                                depth,
                                skip,
                                init,
                                batchnorm,
                                seed,
                                train: self.train.clone(),
                                data: self.data.clone(),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Number of cells (factor combinations), not counting seeds.
    pub fn cell_count(&self) -> usize {
        self.grid.depth.len() * self.grid.skip.len() * self.grid.init.len() * self.grid.batchnorm.len()
    }
}
