//! What the grid.toml test files (`tests/grid_*.rs`) share: the example
//! grid file, parsing it under a fixed path, editing its text, asserting a
//! rejection (key, line and message), and building levels.
#![allow(dead_code)]

pub(crate) mod rng;

use std::path::{Path, PathBuf};

use sweep_core::{GridError, GridSpec, Level, TrialId};

/// The example from the grid.toml reference (issue 2), comments included:
/// `examples/skip-ablation.toml`, shared with the store and CLI tests.
/// Line numbers in the tests below refer to this text.
pub(crate) const EXAMPLE: &str = include_str!("../../../examples/skip-ablation.toml");

pub(crate) const GRID_FILE: &str = "/sweeps/ablation/grid.toml";

pub(crate) fn parse(text: &str) -> Result<GridSpec, GridError> {
    GridSpec::parse(text, Path::new(GRID_FILE))
}

/// The example with `old` (which must occur exactly once) replaced.
pub(crate) fn edit(old: &str, new: &str) -> String {
    assert_eq!(EXAMPLE.matches(old).count(), 1, "{old:?} must occur once in EXAMPLE");
    EXAMPLE.replacen(old, new, 1)
}

/// The example without the line that starts with `prefix`.
pub(crate) fn without_line(prefix: &str) -> String {
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with(prefix)).count(), 1, "{prefix:?}");
    lines.iter().filter(|l| !l.starts_with(prefix)).map(|l| format!("{l}\n")).collect()
}

/// Asserts the text is rejected with this key, at this line, with a message
/// containing each fragment; returns the column for tests that care.
#[track_caller]
pub(crate) fn rejects(text: &str, key: &str, line: usize, fragments: &[&str]) -> usize {
    match parse(text) {
        Ok(_) => panic!("accepted, expected an error for {key}:\n{text}"),
        Err(GridError::Invalid { path, line: l, column, key: k, message }) => {
            let shown = format!("{path:?}:{l}:{column}: {k}: {message}");
            assert_eq!(path, PathBuf::from(GRID_FILE));
            assert_eq!(k, key, "key in {shown}");
            assert_eq!(l, line, "line in {shown}");
            for f in fragments {
                assert!(message.contains(f), "{f:?} not in {shown}");
            }
            column
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

pub(crate) fn ids(spec: &GridSpec) -> Vec<TrialId> {
    spec.expand().iter().map(|t| t.id(&spec.name)).collect()
}

pub(crate) fn ints(v: &[i64]) -> Vec<Level> {
    v.iter().copied().map(Level::Int).collect()
}

pub(crate) fn bools(v: &[bool]) -> Vec<Level> {
    v.iter().copied().map(Level::Bool).collect()
}

pub(crate) fn strs(v: &[&str]) -> Vec<Level> {
    v.iter().map(|s| Level::Str((*s).to_owned())).collect()
}

/// The levels of factor `name`, to mutate (it must be a factor).
pub(crate) fn levels_mut<'a>(spec: &'a mut GridSpec, name: &str) -> &'a mut Vec<Level> {
    &mut spec.factors.iter_mut().find(|f| f.name == name).unwrap_or_else(|| panic!("no factor {name}")).levels
}

/// Sets a fixed `[train]` setting of a spec.
pub(crate) fn set_train(spec: &mut GridSpec, name: &str, level: Level) {
    assert!(spec.train.contains_key(name), "{name} is not a setting");
    spec.train.insert(name.to_owned(), level);
}
