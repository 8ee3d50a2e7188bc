//! grid.toml accepted: the issue's example parses to the documented values,
//! trial identity across resubmissions, accepted variations and defaults, and
//! how errors render.
//!
//! Part of the grid.toml suite (`grid_parse_ok.rs`, `grid_errors.rs`,
//! `grid_validate.rs`, `grid_fuzz.rs`); the example file and the shared
//! helpers are in `tests/common`. Line numbers refer to the example's text.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use common::{bools, edit, ids, ints, parse, strs, EXAMPLE};
use sweep_core::Level;

// ---- the example and trial identity -------------------------------------

#[test]
fn example_parses_to_the_documented_values() {
    let spec = parse(EXAMPLE).unwrap();
    assert_eq!(spec.name, "skip-ablation");
    assert_eq!(spec.seeds, vec![0, 1, 2]);
    let names: Vec<&str> = spec.factors.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["depth", "skip", "init", "batchnorm"]);
    assert_eq!(spec.levels("depth"), ints(&[8, 16, 32, 64]));
    assert_eq!(spec.levels("skip"), bools(&[true, false]));
    assert_eq!(spec.levels("init"), strs(&["default", "xavier_normal", "kaiming_normal"]));
    assert_eq!(spec.levels("batchnorm"), bools(&[true, false]));
    assert_eq!(spec.train["optimizer"], Level::Str("sgd".into()));
    assert_eq!(spec.train["lr"], Level::Float(1e-4));
    // The settings are every [train] key, none of them a factor here.
    let settings: Vec<&str> = spec.train.keys().map(String::as_str).collect();
    assert_eq!(
        settings,
        ["augment", "batch_size", "epochs", "log_every", "lr", "momentum", "optimizer", "weight_decay"]
    );
    assert_eq!(spec.data.path, PathBuf::from("/sweeps/ablation/data/cifar-10-batches-bin"));
    assert_eq!(spec.data.train_subset, Some(50000));
    assert_eq!(spec.run.max_attempts, 3);
    spec.validate().unwrap();
}

#[test]
fn example_expands_to_144_distinct_trials() {
    let spec = parse(EXAMPLE).unwrap();
    assert_eq!(spec.cell_count(), 4 * 2 * 3 * 2);
    let ids = ids(&spec);
    assert_eq!(ids.len(), 4 * 2 * 3 * 2 * 3);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 144);
    let cells: HashSet<_> = spec.expand().iter().map(|t| t.cell_key(&spec.name)).collect();
    assert_eq!(cells.len(), 48);
}

#[test]
fn the_same_file_gives_the_same_ids() {
    assert_eq!(ids(&parse(EXAMPLE).unwrap()), ids(&parse(EXAMPLE).unwrap()));
    // Formatting and the seeds' spelling are not part of identity.
    let respelled = edit("seeds = [0, 1, 2]", "seeds = 3").replace("  ", " ");
    assert_eq!(ids(&parse(EXAMPLE).unwrap()), ids(&parse(&respelled).unwrap()));
}

#[test]
fn adding_a_seed_adds_exactly_48_trials() {
    let before: HashSet<_> = ids(&parse(EXAMPLE).unwrap()).into_iter().collect();
    let after: HashSet<_> =
        ids(&parse(&edit("seeds = [0, 1, 2]", "seeds = [0, 1, 2, 3]")).unwrap()).into_iter().collect();
    assert!(before.is_subset(&after));
    assert_eq!(after.difference(&before).count(), 48);
}

#[test]
fn adding_a_depth_adds_only_its_cells() {
    let before: HashSet<_> = ids(&parse(EXAMPLE).unwrap()).into_iter().collect();
    let after: HashSet<_> =
        ids(&parse(&edit("[8, 16, 32, 64]", "[8, 16, 32, 64, 128]")).unwrap()).into_iter().collect();
    assert!(before.is_subset(&after));
    assert_eq!(after.len() - before.len(), 2 * 3 * 2 * 3);
}

// ---- accepted variations and defaults -------------------------------------

#[test]
fn single_values_hold_a_factor_fixed() {
    let spec = parse(&edit("skip = [true, false]", "skip = true")).unwrap();
    assert_eq!(spec.levels("skip"), bools(&[true]));
    assert_eq!(spec.cell_count(), 24);
}

#[test]
fn train_and_run_default_to_the_lecture_demo() {
    let minimal = r#"
name = "minimal"
seeds = 2
[grid]
depth = 8
skip = [true, false]
init = "default"
batchnorm = false
[data]
path = "../cifar"
"#;
    let spec = parse(minimal).unwrap();
    assert_eq!(spec.seeds, vec![0, 1]);
    assert_eq!(spec.train, sweep_core::TrainConfig::default().levels());
    assert_eq!(spec.train["epochs"], Level::Int(6));
    assert_eq!(spec.train["batch_size"], Level::Int(4));
    assert_eq!(spec.train["momentum"], Level::Float(0.9));
    assert_eq!(spec.train["log_every"], Level::Int(2000));
    assert_eq!(spec.run, sweep_core::RunConfig::default());
    assert_eq!(spec.run.max_attempts, 3);
    assert_eq!(spec.data.dataset, "cifar10");
    assert_eq!(spec.data.path, PathBuf::from("/sweeps/cifar"));
    assert_eq!(spec.data.train_subset, None);
}

#[test]
fn integers_are_accepted_for_float_settings() {
    let spec = parse(&edit("weight_decay = 0.0", "weight_decay = 0")).unwrap();
    // A float, not the integer 0 (levels compare with their kind).
    assert_eq!(spec.train["weight_decay"], Level::Float(0.0));
}

#[test]
fn absolute_data_paths_are_kept_and_normalised() {
    let spec = parse(&edit("\"data/cifar-10-batches-bin\"", "\"/srv/./data/../cifar\"")).unwrap();
    assert_eq!(spec.data.path, PathBuf::from("/srv/cifar"));
}

#[test]
fn errors_render_as_file_line_column_key_message() {
    let err = parse(&edit("depth = [8, 16, 32, 64]", "depth = [8, 12]")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/sweeps/ablation/grid.toml:5:13: grid.depth: 12 is not a positive multiple of 8 (e.g. 8, 16, 32, 64)"
    );
}
