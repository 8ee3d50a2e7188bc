//! How a trial's spec is stored, and the one way it is read back.
//!
//! A grid's shared settings (`train`, `data`) are stored once per distinct
//! value in `trial_settings`, keyed by the SHA-256 of their canonical JSON;
//! each trial row keeps its own part (`cell`, `seed`) in `spec_json` and
//! references the settings by `settings_hash`. Rows written by older code
//! are rewritten to this form when the store opens (`upgrade.rs`), so
//! [`stored_spec`] knows no other form.

use serde::{Deserialize, Serialize};
use sweep_core::{Cell, DataConfig, Settings, TrialSpec};

use super::StoreError;

/// The settings every trial of a grid shares, as stored in `trial_settings`.
#[derive(Serialize)]
struct SharedSettings<'a> {
    train: &'a Settings,
    data: &'a DataConfig,
}

/// [`SharedSettings`], read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSettings {
    train: Settings,
    data: DataConfig,
}

/// A trial row's own part of its spec (`trials.spec_json`).
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
pub(crate) fn shared_settings(train: &Settings, data: &DataConfig) -> (String, String) {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_string(&SharedSettings { train, data }).expect("settings always serialise");
    let hash = hex::encode(Sha256::digest(json.as_bytes()));
    (hash, json)
}

/// What a trial row stores of its spec: everything but the shared settings.
pub(crate) fn own_part(t: &TrialSpec) -> String {
    serde_json::to_string(&OwnPart { cell: &t.cell, seed: t.seed }).expect("a trial part always serialises")
}

/// A stored trial spec: the row's own part merged with its shared settings
/// (`None`: the settings row is missing).
pub(crate) fn stored_spec(trial_id: &str, own: &str, settings: Option<&str>) -> Result<TrialSpec, StoreError> {
    let corrupt = |what: &str, e: serde_json::Error| {
        StoreError::Corrupt(format!("trial {trial_id}: stored {what} cannot be read: {e}"))
    };
    let own: StoredOwnPart = serde_json::from_str(own).map_err(|e| corrupt("spec", e))?;
    let settings =
        settings.ok_or_else(|| StoreError::Corrupt(format!("trial {trial_id}: its shared settings are missing")))?;
    let shared: StoredSettings = serde_json::from_str(settings).map_err(|e| corrupt("settings", e))?;
    Ok(TrialSpec { cell: own.cell, train: shared.train, data: shared.data, seed: own.seed })
}

/// The fixed settings (`train`) of trial `trial_id`'s stored shared-settings
/// row.
pub(crate) fn stored_train(trial_id: &str, settings: &str) -> Result<Settings, StoreError> {
    let shared: StoredSettings = serde_json::from_str(settings)
        .map_err(|e| StoreError::Corrupt(format!("trial {trial_id}: stored settings cannot be read: {e}")))?;
    Ok(shared.train)
}

/// A stored cell (`trials.cell`).
pub(crate) fn stored_cell(text: &str) -> Result<Cell, StoreError> {
    Cell::from_json(text).map_err(|e| StoreError::Corrupt(format!("stored cell {text:?}: {e}")))
}

/// A sweep's stored grid (`sweeps.spec_json`).
pub(crate) fn stored_grid(sweep_id: &str, json: &str) -> Result<sweep_core::GridSpec, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("sweep {sweep_id:?}: stored grid: {e}")))
}

/// A stored trial state (`trials.state`).
pub(crate) fn stored_state(text: &str) -> Result<sweep_core::TrialState, StoreError> {
    sweep_core::TrialState::parse(text).map_err(StoreError::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sweep_core::Level;

    fn spec() -> TrialSpec {
        let cell: Cell = [("a".to_owned(), Level::Int(8)), ("b".to_owned(), Level::Bool(true))].into_iter().collect();
        let train: Settings = [("lr".to_owned(), Level::Float(0.01))].into_iter().collect();
        let data =
            DataConfig { dataset: "cifar10".into(), path: "/d".into(), train_subset: Some(4), test_subset: None };
        TrialSpec { cell, train, data, seed: 3 }
    }

    #[test]
    fn a_spec_round_trips_through_its_stored_parts() {
        let t = spec();
        let (hash, settings) = shared_settings(&t.train, &t.data);
        assert_eq!(hash.len(), 64);
        assert_eq!(
            settings,
            r#"{"train":{"lr":0.01},"data":{"dataset":"cifar10","path":"/d","train_subset":4,"test_subset":null}}"#
        );
        assert_eq!(own_part(&t), r#"{"cell":{"a":8,"b":true},"seed":3}"#);
        assert_eq!(stored_spec("x", &own_part(&t), Some(&settings)).unwrap(), t);
    }

    #[test]
    fn an_old_form_is_refused_not_misread() {
        let t = spec();
        let (_, settings) = shared_settings(&t.train, &t.data);
        // Before factors were data, the own part named each factor as a field.
        let old = r#"{"a":8,"b":true,"seed":3}"#;
        assert!(matches!(stored_spec("x", old, Some(&settings)), Err(StoreError::Corrupt(_))));
        assert!(matches!(stored_spec("x", &own_part(&t), None), Err(StoreError::Corrupt(_))));
    }
}
