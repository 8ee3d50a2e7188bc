//! Issue 9, factors as data: any `[train]` key may be a factor next to the
//! architecture factors. Parsing (levels typed, errors at the offending
//! element), expansion (schema order, last factor fastest, seeds innermost),
//! the wire-side validators, and `bmenet::resolve`.

use std::path::{Path, PathBuf};

use sweep_core::bmenet::{self, BmenetTrial};
use sweep_core::{
    Factor, GridError, GridSpec, InitScheme, Level, Optimizer, Precision, TrainConfig, TrialId, TrialSpec,
};

/// `examples/skip-ablation.toml`; line numbers below refer to it.
const EXAMPLE: &str = include_str!("../../examples/skip-ablation.toml");

const GRID_FILE: &str = "/sweeps/ablation/grid.toml";

fn parse(text: &str) -> Result<GridSpec, GridError> {
    GridSpec::parse(text, Path::new(GRID_FILE))
}

/// The example with `lines` added to `[grid]` after `batchnorm` (so the
/// first is line 9) and the `[train]` lines of their keys removed.
fn with_factors(lines: &[&str]) -> String {
    let keys: Vec<String> = lines.iter().map(|l| format!("{} =", l.split('=').next().unwrap().trim())).collect();
    let mut out = String::new();
    for line in EXAMPLE.lines() {
        if keys.iter().any(|k| line.starts_with(k.as_str())) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("batchnorm = ") {
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// The example with one `[grid]` line added after `batchnorm` (line 9),
/// its `[train]` line kept.
fn with_grid_line(line: &str) -> String {
    EXAMPLE.replacen("batchnorm = [true, false]\n", &format!("batchnorm = [true, false]\n{line}\n"), 1)
}

/// Asserts the text is rejected with this key at this line and column, with
/// a message containing each fragment.
#[track_caller]
fn rejects_at(text: &str, key: &str, line: usize, column: usize, fragments: &[&str]) {
    match parse(text) {
        Ok(_) => panic!("accepted, expected an error for {key}:\n{text}"),
        Err(GridError::Invalid { path, line: l, column: c, key: k, message }) => {
            let shown = format!("{path:?}:{l}:{c}: {k}: {message}");
            assert_eq!(path, PathBuf::from(GRID_FILE));
            assert_eq!((k.as_str(), l, c), (key, line, column), "{shown}");
            for f in fragments {
                assert!(message.contains(f), "{f:?} not in {shown}");
            }
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

fn floats(v: &[f64]) -> Vec<Level> {
    v.iter().copied().map(Level::Float).collect()
}

fn strs(v: &[&str]) -> Vec<Level> {
    v.iter().map(|s| Level::Str((*s).to_owned())).collect()
}

fn ids(spec: &GridSpec) -> Vec<TrialId> {
    spec.expand().iter().map(|t| t.id(&spec.name)).collect()
}

fn names(spec: &GridSpec) -> Vec<&str> {
    spec.factors.iter().map(|f| f.name.as_str()).collect()
}

/// The issue's example: optimizer and lr as factors next to the example's.
fn optimizer_and_lr() -> GridSpec {
    parse(&with_factors(&["optimizer = [\"sgd\", \"adam\"]", "lr = [1e-3, 1e-2]"])).unwrap()
}

// ---- parsing and expansion -------------------------------------------------

#[test]
fn optimizer_and_lr_as_factors_parse_and_expand() {
    let spec = optimizer_and_lr();
    spec.validate().unwrap();
    assert_eq!(names(&spec), ["depth", "skip", "init", "batchnorm", "optimizer", "lr"]);
    assert_eq!(spec.levels("optimizer"), strs(&["sgd", "adam"]));
    assert_eq!(spec.levels("lr"), floats(&[1e-3, 1e-2]));
    // The settings are the other [train] keys, as written or defaulted.
    let settings: Vec<&str> = spec.train.keys().map(String::as_str).collect();
    assert_eq!(settings, ["augment", "batch_size", "epochs", "log_every", "momentum", "weight_decay"]);
    assert_eq!(spec.train["momentum"], Level::Float(0.9));
    assert_eq!(spec.cell_count(), 4 * 2 * 3 * 2 * 2 * 2);

    let trials = spec.expand();
    assert_eq!(trials.len(), spec.cell_count() * 3);
    for t in &trials {
        t.validate().unwrap();
        assert_eq!(t.cell.names().collect::<Vec<_>>(), ["batchnorm", "depth", "init", "lr", "optimizer", "skip"]);
        assert_eq!(t.train, spec.train, "the settings exclude the factors");
        assert!(spec.levels("lr").contains(t.level("lr").unwrap()));
        assert_eq!(t.level("lr"), t.cell.get("lr"), "a factor's level comes from the cell");
        assert_eq!(t.level("epochs"), Some(&Level::Int(6)), "a setting's from the settings");
    }
    let distinct: std::collections::HashSet<_> = trials.iter().map(|t| t.cell_key(&spec.name)).collect();
    assert_eq!(distinct.len(), spec.cell_count());
}

#[test]
fn expansion_is_in_schema_order_last_factor_fastest_seeds_innermost() {
    // Factors written out of schema order, levels not sorted.
    let text = r#"
name = "order"
seeds = [5, 7]
[grid]
lr = [0.1, 0.01]
batchnorm = false
depth = [16, 8]
init = "default"
skip = [true, false]
optimizer = ["adam", "sgd"]
[data]
path = "/d"
"#;
    let spec = parse(text).unwrap();
    assert_eq!(names(&spec), ["depth", "skip", "init", "batchnorm", "optimizer", "lr"]);
    let got: Vec<(i64, bool, String, f64, u64)> = spec
        .expand()
        .iter()
        .map(|t| {
            let l = |n: &str| t.cell.get(n).unwrap().clone();
            (
                l("depth").as_int().unwrap(),
                l("skip").as_bool().unwrap(),
                l("optimizer").to_string(),
                l("lr").as_f64().unwrap(),
                t.seed,
            )
        })
        .collect();
    let mut want = Vec::new();
    for depth in [16, 8] {
        for skip in [true, false] {
            for optimizer in ["adam", "sgd"] {
                for lr in [0.1, 0.01] {
                    for seed in [5, 7] {
                        want.push((depth, skip, optimizer.to_owned(), lr, seed));
                    }
                }
            }
        }
    }
    assert_eq!(got, want);
}

#[test]
fn ids_are_stable_and_do_not_depend_on_the_factor_order_in_the_file() {
    let text = with_factors(&["optimizer = [\"sgd\", \"adam\"]", "lr = [1e-3, 1e-2]"]);
    assert_eq!(ids(&parse(&text).unwrap()), ids(&parse(&text).unwrap()));
    // The same factors, lr first and depth last in [grid].
    let grid =
        "depth = [8, 16, 32, 64]\nskip = [true, false]\ninit = [\"default\", \"xavier_normal\", \"kaiming_normal\"]\n\
                batchnorm = [true, false]\noptimizer = [\"sgd\", \"adam\"]\nlr = [1e-3, 1e-2]\n";
    assert!(text.contains(grid), "{text}");
    let reordered = text.replace(
        grid,
        "lr = [1e-3, 1e-2]\nbatchnorm = [true, false]\noptimizer = [\"sgd\", \"adam\"]\n\
         init = [\"default\", \"xavier_normal\", \"kaiming_normal\"]\nskip = [true, false]\ndepth = [8, 16, 32, 64]\n",
    );
    assert_eq!(parse(&reordered).unwrap(), parse(&text).unwrap());
    assert_eq!(ids(&parse(&reordered).unwrap()), ids(&parse(&text).unwrap()));
}

#[test]
fn adding_a_level_of_a_train_factor_adds_only_its_trials() {
    let before: std::collections::HashSet<_> = ids(&optimizer_and_lr()).into_iter().collect();
    let after = parse(&with_factors(&["optimizer = [\"sgd\", \"adam\"]", "lr = [1e-3, 1e-2, 1e-1]"])).unwrap();
    let after: std::collections::HashSet<_> = ids(&after).into_iter().collect();
    assert!(before.is_subset(&after));
    assert_eq!(after.len() - before.len(), 48 * 2 * 3);
}

#[test]
fn integers_given_for_a_float_factor_are_floats() {
    let spec = parse(&with_factors(&["lr = [1, 2]", "weight_decay = [0, 5e-4]"])).unwrap();
    assert_eq!(spec.levels("lr"), floats(&[1.0, 2.0]));
    assert_eq!(spec.levels("weight_decay"), floats(&[0.0, 5e-4]));
    spec.validate().unwrap();
    let t = &spec.expand()[0];
    assert!(t.canonical().contains(r#""lr":1.0,"#), "{}", t.canonical());
    // An integer factor takes no float.
    rejects_at(
        &with_factors(&["epochs = [1, 2.5]"]),
        "grid.epochs",
        9,
        14,
        &["expected an integer, found the float 2.5"],
    );
}

// ---- mistakes --------------------------------------------------------------

#[test]
fn a_bad_level_is_pointed_at() {
    rejects_at(
        &with_factors(&["optimizer = [\"sgd\", \"adamw\"]"]),
        "grid.optimizer",
        9,
        21,
        &["unknown optimizer \"adamw\"; expected \"sgd\" or \"adam\""],
    );
    let e = parse(&with_factors(&["lr = [0.1, -1]"])).unwrap_err();
    assert_eq!(e.to_string(), "/sweeps/ablation/grid.toml:9:12: grid.lr: must be a positive finite number, got -1");
    rejects_at(&with_factors(&["lr = [0.1, \"fast\"]"]), "grid.lr", 9, 12, &["expected a number, found the string"]);
    rejects_at(&with_factors(&["momentum = [0.5, 1.0]"]), "grid.momentum", 9, 18, &["at least 0 and less than 1"]);
    rejects_at(&with_factors(&["augment = [false, 1]"]), "grid.augment", 9, 19, &["expected a boolean"]);
    rejects_at(&with_factors(&["batch_size = []"]), "grid.batch_size", 9, 14, &["empty list"]);
    rejects_at(&with_factors(&["optimizer = 7"]), "grid.optimizer", 9, 13, &["expected a string, found the integer 7"]);
}

#[test]
fn duplicate_levels_are_refused_at_the_repetition() {
    rejects_at(&with_factors(&["lr = [0.1, 0.01, 0.1]"]), "grid.lr", 9, 18, &["0.1 is listed more than once"]);
    // 1 and 1.0 are the same learning rate.
    rejects_at(&with_factors(&["lr = [1, 1.0]"]), "grid.lr", 9, 10, &["1.0 is listed more than once"]);
    rejects_at(
        &with_factors(&["optimizer = [\"adam\", \"adam\"]"]),
        "grid.optimizer",
        9,
        22,
        &["adam is listed more than once"],
    );
}

#[test]
fn a_key_both_a_factor_and_a_setting_names_both_places() {
    let e = parse(&with_grid_line("optimizer = [\"sgd\", \"adam\"]")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/sweeps/ablation/grid.toml:14:13: train.optimizer: `optimizer` is also a factor in [grid] (line 9, \
         column 13); a key is either a factor or a fixed setting: remove one of them"
    );
    // A single level in [grid] is a factor too.
    rejects_at(&with_grid_line("lr = 1e-3"), "train.lr", 15, 6, &["also a factor in [grid] (line 9, column 6)"]);
}

#[test]
fn data_and_run_keys_are_not_factors() {
    rejects_at(
        &with_grid_line("test_subset = [100]"),
        "grid.test_subset",
        9,
        1,
        &["`test_subset` is a [data] setting, not a grid factor"],
    );
    rejects_at(&with_grid_line("max_attempts = 2"), "grid.max_attempts", 9, 1, &["is a [run] setting"]);
    // A typo of a [train] key in [grid] gets a suggestion.
    rejects_at(&with_grid_line("optimiser = [\"sgd\"]"), "grid.optimiser", 9, 1, &["did you mean `optimizer`?"]);
}

#[test]
fn architecture_factors_are_not_settings() {
    let text = EXAMPLE.replacen("epochs = 6\n", "epochs = 6\ndepth = 8\n", 1);
    rejects_at(
        &text,
        "train.depth",
        12,
        1,
        &["unknown key `depth` in [train]; `depth` belongs in [grid], not [train]"],
    );
}

// ---- specs that arrive without a file -------------------------------------

#[track_caller]
fn refused(result: Result<(), GridError>, key: &str, fragment: &str) {
    match result {
        Err(GridError::Spec { key: k, message }) => {
            assert_eq!(k, key, "{message}");
            assert!(message.contains(fragment), "{fragment:?} not in {key}: {message}");
        }
        other => panic!("{key}: expected a Spec error, got {other:?}"),
    }
}

fn factor_mut<'a>(spec: &'a mut GridSpec, name: &str) -> &'a mut Vec<Level> {
    &mut spec.factors.iter_mut().find(|f| f.name == name).unwrap().levels
}

#[test]
fn grid_spec_validate_refuses_what_the_schema_does_not_allow() {
    type Mutation = fn(&mut GridSpec);
    let cases: &[(&str, Mutation, &str)] = &[
        (
            "grid.colour",
            |s| s.factors.push(Factor { name: "colour".into(), levels: vec![Level::Int(1)] }),
            "unknown factor \"colour\"; bmenet understands: depth, skip, init, batchnorm, epochs",
        ),
        ("grid.depth", |s| *factor_mut(s, "depth") = strs(&["8"]), "expected an integer, found the string \"8\""),
        ("grid.skip", |s| *factor_mut(s, "skip") = vec![Level::Int(1)], "expected a boolean"),
        // The wire is typed: an integer for a float factor is the parser's job.
        ("grid.lr", |s| *factor_mut(s, "lr") = vec![Level::Int(1)], "expected a number, found the integer 1"),
        ("grid.lr", |s| *factor_mut(s, "lr") = floats(&[-1.0]), "must be a positive finite number"),
        ("grid.lr", |s| *factor_mut(s, "lr") = floats(&[f64::NAN]), "must be a positive finite number"),
        ("grid.lr", |s| *factor_mut(s, "lr") = floats(&[0.1, 0.1]), "listed more than once"),
        ("grid.lr", |s| factor_mut(s, "lr").clear(), "empty list"),
        ("grid.optimizer", |s| *factor_mut(s, "optimizer") = strs(&["adamw"]), "unknown optimizer"),
        ("grid.batchnorm", |s| s.factors.retain(|f| f.name != "batchnorm"), "missing; this factor is required"),
        ("grid.depth", |s| s.factors.swap(0, 1), "out of order or given twice"),
        ("grid.lr", |s| s.factors.push(Factor { name: "lr".into(), levels: floats(&[0.5]) }), "given twice"),
        ("train.lr", |s| _ = s.train.insert("lr".into(), Level::Float(0.1)), "is both a factor and a fixed setting"),
        ("train.momentum", |s| _ = s.train.remove("momentum"), "missing; give it as a setting or a factor"),
        ("train.colour", |s| _ = s.train.insert("colour".into(), Level::Int(1)), "unknown setting"),
        ("train.depth", |s| _ = s.train.insert("depth".into(), Level::Int(8)), "unknown setting"),
        ("train.epochs", |s| _ = s.train.insert("epochs".into(), Level::Float(2.0)), "expected an integer"),
    ];
    let good = optimizer_and_lr();
    good.validate().unwrap();
    for (key, mutate, fragment) in cases {
        let mut spec = good.clone();
        mutate(&mut spec);
        refused(spec.validate(), key, fragment);
    }
}

#[test]
fn trial_spec_validate_refuses_what_the_schema_does_not_allow() {
    type Mutation = fn(&mut TrialSpec);
    let cases: &[(&str, Mutation, &str)] = &[
        ("colour", |t| t.cell.insert("colour", Level::Int(1)), "unknown factor \"colour\""),
        ("depth", |t| t.cell.insert("depth", Level::Str("8".into())), "expected an integer, found the string \"8\""),
        ("skip", |t| _ = t.cell.0.remove("skip"), "missing from the trial's cell"),
        ("train.lr", |t| _ = t.train.insert("lr".into(), Level::Float(0.1)), "both a factor and a fixed setting"),
        ("train.epochs", |t| _ = t.train.remove("epochs"), "missing; give it as a setting or a factor"),
        ("train.colour", |t| _ = t.train.insert("colour".into(), Level::Int(1)), "unknown setting"),
        ("train.optimizer", |t| t.cell.insert("optimizer", Level::Str("adamw".into())), "unknown optimizer"),
        ("train.lr", |t| t.cell.insert("lr", Level::Int(1)), "expected a number, found the integer 1"),
        ("train.lr", |t| t.cell.insert("lr", Level::Float(f64::INFINITY)), "must be a positive finite number"),
        ("train.momentum", |t| t.cell.insert("momentum", Level::Float(0.5)), "both a factor and a fixed setting"),
    ];
    let good = optimizer_and_lr().expand().remove(0);
    good.validate().unwrap();
    for (key, mutate, fragment) in cases {
        let mut t = good.clone();
        mutate(&mut t);
        refused(t.validate(), key, fragment);
        assert!(bmenet::resolve(&t).is_err(), "{key}: resolve must refuse what validate refuses");
    }
    // A setting moved into the cell (as a single-level factor) is valid.
    let mut t = good.clone();
    let momentum = t.train.remove("momentum").unwrap();
    t.cell.insert("momentum", momentum);
    t.validate().unwrap();
}

// ---- bmenet::resolve -------------------------------------------------------

#[test]
fn resolve_types_every_trial_with_factor_levels_overriding_only_their_keys() {
    // [train] values that are not the defaults, so a default that leaks
    // through shows.
    let text = r#"
name = "resolve"
seeds = [4]
[grid]
depth = [8, 32]
skip = [true, false]
init = ["default", "kaiming_normal"]
batchnorm = true
optimizer = ["sgd", "adam"]
lr = [1e-3, 1e-2]
[train]
epochs = 2
batch_size = 16
momentum = 0.8
weight_decay = 5e-4
log_every = 50
augment = true
[data]
path = "/data/cifar"
train_subset = 1000
"#;
    let spec = parse(text).unwrap();
    let base = TrainConfig {
        epochs: 2,
        batch_size: 16,
        optimizer: Optimizer::Sgd,
        lr: 1e-4,
        momentum: 0.8,
        weight_decay: 5e-4,
        log_every: 50,
        augment: true,
        precision: Precision::Fp32,
    };
    let trials = spec.expand();
    assert_eq!(trials.len(), 32);
    let mut seen = Vec::new();
    for t in &trials {
        let r = bmenet::resolve(t).unwrap();
        let c = |n: &str| t.cell.get(n).unwrap().clone();
        let want = BmenetTrial {
            depth: c("depth").as_int().unwrap() as u32,
            skip: c("skip").as_bool().unwrap(),
            init: c("init").as_str().unwrap().parse().unwrap(),
            batchnorm: true,
            seed: 4,
            train: TrainConfig {
                optimizer: c("optimizer").as_str().unwrap().parse().unwrap(),
                lr: c("lr").as_f64().unwrap(),
                ..base.clone()
            },
            analyses: Default::default(),
            data: spec.data.clone(),
        };
        assert_eq!(r, want);
        // The typed config's levels are the trial's settings and cell's
        // train keys, nothing else.
        let mut levels = t.train.clone();
        levels.insert("optimizer".into(), c("optimizer"));
        levels.insert("lr".into(), c("lr"));
        assert_eq!(r.train.levels(), levels);
        seen.push((r.depth, r.skip, r.init, r.train.optimizer, r.train.lr));
    }
    assert_eq!(seen[0], (8, true, InitScheme::Default, Optimizer::Sgd, 1e-3));
    assert_eq!(seen[31], (32, false, InitScheme::KaimingNormal, Optimizer::Adam, 1e-2));

    // Without factors for them, the settings are used as written.
    let plain = parse(EXAMPLE).unwrap().expand().remove(0);
    let r = bmenet::resolve(&plain).unwrap();
    assert_eq!(r.train, TrainConfig::default());
    assert_eq!((r.depth, r.skip, r.init, r.batchnorm, r.seed), (8, true, InitScheme::Default, true, 0));
}

/// `precision` came after trial IDs were published: a grid that does not
/// name it, or names its default, makes the same trials with the same IDs
/// as before the key existed (so a resubmitted or upgraded sweep resumes
/// instead of re-running); bf16 makes other trials.
#[test]
fn precision_at_its_default_keeps_every_earlier_trial_id() {
    let spec = parse(EXAMPLE).unwrap();
    let before = ids(&spec);
    // Every ID, recorded with the code before `precision` existed (commit
    // ecd05bc), in expansion order.
    let recorded: Vec<&str> = include_str!("fixtures/skip-ablation-ids.txt").lines().collect();
    assert_eq!(recorded.len(), 144);
    assert_eq!(before.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), recorded);
    assert!(!spec.expand()[0].canonical().contains("precision"), "{}", spec.expand()[0].canonical());
    assert_eq!(bmenet::resolve(&spec.expand()[0]).unwrap().train.precision, Precision::Fp32);

    let with =
        |line: &str| parse(&EXAMPLE.replace("augment = false\n", &format!("augment = false\n{line}\n"))).unwrap();
    assert_eq!(ids(&with("precision = \"fp32\"")), before, "the default, written out, is the same trials");
    let bf16 = with("precision = \"bf16\"");
    bf16.validate().unwrap();
    let after = ids(&bf16);
    assert!(after.iter().all(|id| !before.contains(id)), "bf16 trials are other trials");
    assert_eq!(bmenet::resolve(&bf16.expand()[0]).unwrap().train.precision, Precision::Bf16);
    assert_eq!(bf16.train.get("precision"), Some(&Level::Str("bf16".into())));
}

#[test]
fn precision_is_a_factor_like_any_setting_and_its_errors_name_the_value() {
    let spec = parse(&with_factors(&["precision = [\"fp32\", \"bf16\"]"])).unwrap();
    spec.validate().unwrap();
    assert_eq!(spec.levels("precision"), vec![Level::Str("fp32".into()), Level::Str("bf16".into())]);
    let trials = spec.expand();
    assert_eq!(trials.len(), 48 * 2 * 3);
    let kinds: Vec<Precision> = trials[..6].iter().map(|t| bmenet::resolve(t).unwrap().train.precision).collect();
    assert_eq!(
        kinds,
        [Precision::Fp32, Precision::Fp32, Precision::Fp32, Precision::Bf16, Precision::Bf16, Precision::Bf16]
    );
    rejects_at(
        &with_factors(&["precision = [\"fp32\", \"fp16\"]"]),
        "grid.precision",
        9,
        22,
        &["unknown precision", "fp16", "\"bf16\""],
    );
    // A spec from the wire may not carry the default that a trial leaves
    // out: it would be a second ID for the same trial.
    let mut t = parse(EXAMPLE).unwrap().expand()[0].clone();
    t.train.insert("precision".into(), Level::Str("fp32".into()));
    let e = t.validate().unwrap_err().to_string();
    assert!(e.contains("train.precision") && e.contains("is the default") && e.contains("leave it out"), "{e}");
    t.train.insert("precision".into(), Level::Str("bf16".into()));
    t.validate().unwrap();
    t.train.insert("precision".into(), Level::Int(16));
    assert!(t.validate().unwrap_err().to_string().contains("train.precision"));
}
