//! How a trial's spec is stored, and the one way it is read back.
//!
//! A grid's shared settings (`train`, `data`) are stored once per distinct
//! value in `trial_settings`, keyed by the SHA-256 of their canonical JSON;
//! each trial row keeps its own part (`cell`, `seed`) in `spec_json` and
//! references the settings by `settings_hash`. Rows written by older code
//! are rewritten to this form when the store opens (`upgrade.rs`), so
//! [`stored_spec`] knows no other form.

use sweep_core::{Cell, Settings, TrialSpec};

use super::StoreError;

pub(crate) use sweep_core::stored::{own_part, shared_settings};

/// A stored trial spec: the row's own part merged with its shared settings
/// (`None`: the settings row is missing).
pub(crate) fn stored_spec(trial_id: &str, own: &str, settings: Option<&str>) -> Result<TrialSpec, StoreError> {
    let settings =
        settings.ok_or_else(|| StoreError::Corrupt(format!("trial {trial_id}: its shared settings are missing")))?;
    sweep_core::stored::trial_spec(own, settings).map_err(|e| StoreError::Corrupt(format!("trial {trial_id}: {e}")))
}

/// The fixed settings (`train`) and trainer kind of trial `trial_id`'s
/// stored shared-settings row.
pub(crate) fn stored_train(trial_id: &str, settings: &str) -> Result<(Settings, &'static str), StoreError> {
    sweep_core::stored::train_of(settings).map_err(|e| StoreError::Corrupt(format!("trial {trial_id}: {e}")))
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
