//! grid.toml bounds (issue 8: huge keys and values, limits on every string)
//! and `validate`: the same rules for specs that arrive without a file (over
//! the wire, as trial specs), saying the same thing as the parser.
//!
//! Part of the grid.toml suite (`grid_parse_ok.rs`, `grid_errors.rs`,
//! `grid_validate.rs`, `grid_fuzz.rs`); the example file and the shared
//! helpers are in `tests/common`. Line numbers refer to the example's text.

mod common;

use std::path::PathBuf;

use common::{edit, ids, ints, levels_mut, parse, rejects, set_train, strs, EXAMPLE};
use sweep_core::{GridError, GridSpec, Level, TrialSpec};

// ---- bounds (issue 8): huge keys and values, limits on every string --------

const MB20: usize = 20 * 1024 * 1024;

/// The whole rendered error, which must stay short whatever the input.
#[track_caller]
fn short_error(text: &str, key: &str, line: usize, fragments: &[&str]) -> String {
    rejects(text, key, line, fragments);
    let shown = parse(text).unwrap_err().to_string();
    assert!(shown.len() < 400, "{} bytes: {}…", shown.len(), &shown[..400]);
    shown
}

#[test]
fn a_20_mb_unknown_key_is_refused_with_a_short_message() {
    // Before: "did you mean" ran an edit-distance matrix of 20M x 5 chars
    // (minutes, gigabytes) and the error quoted the whole key.
    let key = "k".repeat(MB20);
    let shown = short_error(
        &format!("{key} = 1\n{EXAMPLE}"),
        &format!("{}… ({MB20} bytes)", "k".repeat(60)),
        1,
        &["unknown key `kkkk", &format!("… ({MB20} bytes)` at the top level"), "expected one of: name, seeds"],
    );
    assert!(!shown.contains("did you mean"), "{shown}");
    // The same in a table, and for a key just past the suggestion limit.
    let text = edit("skip = [true, false]", &format!("skip = [true, false]\n{key} = 8"));
    short_error(&text, &format!("grid.{}… ({MB20} bytes)", "k".repeat(60)), 7, &["in [grid]; expected one of: depth"]);
    let long = format!("depth{}", "h".repeat(60));
    let text = edit("skip = [true, false]", &format!("skip = [true, false]\n{long} = 8"));
    short_error(&text, &format!("grid.{}… (65 bytes)", &long[..60]), 7, &["expected one of: depth"]);
}

#[test]
fn a_20_mb_init_value_is_refused_with_a_short_message() {
    let value = "x".repeat(MB20);
    short_error(
        &edit("\"default\", \"xavier_normal\", \"kaiming_normal\"", &format!("\"{value}\"")),
        "grid.init",
        7,
        &["unknown init scheme \"xxxx", &format!("… ({MB20} bytes); expected one of default")],
    );
}

#[test]
fn every_other_huge_string_is_refused_with_a_short_message() {
    let big = "y".repeat(1 << 20);
    short_error(
        &edit("\"skip-ablation\"", &format!("\"{big}\"")),
        "name",
        1,
        &["1048576 characters long; the limit is 64"],
    );
    short_error(
        &edit("optimizer = \"sgd\"", &format!("optimizer = \"{big}\"")),
        "train.optimizer",
        13,
        &["unknown optimizer \"yyy", "(1048576 bytes)"],
    );
    short_error(
        &edit("\"cifar10\"", &format!("\"{big}\"")),
        "data.dataset",
        21,
        &["1048576 bytes long; the limit is 32"],
    );
    short_error(
        &edit("\"data/cifar-10-batches-bin\"", &format!("\"{big}\"")),
        "data.path",
        22,
        &["1048576 bytes long; the limit is 4096"],
    );
    // A syntax error inside a huge value: toml's message, cut short.
    short_error(&edit("\"skip-ablation\"", &format!("\"{big}")), "name", 1, &["invalid TOML"]);
    // A huge seed list is refused by its length.
    let seeds = vec!["0"; 100_001].join(",");
    short_error(
        &edit("[0, 1, 2]", &format!("[{seeds}]")),
        "seeds",
        2,
        &["100001 seeds are more than the limit of 100000"],
    );
}

#[test]
fn depth_is_capped_at_1024() {
    let spec = parse(&edit("[8, 16, 32, 64]", "[8, 1024]")).unwrap();
    assert_eq!(spec.levels("depth"), ints(&[8, 1024]));
    rejects(&edit("[8, 16, 32, 64]", "[8, 1032]"), "grid.depth", 5, &["1032 is deeper than the limit of 1024 layers"]);
    rejects(&edit("[8, 16, 32, 64]", "4294967296"), "grid.depth", 5, &["deeper than the limit of 1024"]);
}

#[test]
fn names_that_are_folders_hidden_files_or_options_are_refused() {
    for name in [".", "..", ".hidden", "-rf", "--help"] {
        rejects(
            &edit("\"skip-ablation\"", &format!("\"{name}\"")),
            "name",
            1,
            &["begins with", "begin with a letter, digit or '_'"],
        );
    }
    for name in ["x\u{1b}[2J", "a\tb", "a\nb", "caf\u{e9}"] {
        let toml = name.replace('\u{1b}', "\\u001b").replace('\t', "\\t").replace('\n', "\\n");
        rejects(&edit("\"skip-ablation\"", &format!("\"{toml}\"")), "name", 1, &["use only letters, digits"]);
    }
    for name in ["_x", "0.1-lr", "a..b", "x-"] {
        assert_eq!(parse(&edit("\"skip-ablation\"", &format!("\"{name}\""))).unwrap().name, name);
    }
}

#[test]
fn data_paths_are_bounded_and_printable() {
    let path = |p: &str| edit("\"data/cifar-10-batches-bin\"", &format!("\"{p}\""));
    let max = format!("/{}", "p".repeat(4095));
    assert_eq!(parse(&path(&max)).unwrap().data.path, PathBuf::from(&max));
    rejects(&path(&format!("/{}", "p".repeat(4096))), "data.path", 22, &["4097 bytes long; the limit is 4096"]);
    // Short as written, too long once resolved against the grid's folder.
    rejects(&path(&"p".repeat(4090)), "data.path", 22, &["resolved against the grid file's folder", "4107 bytes long"]);
    rejects(&path("data\\u001b[2Jx"), "data.path", 22, &["control character '\\u{1b}'"]);
    rejects(&path("data\\u0000"), "data.path", 22, &["control character '\\0'"]);
}

#[test]
fn dataset_names_are_bounded() {
    let name = "d".repeat(33);
    rejects(
        &edit("\"cifar10\"", &format!("\"{name}\"")),
        "data.dataset",
        21,
        &["33 bytes long; the limit is 32", "expected one of: cifar10"],
    );
    rejects(&edit("\"cifar10\"", "\"mnist\""), "data.dataset", 21, &["unknown dataset \"mnist\""]);
}

#[test]
fn keep_weights_parses_and_a_wrong_type_is_refused() {
    assert!(!parse(EXAMPLE).unwrap().run.keep_weights);
    let spec = parse(&edit("priority = 0", "priority = 0\nkeep_weights = true")).unwrap();
    assert!(spec.run.keep_weights);
    let col = rejects(
        &edit("priority = 0", "priority = 0\nkeep_weights = \"yes\""),
        "run.keep_weights",
        29,
        &["expected a boolean (true or false), found the string \"yes\""],
    );
    assert_eq!(col, 16);
    let shown = parse(&edit("priority = 0", "priority = 0\nkeep_weights = 1")).unwrap_err().to_string();
    assert_eq!(
        shown,
        "/sweeps/ablation/grid.toml:29:16: run.keep_weights: expected a boolean (true or false), found the integer 1"
    );
    // It is a [run] key: at the top level it is pointed there.
    rejects(
        &edit("seeds = [0, 1, 2]", "seeds = [0, 1, 2]\nkeep_weights = true"),
        "keep_weights",
        3,
        &["belongs in [run]"],
    );
}

#[test]
fn wire_specs_get_the_same_bounds() {
    let good = parse(EXAMPLE).unwrap();
    type Mutation = fn(&mut GridSpec);
    let cases: &[(&str, Mutation, &str)] = &[
        ("grid.depth", |s| *levels_mut(s, "depth") = ints(&[8, 1032]), "deeper than the limit of 1024"),
        ("name", |s| s.name = "..".into(), "begins with"),
        ("name", |s| s.name = "-x".into(), "begins with"),
        ("name", |s| s.name = "n".repeat(1 << 20), "the limit is 64"),
        ("data.path", |s| s.data.path = PathBuf::from(format!("/{}", "p".repeat(4096))), "the limit is 4096"),
        ("data.path", |s| s.data.path = PathBuf::from("/data/\u{7}"), "control character"),
        ("data.dataset", |s| s.data.dataset = "d".repeat(1 << 20), "the limit is 32"),
        ("seeds", |s| s.seeds = (0..100_001).collect(), "more than the limit of 100000"),
    ];
    for (key, mutate, fragment) in cases {
        let mut spec = good.clone();
        mutate(&mut spec);
        match spec.validate() {
            Err(e @ GridError::Spec { .. }) => {
                let shown = e.to_string();
                assert!(shown.starts_with(&format!("{key}: ")) && shown.contains(fragment), "{key}: {shown}");
                assert!(shown.len() < 300, "{key}: {} bytes", shown.len());
            }
            other => panic!("{key}: expected a Spec error, got {other:?}"),
        }
    }
}

#[test]
fn trial_specs_are_checked_by_the_same_rules() {
    let trial = parse(EXAMPLE).unwrap().expand().remove(0);
    trial.validate().unwrap();
    type Mutation = fn(&mut TrialSpec);
    let cases: &[(&str, Mutation, &str)] = &[
        ("depth", |t| t.cell.insert("depth", Level::Int(0)), "not a positive multiple of 8"),
        ("depth", |t| t.cell.insert("depth", Level::Int(12)), "not a positive multiple of 8"),
        ("depth", |t| t.cell.insert("depth", Level::Int(1032)), "deeper than the limit of 1024"),
        ("seed", |t| t.seed = u64::MAX, "larger than"),
        ("train.lr", |t| _ = t.train.insert("lr".into(), Level::Float(f64::INFINITY)), "positive finite"),
        ("train.batch_size", |t| _ = t.train.insert("batch_size".into(), Level::Int(0)), "at least 1"),
        ("data.path", |t| t.data.path = PathBuf::from("p".repeat(5000)), "the limit is 4096"),
        ("data.dataset", |t| t.data.dataset = "mnist".into(), "unknown dataset"),
        ("data.test_subset", |t| t.data.test_subset = Some(0), "at least 1"),
    ];
    for (key, mutate, fragment) in cases {
        let mut t = trial.clone();
        mutate(&mut t);
        match t.validate() {
            Err(GridError::Spec { key: k, message }) => {
                assert_eq!(&k, key, "{message}");
                assert!(message.contains(fragment), "{key}: {message}");
            }
            other => panic!("{key}: expected a Spec error, got {other:?}"),
        }
    }
}

// ---- validate_spec: the same rules for specs that arrive without a file ----

#[test]
fn validate_round_trips_through_json() {
    let spec = parse(EXAMPLE).unwrap();
    let wire = serde_json::to_string(&spec).unwrap();
    let back: GridSpec = serde_json::from_str(&wire).unwrap();
    assert_eq!(back, spec);
    back.validate().unwrap();
    assert_eq!(ids(&back), ids(&spec));
}

#[test]
fn validate_rejects_what_the_parser_rejects() {
    let good = parse(EXAMPLE).unwrap();
    type Mutation = fn(&mut GridSpec);
    let cases: &[(&str, Mutation)] = &[
        ("name", |s| s.name = "has space".into()),
        ("name", |s| s.name.clear()),
        ("seeds", |s| s.seeds.clear()),
        ("seeds", |s| s.seeds = vec![1, 1]),
        ("seeds", |s| s.seeds = vec![u64::MAX]),
        ("grid.depth", |s| *levels_mut(s, "depth") = ints(&[12])),
        ("grid.depth", |s| *levels_mut(s, "depth") = ints(&[8, 8])),
        ("grid.skip", |s| levels_mut(s, "skip").clear()),
        ("grid.init", |s| *levels_mut(s, "init") = strs(&["default", "default"])),
        ("grid.batchnorm", |s| levels_mut(s, "batchnorm").clear()),
        ("train.epochs", |s| set_train(s, "epochs", Level::Int(0))),
        ("train.batch_size", |s| set_train(s, "batch_size", Level::Int(0))),
        ("train.lr", |s| set_train(s, "lr", Level::Float(f64::NAN))),
        ("train.lr", |s| set_train(s, "lr", Level::Float(-1.0))),
        ("train.momentum", |s| set_train(s, "momentum", Level::Float(1.0))),
        ("train.weight_decay", |s| set_train(s, "weight_decay", Level::Float(-0.5))),
        ("train.log_every", |s| set_train(s, "log_every", Level::Int(0))),
        ("data.dataset", |s| s.data.dataset = "mnist".into()),
        ("data.path", |s| s.data.path = PathBuf::new()),
        ("data.train_subset", |s| s.data.train_subset = Some(0)),
        ("data.test_subset", |s| s.data.test_subset = Some(0)),
        ("run.max_attempts", |s| s.run.max_attempts = 0),
        ("grid", |s| s.seeds = (0..5000).collect()),
    ];
    for (key, mutate) in cases {
        let mut spec = good.clone();
        mutate(&mut spec);
        match spec.validate() {
            Err(GridError::Spec { key: k, message }) => {
                assert_eq!(&k, key, "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("{key}: expected a Spec error, got {other:?}"),
        }
    }
}

#[test]
fn both_paths_say_the_same_thing() {
    let from_file = parse(&edit("[8, 16, 32, 64]", "[8, 12]")).unwrap_err();
    let mut spec = parse(EXAMPLE).unwrap();
    *levels_mut(&mut spec, "depth") = ints(&[8, 12]);
    let from_wire = spec.validate().unwrap_err();
    match (from_file, from_wire) {
        (GridError::Invalid { key: k1, message: m1, .. }, GridError::Spec { key: k2, message: m2 }) => {
            assert_eq!((k1, m1), (k2, m2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn from_file_reads_and_anchors_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grid.toml");
    std::fs::write(&file, EXAMPLE).unwrap();
    let spec = GridSpec::from_file(&file).unwrap();
    assert_eq!(spec.data.path, dir.path().join("data/cifar-10-batches-bin"));
    let missing = GridSpec::from_file(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, GridError::Io { .. }), "{missing:?}");
}
