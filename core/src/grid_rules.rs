//! The semantic rules of a grid that do not depend on the trainer (name,
//! seeds, data settings, the trial count), shared by the file parser
//! (`grid_parse`) and the validation of specs built without a file
//! (`grid_validate`). The trainer's own keys have their rules in its schema
//! (`crate::bmenet::rules`).
//!
//! Each returns the message to show after the key. Integer rules take `i64`
//! (what TOML can express) so that negative values get the rule's own
//! message rather than a generic "out of range".

use std::collections::HashSet;
use std::hash::Hash;

use crate::grid::{Factor, DATASETS, MAX_DATASET_LEN, MAX_NAME_LEN, MAX_PATH_LEN, MAX_SEEDS_PER_CELL, MAX_TRIALS};
use crate::quote::short;

pub(crate) fn name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!("is {} characters long; the limit is {MAX_NAME_LEN}", name.chars().count()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{name:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"));
    }
    // Names become file and folder names and command-line arguments:
    // `.`/`..` are folders already, `.x` is hidden and `-x` reads as an
    // option. Letters, digits and '_' are the safe first characters.
    if name.starts_with(['.', '-']) {
        return Err(format!(
            "{name:?} begins with {:?}; begin with a letter, digit or '_' \
             (names are used as file names and command-line arguments)",
            &name[..1]
        ));
    }
    Ok(())
}

/// The number of seeds, whether written as a count or as a list.
pub(crate) fn seed_count(n: i64) -> Result<(), String> {
    if n < 1 {
        return Err(format!(
            "at least one seed is needed (got {n}); give a count n >= 1 \
             (meaning seeds 0..n-1) or a non-empty list"
        ));
    }
    // Every cell runs every seed, so more seeds than trials cannot fit.
    if n as u64 > MAX_TRIALS {
        return Err(format!("{n} seeds are more than the limit of {MAX_TRIALS} trials per sweep"));
    }
    Ok(())
}

pub(crate) fn seed(seed: i64) -> Result<(), String> {
    if seed < 0 {
        return Err(format!("seed {seed} is negative; seeds are non-negative integers"));
    }
    Ok(())
}

/// A factor must have at least one level, or the grid has no cells.
pub(crate) fn non_empty(len: usize) -> Result<(), String> {
    if len == 0 {
        return Err("is an empty list; give at least one value".into());
    }
    Ok(())
}

/// A repeated value would make two cells (or trials) with the same ID.
/// On failure, returns the index of the repetition.
pub(crate) fn distinct<T: Hash + Eq + std::fmt::Display>(values: &[T]) -> Result<(), (usize, String)> {
    let mut seen = HashSet::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        if !seen.insert(v) {
            return Err((i, format!("{v} is listed more than once")));
        }
    }
    Ok(())
}

/// For counts that must be at least 1 (epochs, batch size, ...).
pub(crate) fn positive(n: i64) -> Result<(), String> {
    if n < 1 {
        return Err(format!("must be at least 1, got {n}"));
    }
    Ok(())
}

pub(crate) fn dataset(name: &str) -> Result<(), String> {
    if name.len() > MAX_DATASET_LEN {
        return Err(format!(
            "{} is {} bytes long; the limit is {MAX_DATASET_LEN} (expected one of: {})",
            short(name),
            name.len(),
            DATASETS.join(", ")
        ));
    }
    if !DATASETS.contains(&name) {
        return Err(format!("unknown dataset {}; expected one of: {}", short(name), DATASETS.join(", ")));
    }
    Ok(())
}

/// Checked both as written and once resolved against the grid's folder
/// (the resolved form is what is sent and stored).
pub(crate) fn data_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty; give the folder that holds the dataset".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("{} is {} bytes long; the limit is {MAX_PATH_LEN}", short(path), path.len()));
    }
    // NUL cannot be in a path; other control characters would reach
    // logs and terminals raw.
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(format!("{} contains the control character {c:?}; paths must be printable", short(path)));
    }
    Ok(())
}

/// Bounds the expansion, checked before any seed list is materialised.
pub(crate) fn trial_count(cells: u64, seeds: u64) -> Result<(), String> {
    let trials = cells.saturating_mul(seeds);
    if trials > MAX_TRIALS {
        return Err(format!(
            "the grid expands to {cells} cells x {seeds} seeds = {trials} trials, \
             more than the limit of {MAX_TRIALS}; split it into several sweeps"
        ));
    }
    Ok(())
}

/// `run.target_halfwidth`: a positive, finite width (final test accuracy
/// as a fraction: 0.02 is two percentage points).
pub(crate) fn target_halfwidth(x: f64) -> Result<(), String> {
    if !(x.is_finite() && x > 0.0) {
        return Err(format!(
            "must be a positive finite number (a 95% interval half-width in accuracy units, e.g. 0.02), got {x}"
        ));
    }
    Ok(())
}

/// `run.max_seeds`: at least the planned seeds, at most
/// [`MAX_SEEDS_PER_CELL`], and the grid at that many seeds within
/// [`MAX_TRIALS`].
pub(crate) fn max_seeds(n: i64, planned: usize, cells: u64) -> Result<(), String> {
    positive(n)?;
    if n < planned as i64 {
        return Err(format!("{n} is fewer than the {planned} planned seeds; give at least {planned}"));
    }
    if n > i64::from(MAX_SEEDS_PER_CELL) {
        return Err(format!("{n} is more than the limit of {MAX_SEEDS_PER_CELL} seeds per cell"));
    }
    trial_count(cells, n as u64).map_err(|m| format!("at {n} seeds per cell {m}"))
}

/// `run.contrast`: a factor the grid varies (two or more levels).
pub(crate) fn contrast(name: &str, factors: &[Factor]) -> Result<(), String> {
    if factors.iter().any(|f| f.name == name && f.levels.len() >= 2) {
        return Ok(());
    }
    let varying: Vec<&str> = factors.iter().filter(|f| f.levels.len() >= 2).map(|f| f.name.as_str()).collect();
    let what = if factors.iter().any(|f| f.name == name) { "is held at one level" } else { "is not a factor" };
    Err(format!(
        "{} {what} in this grid; the contrast must be a factor with two or more levels ({})",
        short(name),
        if varying.is_empty() { "this grid varies none".to_owned() } else { format!("one of: {}", varying.join(", ")) }
    ))
}
