//! Trial identity under issue 9 (domain `sweep.trial.v2`): the canonical
//! form pinned byte for byte, so that an accidental change (a field
//! renamed or reordered, a float written differently, a level changing
//! kind) fails here before it silently re-runs every stored trial; levels
//! keeping their kind through JSON; and `TrialState`'s names.

use std::path::Path;

use sha2::{Digest, Sha256};
use sweep_core::trial::{CELL_KEY_DOMAIN, TRIAL_ID_DOMAIN};
use sweep_core::{Cell, GridSpec, Level, LevelKind, TrialSpec, TrialState};

/// Every kind of level in the cell and the settings: integers, a float
/// factor given as an integer (`1` is the float 1.0), a float with a
/// fraction, booleans and strings; a [train] key as a factor (`lr`) and
/// non-default settings.
const PIN: &str = r#"
name = "pin"
seeds = [3]
[grid]
depth = 16
skip = true
init = "kaiming_normal"
batchnorm = false
lr = [1, 0.001]
[train]
epochs = 2
optimizer = "adam"
[data]
path = "/data/cifar"
train_subset = 1000
"#;

fn pinned() -> Vec<TrialSpec> {
    GridSpec::parse(PIN, Path::new("/g/grid.toml")).unwrap().expand()
}

/// The hash as `trial.rs` documents it, written out independently.
fn hash(domain: &str, sweep: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for part in [sweep, text] {
        h.update([0u8]);
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

#[test]
fn the_v2_canonical_form_is_pinned() {
    assert_eq!(TRIAL_ID_DOMAIN, "sweep.trial.v2");
    assert_eq!(CELL_KEY_DOMAIN, "sweep.cell.v2");
    let trials = pinned();
    assert_eq!(trials.len(), 2);
    let t = &trials[0];
    // Struct order at the top (cell, train, data, seed), maps sorted by
    // key, integers without a fraction, floats with one.
    assert_eq!(
        t.canonical(),
        concat!(
            r#"{"cell":{"batchnorm":false,"depth":16,"init":"kaiming_normal","lr":1.0,"skip":true},"#,
            r#""train":{"augment":false,"batch_size":4,"epochs":2,"log_every":2000,"momentum":0.9,"#,
            r#""optimizer":"adam","weight_decay":0.0},"#,
            r#""data":{"dataset":"cifar10","path":"/data/cifar","train_subset":1000,"test_subset":null},"#,
            r#""seed":3}"#
        )
    );
    // The cell key's form has no seed and every key sorted (it goes through
    // a serde_json::Value, whose maps are sorted).
    assert_eq!(
        t.cell_canonical(),
        concat!(
            r#"{"cell":{"batchnorm":false,"depth":16,"init":"kaiming_normal","lr":1.0,"skip":true},"#,
            r#""data":{"dataset":"cifar10","path":"/data/cifar","test_subset":null,"train_subset":1000},"#,
            r#""train":{"augment":false,"batch_size":4,"epochs":2,"log_every":2000,"momentum":0.9,"#,
            r#""optimizer":"adam","weight_decay":0.0}}"#
        )
    );
    assert_eq!(t.id("pin").0, hash(TRIAL_ID_DOMAIN, "pin", &t.canonical()));
    assert_eq!(t.cell_key("pin"), hash(CELL_KEY_DOMAIN, "pin", &t.cell_canonical()));
    // Issue 9 changed every trial ID (version 1 hashed a struct with the
    // four BMEnet factors as fields under "sweep.trial.v1"); these are the
    // v2 values of the form above. A change here must come with a new
    // domain version and a store migration.
    assert_eq!(t.id("pin").to_string(), "020de485086d62f6420257c3fe62aeb4");
    assert_eq!(t.cell_key("pin"), "b35e01144cc6d344f0721e3d6189cd4e");
    assert_eq!(trials[1].id("pin").to_string(), "f408a3a2ad6e787250f7311f7535b32d");
    assert_eq!(trials[1].cell_key("pin"), "6a0ac3ad2d5faeda1209db74bb63307c");
    assert_eq!(t.label(), "depth=16 skip=on init=kaiming_normal bn=off lr=1.0 seed=3");
    assert_eq!(trials[1].label(), "depth=16 skip=on init=kaiming_normal bn=off lr=0.001 seed=3");
}

#[test]
fn ids_depend_on_the_sweep_cell_settings_and_seed() {
    let t = pinned().remove(0);
    let id = t.id("pin");
    assert_ne!(t.id("other"), id);
    let mut other_seed = t.clone();
    other_seed.seed = 4;
    assert_ne!(other_seed.id("pin"), id);
    assert_eq!(other_seed.cell_key("pin"), t.cell_key("pin"), "one cell key for every seed");
    let mut other_setting = t.clone();
    other_setting.train.insert("epochs".into(), Level::Int(3));
    assert_ne!(other_setting.id("pin"), id);
    assert_ne!(other_setting.cell_key("pin"), t.cell_key("pin"));
    // The kind is part of identity: 16 and 16.0 are different canonical forms.
    let mut float_depth = t.clone();
    float_depth.cell.insert("depth", Level::Float(16.0));
    assert_ne!(float_depth.canonical(), t.canonical());
    assert_ne!(float_depth.id("pin"), id);
}

#[test]
fn trial_specs_round_trip_through_json_with_their_kinds() {
    for t in pinned() {
        let back: TrialSpec = serde_json::from_str(&t.canonical()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.canonical(), t.canonical());
        assert_eq!(back.id("pin"), t.id("pin"));
        assert_eq!(back.cell.get("lr").unwrap().kind(), LevelKind::Float);
        assert_eq!(back.cell.get("depth").unwrap().kind(), LevelKind::Int);
    }
}

#[test]
fn levels_round_trip_through_json_keeping_int_and_float_apart() {
    let cases = [
        (Level::Int(32), "32"),
        (Level::Float(32.0), "32.0"),
        (Level::Int(-3), "-3"),
        (Level::Int(i64::MAX), "9223372036854775807"),
        (Level::Int(i64::MIN), "-9223372036854775808"),
        (Level::Float(1e-3), "0.001"),
        (Level::Float(-0.5), "-0.5"),
        (Level::Float(1e20), "1e+20"),
        (Level::Float(1e-7), "1e-7"),
        (Level::Bool(false), "false"),
        (Level::Str("sgd".into()), "\"sgd\""),
        // A string that looks like a number stays a string.
        (Level::Str("32".into()), "\"32\""),
    ];
    for (level, text) in cases {
        assert_eq!(serde_json::to_string(&level).unwrap(), text);
        let back: Level = serde_json::from_str(text).unwrap();
        assert_eq!(back.kind(), level.kind(), "{text}");
        assert_eq!(back, level, "{text}");
    }
    assert_ne!(Level::Int(32), Level::Float(32.0));
    assert!(Level::Int(32) < Level::Float(32.0), "a total order: on a tie, the integer first");
    for bad in ["18446744073709551615", "null", "[1]", "{}"] {
        assert!(serde_json::from_str::<Level>(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn cells_round_trip_through_their_canonical_text() {
    let cell: Cell = [
        ("skip".to_owned(), Level::Bool(true)),
        ("lr".to_owned(), Level::Float(1.0)),
        ("depth".to_owned(), Level::Int(32)),
        ("optimizer".to_owned(), Level::Str("adam".into())),
    ]
    .into_iter()
    .collect();
    assert_eq!(cell.canonical(), r#"{"depth":32,"lr":1.0,"optimizer":"adam","skip":true}"#);
    let back = Cell::from_json(&cell.canonical()).unwrap();
    assert_eq!(back, cell);
    assert_eq!(back.get("lr"), Some(&Level::Float(1.0)));
    assert_eq!(back.get("depth"), Some(&Level::Int(32)));
    // Display order is the schema's, with its labels; unknown names last.
    let schema = sweep_core::schema();
    assert_eq!(cell.ordered_names(schema), ["depth", "skip", "optimizer", "lr"]);
    assert_eq!(cell.label(schema), "depth=32 skip=on optimizer=adam lr=1.0");
    let mut odd = cell.clone();
    odd.insert("colour", Level::Str("red".into()));
    odd.insert("batchnorm", Level::Bool(false));
    assert_eq!(odd.label(schema), "depth=32 skip=on bn=off optimizer=adam lr=1.0 colour=red");
    assert!(Cell::from_json(r#"{"depth":[8]}"#).unwrap_err().starts_with("not a cell"));
    assert!(Cell::from_json("[]").is_err());
}

#[test]
fn levels_typed_on_a_command_line_take_the_factors_kind() {
    assert_eq!(Level::parse_as("0.01", LevelKind::Float).unwrap(), Level::Float(0.01));
    assert_eq!(Level::parse_as("1", LevelKind::Float).unwrap(), Level::Float(1.0));
    assert_eq!(Level::parse_as(" 32 ", LevelKind::Int).unwrap(), Level::Int(32));
    assert_eq!(Level::parse_as("on", LevelKind::Bool).unwrap(), Level::Bool(true));
    assert_eq!(Level::parse_as("adam", LevelKind::Str).unwrap(), Level::Str("adam".into()));
    for (text, kind) in
        [("inf", LevelKind::Float), ("nan", LevelKind::Float), ("1.5", LevelKind::Int), ("yes", LevelKind::Bool)]
    {
        assert!(Level::parse_as(text, kind).is_err(), "{text} accepted as {kind:?}");
    }
    assert_eq!(Level::Float(1e-4).display(), "0.0001");
    assert_eq!(Level::Bool(false).display(), "off");
    assert_eq!(Level::Bool(false).to_string(), "false");
}

#[test]
fn trial_states_have_one_name_each() {
    let names: Vec<&str> = TrialState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["queued", "running", "succeeded", "diverged", "failed", "cancelled"]);
    for s in TrialState::ALL {
        assert_eq!(TrialState::parse(s.as_str()), Ok(s));
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        assert_eq!(s.is_final(), !matches!(s, TrialState::Queued | TrialState::Running));
    }
    assert_eq!(TrialState::parse("done").unwrap_err(), "unknown trial state \"done\"");
    assert!(TrialState::parse("Queued").is_err());
    assert!(TrialState::parse("").is_err());
}
