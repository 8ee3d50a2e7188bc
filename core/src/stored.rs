//! How a trial's spec is stored, and the one way it is read back: by the
//! coordinator's store, and by the archive checker (`sweep import`), which
//! must accept only rows the store can read.
//!
//! A grid's shared settings (`train`, `data`) are stored once per distinct
//! value, keyed by the SHA-256 of their canonical JSON; each trial keeps
//! its own part (`cell`, `seed`) and references the settings by that hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Cell, DataConfig, Settings, TrainerSpec, TrialSpec};

/// The settings every trial of a grid shares.
#[derive(Serialize)]
struct SharedSettings<'a> {
    train: &'a Settings,
    data: &'a DataConfig,
    /// Absent for BMEnet, so its settings hashes are unchanged.
    #[serde(skip_serializing_if = "TrainerSpec::is_bmenet")]
    trainer: &'a TrainerSpec,
}

/// [`SharedSettings`], read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSettings {
    train: Settings,
    data: DataConfig,
    #[serde(default)]
    trainer: TrainerSpec,
}

/// A trial's own part of its spec.
#[derive(Serialize)]
struct OwnPart<'a> {
    cell: &'a Cell,
    seed: u64,
}

/// [`OwnPart`], read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredOwnPart {
    cell: Cell,
    seed: u64,
}

/// `(hash, JSON)` of shared settings: the SHA-256 (hex) of the canonical
/// JSON (struct field order, sorted setting keys, serde_json's floats).
pub fn shared_settings(train: &Settings, data: &DataConfig, trainer: &TrainerSpec) -> (String, String) {
    let json = serde_json::to_string(&SharedSettings { train, data, trainer }).expect("settings always serialise");
    (settings_hash(&json), json)
}

/// The hash shared settings are stored under.
pub fn settings_hash(json: &str) -> String {
    hex::encode(Sha256::digest(json.as_bytes()))
}

/// What a trial row stores of its spec: everything but the shared settings.
pub fn own_part(t: &TrialSpec) -> String {
    serde_json::to_string(&OwnPart { cell: &t.cell, seed: t.seed }).expect("a trial part always serialises")
}

/// A stored trial spec: its own part merged with its shared settings. The
/// error says which part cannot be read.
pub fn trial_spec(own: &str, settings: &str) -> Result<TrialSpec, String> {
    let own: StoredOwnPart = serde_json::from_str(own).map_err(|e| format!("stored spec cannot be read: {e}"))?;
    let shared = stored_settings(settings)?;
    Ok(TrialSpec { cell: own.cell, train: shared.train, data: shared.data, seed: own.seed, trainer: shared.trainer })
}

/// The fixed settings (`train`) and the trainer's kind of a stored
/// shared-settings row.
pub fn train_of(settings: &str) -> Result<(Settings, &'static str), String> {
    let s = stored_settings(settings)?;
    Ok((s.train, s.trainer.kind()))
}

fn stored_settings(settings: &str) -> Result<StoredSettings, String> {
    serde_json::from_str(settings).map_err(|e| format!("stored settings cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Level;

    fn spec() -> TrialSpec {
        let cell: Cell = [("a".to_owned(), Level::Int(8)), ("b".to_owned(), Level::Bool(true))].into_iter().collect();
        let train: Settings = [("lr".to_owned(), Level::Float(0.01))].into_iter().collect();
        let data =
            DataConfig { dataset: "cifar10".into(), path: "/d".into(), train_subset: Some(4), test_subset: None };
        TrialSpec { cell, train, data, seed: 3, trainer: TrainerSpec::Bmenet }
    }

    #[test]
    fn a_spec_round_trips_through_its_stored_parts() {
        let t = spec();
        let (hash, settings) = shared_settings(&t.train, &t.data, &t.trainer);
        assert_eq!(hash.len(), 64);
        assert_eq!(
            settings,
            r#"{"train":{"lr":0.01},"data":{"dataset":"cifar10","path":"/d","train_subset":4,"test_subset":null}}"#
        );
        assert_eq!(own_part(&t), r#"{"cell":{"a":8,"b":true},"seed":3}"#);
        assert_eq!(trial_spec(&own_part(&t), &settings).unwrap(), t);
    }

    #[test]
    fn an_old_form_is_refused_not_misread() {
        let t = spec();
        let (_, settings) = shared_settings(&t.train, &t.data, &t.trainer);
        // Before factors were data, the own part named each factor as a field.
        let old = r#"{"a":8,"b":true,"seed":3}"#;
        assert!(trial_spec(old, &settings).unwrap_err().contains("stored spec"));
        assert!(trial_spec(&own_part(&t), "{}").unwrap_err().contains("stored settings"));
    }
}
