//! Trial identity: a cell of the grid plus a seed, and its stable ID.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cell::Cell;
use crate::exec::TrainerSpec;
use crate::grid::{DataConfig, Settings};
use crate::level::Level;

/// Everything that makes one trial: its cell (the factor levels), the
/// fixed training settings, the data settings, and the seed. Two trials
/// with equal specs are the same trial, whoever submits them and however
/// often.
///
/// Field order is the canonical JSON's key order; do not reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialSpec {
    pub cell: Cell,
    pub train: Settings,
    pub data: DataConfig,
    pub seed: u64,
    /// The trainer (BMEnet, the default, is not written: the IDs of BMEnet
    /// trials do not depend on this field's existence).
    #[serde(default, skip_serializing_if = "TrainerSpec::is_bmenet")]
    pub trainer: TrainerSpec,
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

/// The hash domain of trial IDs. Version 1 hashed a struct with the four
/// BMEnet factors as fields; version 2 hashes the cell as a sorted map.
pub const TRIAL_ID_DOMAIN: &str = "sweep.trial.v2";
/// The hash domain of cell keys (see [`TRIAL_ID_DOMAIN`]).
pub const CELL_KEY_DOMAIN: &str = "sweep.cell.v2";

impl TrialSpec {
    /// The canonical form: JSON with a fixed key order (struct order, maps
    /// sorted) and shortest round-trip float formatting. Changing it changes
    /// every ID, so it is versioned through [`TRIAL_ID_DOMAIN`].
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a TrialSpec always serialises")
    }

    /// The canonical form without the seed: equal for all seeds of one cell.
    pub fn cell_canonical(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a TrialSpec always serialises");
        v.as_object_mut().expect("a struct serialises to an object").remove("seed");
        v.to_string()
    }

    /// Checks the spec against its trainer's schema (every key once, as a
    /// factor level or a setting, each valid), the seed and the data
    /// settings, for a spec that arrived without a grid (e.g. over the
    /// wire). The error's key is the factor or `train.`/`data.` key.
    pub fn validate(&self) -> Result<(), crate::GridError> {
        crate::grid_validate::validate_trial(self)
    }

    /// The level of key `name`: the cell's, else the fixed setting's.
    pub fn level(&self, name: &str) -> Option<&Level> {
        self.cell.get(name).or_else(|| self.train.get(name))
    }

    /// The trial's ID within the sweep named `sweep`.
    pub fn id(&self, sweep: &str) -> TrialId {
        TrialId(short_hash(TRIAL_ID_DOMAIN, &[sweep, &self.canonical()]))
    }

    /// The ID of the trial's cell with its settings (the same for every seed).
    pub fn cell_key(&self, sweep: &str) -> String {
        short_hash(CELL_KEY_DOMAIN, &[sweep, &self.cell_canonical()])
    }

    /// A short human label, e.g. `depth=32 skip=on init=default bn=on seed=1`.
    pub fn label(&self) -> String {
        format!("{} seed={}", self.cell.label(self.schema()), self.seed)
    }

    /// The schema of this trial's trainer.
    pub fn schema(&self) -> &'static crate::Schema {
        self.trainer.schema()
    }
}
