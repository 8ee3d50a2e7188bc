//! Trial identity: a cell of the grid plus a seed, and its stable ID.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::grid::{DataConfig, InitScheme, TrainConfig};

/// Everything that makes one trial: the factor values of its cell, the
/// training and data settings, and the seed. Two trials with equal specs are
/// the same trial, whoever submits them and however often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSpec {
    pub depth: u32,
    pub skip: bool,
    pub init: InitScheme,
    pub batchnorm: bool,
    pub seed: u64,
    pub train: TrainConfig,
    pub data: DataConfig,
}

/// A trial's stable ID: the first 16 bytes of the SHA-256 of its canonical
/// form, in hex (32 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrialId(pub String);

impl std::fmt::Display for TrialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn short_hash(domain: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

impl TrialSpec {
    /// The canonical form: JSON with a fixed key order (struct order) and
    /// shortest round-trip float formatting. Changing it changes every ID, so
    /// it is versioned through the hash domain in [`TrialSpec::id`].
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a TrialSpec always serialises")
    }

    /// The canonical form without the seed: equal for all seeds of one cell.
    pub fn cell_canonical(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a TrialSpec always serialises");
        v.as_object_mut().expect("a struct serialises to an object").remove("seed");
        v.to_string()
    }

    /// Checks the spec against the grid rules (depth, seed, training and
    /// data settings), for a spec that arrived without a grid (e.g. over
    /// the wire). The error's key is the trial field (`depth`, `train.lr`).
    pub fn validate(&self) -> Result<(), crate::GridError> {
        crate::grid_parse::validate_trial(self)
    }

    /// The trial's ID within the sweep named `sweep`.
    pub fn id(&self, sweep: &str) -> TrialId {
        TrialId(short_hash("sweep.trial.v1", &[sweep, &self.canonical()]))
    }

    /// The ID of the trial's cell (the same for every seed).
    pub fn cell_key(&self, sweep: &str) -> String {
        short_hash("sweep.cell.v1", &[sweep, &self.cell_canonical()])
    }

    /// A short human label, e.g. `depth=32 skip=on init=default bn=on seed=1`.
    pub fn label(&self) -> String {
        format!(
            "depth={} skip={} init={} bn={} seed={}",
            self.depth,
            on_off(self.skip),
            self.init,
            on_off(self.batchnorm),
            self.seed
        )
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
