//! Exec-trainer grids (`[trainer] kind = "exec"`): the example grid file
//! parsed end to end; each mistake refused at its file:line:column with its
//! dotted key; trial identity (BMEnet IDs unchanged by the new field, exec
//! IDs depending on the command); validation of specs built without a file;
//! the stored form of a trial; and BMEnet refusing an exec trial.
//!
//! Line numbers in the error tests refer to [`EXEC`], edited by [`edit`].

use std::path::{Path, PathBuf};

use sweep_core::{
    bmenet, exec, stored, DataConfig, ExecSpec, GridError, GridSpec, Level, RunConfig, TrainerSpec, TrialId, TrialSpec,
};

/// The path every in-memory grid is parsed under.
const FILE: &str = "/sweeps/exec/grid.toml";

/// A small exec grid. Line numbers: 4 `[trainer]`, 5 `kind`, 6 `command`,
/// 7 `args`, 9 `[grid]`, 10 `lr`, 11 `hidden`, 13 `[train]`, 14 `epochs`.
const EXEC: &str = r#"name = "exec-errors"
seeds = 2

[trainer]
kind = "exec"
command = ["python3", "train.py"]
args = ["--lr", "{lr}", "--hidden={hidden}"]

[grid]
lr = [0.01, 0.1]
hidden = [16, 32]

[train]
epochs = 2
"#;

/// The BMEnet example from the grid.toml reference, and the path its
/// recorded trial IDs (`fixtures/skip-ablation-ids.txt`) were made under.
const BMENET: &str = include_str!("../../examples/skip-ablation.toml");
const BMENET_FILE: &str = "/sweeps/ablation/grid.toml";

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/exec-mnist-like/grid.toml")
}

fn parse(text: &str) -> Result<GridSpec, GridError> {
    GridSpec::parse(text, Path::new(FILE))
}

/// [`EXEC`] with `old` (which must occur exactly once) replaced.
fn edit(old: &str, new: &str) -> String {
    assert_eq!(EXEC.matches(old).count(), 1, "{old:?} must occur once in EXEC");
    EXEC.replacen(old, new, 1)
}

/// Asserts `text` is refused at `FILE:line:column` with `key` and a message
/// containing each fragment; the displayed error reads the same.
#[track_caller]
fn rejects(text: &str, key: &str, line: usize, column: usize, fragments: &[&str]) {
    let err = match parse(text) {
        Ok(spec) => panic!("accepted, expected an error for {key}: {spec:?}\n{text}"),
        Err(e) => e,
    };
    let shown = err.to_string();
    let GridError::Invalid { path, line: l, column: c, key: k, message } = err else {
        panic!("unexpected error kind: {err:?}");
    };
    assert_eq!(path, PathBuf::from(FILE), "{shown}");
    assert_eq!((k.as_str(), l, c), (key, line, column), "key, line and column of {shown}");
    assert_eq!(shown, format!("{FILE}:{line}:{column}: {key}: {message}"));
    for f in fragments {
        assert!(message.contains(f), "{f:?} not in {shown}");
    }
}

fn exec_spec(trainer: &TrainerSpec) -> &ExecSpec {
    match trainer {
        TrainerSpec::Exec(e) => e,
        TrainerSpec::Bmenet => panic!("expected an exec trainer, found BMEnet"),
    }
}

/// The arguments a trial's command gets after `command`.
fn args_of(t: &TrialSpec) -> Vec<String> {
    exec_spec(&t.trainer).args_for(t.seed, |n| t.level(n).map(exec::level_text))
}

fn ids(spec: &GridSpec) -> Vec<TrialId> {
    spec.expand().iter().map(|t| t.id(&spec.name)).collect()
}

fn spec_error(result: Result<(), GridError>) -> (String, String) {
    match result {
        Err(GridError::Spec { key, message }) => (key, message),
        other => panic!("expected a spec error, got {other:?}"),
    }
}

// ---- 1. the example grid file ----------------------------------------------

#[test]
fn the_example_exec_grid_parses_with_every_field() {
    let path = example_path();
    let spec = GridSpec::from_file(&path).unwrap();
    assert_eq!(spec.name, "exec-mnist-like");
    assert_eq!(spec.seeds, vec![0, 1, 2]);
    assert_eq!(spec.schema().trainer, "exec");
    assert_eq!(spec.trainer.kind(), "exec");
    assert!(!spec.trainer.is_bmenet());

    let e = exec_spec(&spec.trainer);
    assert_eq!(e.command, vec!["python3", "train.py"]);
    assert_eq!(e.args, vec!["--lr", "{lr}", "--hidden", "{hidden}"]);
    assert_eq!(e.timeout_secs, Some(600));
    assert_eq!(e.env.len(), 1);
    assert_eq!(e.env.get("OMP_NUM_THREADS").map(String::as_str), Some("1"));
    // `workdir = "."` resolves against the file's folder, made absolute and
    // lexically normalised (the `..` of the path given is gone).
    let workdir = e.workdir.as_deref().expect("workdir is set");
    assert!(workdir.is_absolute(), "{workdir:?}");
    assert!(workdir.ends_with("exec-mnist-like"), "{workdir:?}");
    assert!(!workdir.components().any(|c| c == std::path::Component::ParentDir), "{workdir:?}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert_eq!(workdir, repo.join("examples/exec-mnist-like"));
    assert!(workdir.join("train.py").is_file(), "the command's script is in the workdir");

    // Open-schema factors, in name order (the file writes lr first), each
    // level of the kind the file writes.
    let names: Vec<&str> = spec.factors.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["hidden", "lr"]);
    assert_eq!(spec.levels("hidden"), [Level::Int(0), Level::Int(64)]);
    assert_eq!(spec.levels("lr"), [Level::Float(0.01), Level::Float(0.2)]);
    let train: Vec<(&str, &Level)> = spec.train.iter().map(|(k, v)| (k.as_str(), v)).collect();
    assert_eq!(train, [("batch_size", &Level::Int(32)), ("epochs", &Level::Int(3)), ("samples", &Level::Int(2048))]);
    // No [data]: the command makes its own.
    assert_eq!(spec.data, DataConfig::none());
    assert!(spec.data.is_none());
    assert_eq!(spec.run, RunConfig::default());
    assert_eq!(spec.schema().epochs_key, "epochs");

    let trials = spec.expand();
    assert_eq!(trials.len(), 12);
    assert_eq!(spec.cell_count(), 4);
    assert!(trials.iter().all(|t| t.trainer == spec.trainer && t.data == DataConfig::none()));
    assert_eq!(spec.schema().epochs_of(&trials[0]), 3);
    // Expansion order: hidden outermost, then lr, seeds innermost.
    assert_eq!(args_of(&trials[0]), ["--lr", "0.01", "--hidden", "0"]);
    assert_eq!(trials[0].seed, 0);
    let last = &trials[11];
    assert_eq!(
        (last.cell.get("hidden"), last.cell.get("lr"), last.seed),
        (Some(&Level::Int(64)), Some(&Level::Float(0.2)), 2)
    );
    assert_eq!(args_of(last), ["--lr", "0.2", "--hidden", "64"]);
    // Every trial is one distinct command line per cell, the same for
    // each of its seeds.
    let mut lines: Vec<Vec<String>> = trials.iter().map(args_of).collect();
    lines.dedup();
    assert_eq!(lines.len(), 4);
}

#[test]
fn args_fill_seed_settings_and_braces() {
    let text = edit(
        r#"args = ["--lr", "{lr}", "--hidden={hidden}"]"#,
        r#"args = ["--lr={lr}", "--seed", "{seed}", "--epochs={epochs}", "{{literal}}"]"#,
    );
    let spec = parse(&text).unwrap();
    let t = spec.expand().pop().unwrap();
    assert_eq!(t.seed, 1);
    assert_eq!(args_of(&t), ["--lr=0.1", "--seed", "1", "--epochs=2", "{literal}"]);
}

// ---- 2. errors at file:line:column --------------------------------------------

#[test]
fn a_placeholder_naming_no_factor_is_refused() {
    let text = edit(r#"args = ["--lr", "{lr}", "--hidden={hidden}"]"#, r#"args = ["--x", "{nope}"]"#);
    rejects(&text, "trainer.args", 7, 8, &["`{nope}` names no factor or setting of this grid"]);
    // An unclosed or empty placeholder too.
    rejects(&edit(r#""{lr}""#, r#""{lr""#), "trainer.args", 7, 8, &["`{` is not closed"]);
    rejects(&edit(r#""{lr}""#, r#""{}""#), "trainer.args", 7, 8, &["empty placeholder"]);
    // Placeholders belong in args, not in the command.
    rejects(&edit(r#""train.py""#, r#""{lr}.py""#), "trainer.command", 6, 11, &["placeholders belong in `args`"]);
}

#[test]
fn an_unknown_trainer_kind_is_refused() {
    rejects(
        &edit(r#"kind = "exec""#, r#"kind = "docker""#),
        "trainer.kind",
        5,
        8,
        &[r#"unknown trainer "docker""#, r#""bmenet" (the default) or "exec""#],
    );
    rejects(&edit(r#"kind = "exec""#, "kind = 3"), "trainer.kind", 5, 8, &["expected a string"]);
}

#[test]
fn a_command_is_refused_for_the_bmenet_trainer() {
    let hint = r#"belongs to `kind = "exec"`"#;
    rejects(&edit(r#"kind = "exec""#, r#"kind = "bmenet""#), "trainer.command", 6, 11, &[hint, "runs no command"]);
    // Without `kind` the trainer is BMEnet, so the command is refused too
    // (at line 5 now that `kind`'s line is gone).
    rejects(&edit("kind = \"exec\"\n", ""), "trainer.command", 5, 11, &[hint]);
    // Any other exec-only key as well.
    let only_timeout = "[trainer]\ntimeout = 60\n";
    let text = EXEC.replace(&EXEC[EXEC.find("[trainer]").unwrap()..EXEC.find("[grid]").unwrap()], only_timeout);
    rejects(&text, "trainer.timeout", 5, 11, &[hint]);
}

#[test]
fn an_empty_or_missing_command_is_refused() {
    rejects(
        &edit(r#"command = ["python3", "train.py"]"#, "command = []"),
        "trainer.command",
        6,
        11,
        &["must name a program", r#"command = ["python", "train.py"]"#],
    );
    rejects(&edit(r#"command = ["python3", "train.py"]"#, r#"command = [""]"#), "trainer.command", 6, 11, &["empty"]);
    rejects(
        &edit(r#"command = ["python3", "train.py"]"#, r#"command = "python3 train.py""#),
        "trainer.command",
        6,
        11,
        &["expected a list of strings"],
    );
    rejects(
        &edit("command = [\"python3\", \"train.py\"]\n", ""),
        "trainer.command",
        4,
        1,
        &["missing required key `command` in [trainer]"],
    );
}

#[test]
fn an_analysis_table_is_refused_in_an_exec_grid() {
    rejects(
        &format!("{EXEC}\n[analysis]\nlesion = true\n"),
        "analysis",
        16,
        1,
        &["analyses run inside the built-in BMEnet trainer", "does its own"],
    );
}

#[test]
fn a_factors_levels_are_one_kind() {
    rejects(
        &edit("hidden = [16, 32]", "hidden = [16, 32]\nx = [1, \"a\"]"),
        "grid.x",
        12,
        9,
        &[r#"the string "a" among levels of an integer"#, "one factor's levels are one kind"],
    );
    rejects(
        &edit("hidden = [16, 32]", "hidden = [16, 32]\nx = [true, 1.5]"),
        "grid.x",
        12,
        12,
        &["the float 1.5 among levels of a boolean"],
    );
    // Levels equal once integers are read as floats are one level twice.
    rejects(&edit("lr = [0.01, 0.1]", "lr = [1, 1.0]"), "grid.lr", 10, 10, &["listed more than once"]);
    rejects(&edit("lr = [0.01, 0.1]", "lr = [0.01, nan]"), "grid.lr", 10, 13, &["not a finite number"]);
}

#[test]
fn integers_among_floats_become_floats() {
    let spec = parse(&edit("lr = [0.01, 0.1]", "lr = [1, 0.5]")).unwrap();
    assert_eq!(spec.levels("lr"), [Level::Float(1.0), Level::Float(0.5)]);
    // Integers alone stay integers, in [grid] and in [train].
    assert_eq!(spec.levels("hidden"), [Level::Int(16), Level::Int(32)]);
    assert_eq!(spec.train.get("epochs"), Some(&Level::Int(2)));
    let t = &spec.expand()[0];
    assert!(t.canonical().contains(r#""lr":1.0"#), "{}", t.canonical());
    assert_eq!(args_of(t), ["--lr", "1.0", "--hidden=16"]);
}

#[test]
fn a_factor_or_setting_name_must_be_lower_case() {
    let rule = "lower-case letters, digits and `_`, starting with a letter";
    rejects(
        &edit("hidden = [16, 32]", "hidden = [16, 32]\nHidden = [1]"),
        "grid.Hidden",
        12,
        1,
        &[r#""Hidden" is not a usable name"#, rule, "SWEEP_FACTOR_<NAME>"],
    );
    rejects(&edit("hidden = [16, 32]", "hidden = [16, 32]\n2x = [1]"), "grid.2x", 12, 1, &[rule]);
    rejects(&edit("epochs = 2", "epochs = 2\nBatch = 3"), "train.Batch", 15, 1, &[rule]);
}

#[test]
fn env_names_of_the_worker_and_bad_names_are_refused() {
    let args = r#"args = ["--lr", "{lr}", "--hidden={hidden}"]"#;
    rejects(
        &edit(args, &format!("{args}\nenv = {{ SWEEP_X = \"1\" }}")),
        "trainer.env.SWEEP_X",
        8,
        9,
        &[r#""SWEEP_X" is set by the worker"#, "SWEEP_"],
    );
    rejects(
        &edit(args, &format!("{args}\nenv = {{ \"A-B\" = \"1\" }}")),
        "trainer.env.A-B",
        8,
        9,
        &["not an environment variable name"],
    );
    rejects(&edit(args, &format!("{args}\nenv = {{ A = 1 }}")), "trainer.env.A", 8, 13, &["expected a string"]);
    rejects(&edit(args, &format!("{args}\nenv = [\"A=1\"]")), "trainer.env", 8, 7, &["expected a table of strings"]);
}

#[test]
fn a_timeout_must_be_seconds_from_one_to_thirty_days() {
    let args = r#"args = ["--lr", "{lr}", "--hidden={hidden}"]"#;
    let with = |t: &str| edit(args, &format!("{args}\ntimeout = {t}"));
    rejects(&with("0"), "trainer.timeout", 8, 11, &["0 is not a timeout", "from 1 to 2592000 (30 days)"]);
    rejects(&with("-5"), "trainer.timeout", 8, 11, &["-5 is not a timeout"]);
    rejects(&with("2592001"), "trainer.timeout", 8, 11, &["not a timeout"]);
    rejects(&with("1.5"), "trainer.timeout", 8, 11, &["expected an integer"]);
    let spec = parse(&with("2592000")).unwrap();
    assert_eq!(exec_spec(&spec.trainer).timeout_secs, Some(exec::MAX_TIMEOUT_SECS));
}

#[test]
fn a_key_in_both_grid_and_train_is_refused() {
    rejects(
        &edit("epochs = 2", "epochs = 2\nlr = 0.5"),
        "grid.lr",
        10,
        1,
        &["`lr` is also in [train]", "either a factor or a fixed setting"],
    );
}

#[test]
fn dataset_none_takes_no_other_data_key() {
    rejects(
        &format!("{EXEC}\n[data]\ndataset = \"none\"\npath = \"/d\"\n"),
        "data.path",
        18,
        8,
        &[r#"has no meaning with `dataset = "none"`"#],
    );
    rejects(
        &format!("{EXEC}\n[data]\ndataset = \"none\"\ntrain_subset = 10\n"),
        "data.train_subset",
        18,
        16,
        &[r#"has no meaning with `dataset = "none"`"#],
    );
    // Written out alone, it is what an exec grid without [data] gets.
    let spec = parse(&format!("{EXEC}\n[data]\ndataset = \"none\"\n")).unwrap();
    assert_eq!(spec.data, DataConfig::none());
    assert_eq!(spec.data, parse(EXEC).unwrap().data);
}

#[test]
fn the_bmenet_trainer_needs_a_dataset_and_a_data_table() {
    let before_data = &BMENET[..BMENET.find("[data]").unwrap()];
    let none = format!("{before_data}[data]\ndataset = \"none\"\n");
    let err = GridSpec::parse(&none, Path::new(BMENET_FILE)).unwrap_err();
    let GridError::Invalid { line, column, key, message, .. } = err else { panic!("{err:?}") };
    assert_eq!((key.as_str(), line, column), ("data.dataset", 21, 11));
    assert!(message.contains(r#"the BMEnet trainer trains on "cifar10""#), "{message}");

    let err = GridSpec::parse(before_data, Path::new(BMENET_FILE)).unwrap_err();
    let GridError::Invalid { key, message, .. } = err else { panic!("{err:?}") };
    assert_eq!(key, "data");
    assert!(message.contains("missing [data] table"), "{message}");
}

#[test]
fn an_exec_grid_needs_a_grid_table() {
    let text =
        edit("[grid]\nlr = [0.01, 0.1]\nhidden = [16, 32]\n", "").replace(r#""{lr}", "--hidden={hidden}""#, "\"1\"");
    rejects(&text, "grid", 1, 1, &["missing [grid] table with at least one factor"]);
}

// ---- 3. identity ----------------------------------------------------------------

#[test]
fn bmenet_trial_ids_do_not_depend_on_the_trainer_field() {
    let recorded: Vec<&str> = include_str!("fixtures/skip-ablation-ids.txt").lines().collect();
    assert_eq!(recorded.len(), 144);
    let implicit = GridSpec::parse(BMENET, Path::new(BMENET_FILE)).unwrap();
    let explicit_text = BMENET.replacen("[grid]", "[trainer]\nkind = \"bmenet\"\n\n[grid]", 1);
    let explicit = GridSpec::parse(&explicit_text, Path::new(BMENET_FILE)).unwrap();
    assert_eq!(implicit.trainer, TrainerSpec::Bmenet);
    assert_eq!(explicit, implicit, "naming the default trainer changes nothing");
    for spec in [&implicit, &explicit] {
        assert_eq!(ids(spec).iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), recorded);
        for t in spec.expand() {
            assert!(!t.canonical().contains("trainer"), "{}", t.canonical());
            assert!(!t.cell_canonical().contains("trainer"), "{}", t.cell_canonical());
        }
        let json = serde_json::to_string(spec).unwrap();
        assert!(!json.contains("trainer"), "{json}");
    }
    // A BMEnet spec written before the field existed reads back as BMEnet.
    let t = implicit.expand().remove(0);
    let back: TrialSpec = serde_json::from_str(&t.canonical()).unwrap();
    assert_eq!(back, t);
    assert_eq!(back.trainer, TrainerSpec::Bmenet);
}

#[test]
fn exec_trial_ids_depend_on_the_command_and_are_stable() {
    let a = parse(EXEC).unwrap();
    let again = parse(EXEC).unwrap();
    assert_eq!(again, a);
    assert_eq!(ids(&again), ids(&a), "the same grid parsed twice gives the same IDs");
    assert_eq!(ids(&a).len(), 8);

    let t = &a.expand()[0];
    assert!(
        t.canonical().ends_with(concat!(
            r#""seed":0,"trainer":{"kind":"exec","command":["python3","train.py"],"#,
            r#""args":["--lr","{lr}","--hidden={hidden}"],"env":{},"workdir":null,"timeout_secs":null}}"#
        )),
        "{}",
        t.canonical()
    );
    let back: TrialSpec = serde_json::from_str(&t.canonical()).unwrap();
    assert_eq!(&back, t);
    assert_eq!(back.id(&a.name), t.id(&a.name));

    let b = parse(&edit(r#"command = ["python3", "train.py"]"#, r#"command = ["python3", "train2.py"]"#)).unwrap();
    assert_eq!(b.factors, a.factors);
    assert_eq!(b.train, a.train);
    assert_eq!(b.seeds, a.seeds);
    let (ia, ib) = (ids(&a), ids(&b));
    assert!(ib.iter().all(|id| !ia.contains(id)), "another command makes other trials");
    let (ka, kb) = (a.expand()[0].cell_key(&a.name), b.expand()[0].cell_key(&b.name));
    assert_ne!(ka, kb, "and other cells");

    // The same factors and settings under BMEnet's trainer field would be
    // other trials still: the trainer is part of the canonical form.
    let mut as_bmenet = a.expand()[0].clone();
    as_bmenet.trainer = TrainerSpec::Bmenet;
    assert_ne!(as_bmenet.id(&a.name), a.expand()[0].id(&a.name));
}

// ---- 4. validation of specs built without a file ------------------------------

#[test]
fn parsed_exec_grids_and_their_trials_validate() {
    for spec in [GridSpec::from_file(&example_path()).unwrap(), parse(EXEC).unwrap()] {
        spec.validate().unwrap();
        for t in spec.expand() {
            t.validate().unwrap_or_else(|e| panic!("{}: {e}", t.label()));
        }
    }
}

#[test]
fn a_trial_whose_args_name_an_unknown_placeholder_is_refused() {
    let mut t = parse(EXEC).unwrap().expand().remove(0);
    let TrainerSpec::Exec(e) = &mut t.trainer else { panic!("exec grid") };
    e.args = vec!["--x".into(), "{nope}".into()];
    let (key, message) = spec_error(t.validate());
    assert_eq!(key, "trainer.args");
    assert!(message.contains("`{nope}` names no factor or setting"), "{message}");

    // A placeholder whose factor is missing from the trial's cell, too.
    let mut t = parse(EXEC).unwrap().expand().remove(0);
    t.cell.0.remove("hidden");
    let (key, message) = spec_error(t.validate());
    assert_eq!(key, "trainer.args");
    assert!(message.contains("`{hidden}`"), "{message}");

    // And the grid's own placeholders, checked without a file.
    let mut spec = parse(EXEC).unwrap();
    let TrainerSpec::Exec(e) = &mut spec.trainer else { panic!("exec grid") };
    e.args.push("{nope}".into());
    let (key, message) = spec_error(spec.validate());
    assert_eq!(key, "trainer.args");
    assert!(message.contains("`{nope}`"), "{message}");
}

#[test]
fn a_trial_with_a_bad_exec_spec_is_refused() {
    let base = parse(EXEC).unwrap().expand().remove(0);
    type Mutation = fn(&mut ExecSpec);
    let cases: [(&str, Mutation); 5] = [
        ("trainer.command", |e| e.command.clear()),
        ("trainer.env", |e| {
            e.env.insert("SWEEP_SEED".into(), "1".into());
        }),
        ("trainer.timeout", |e| e.timeout_secs = Some(0)),
        ("trainer.workdir", |e| e.workdir = Some("relative/dir".into())),
        ("trainer.args", |e| e.args.push("bad\0arg".into())),
    ];
    for (expected, mutate) in cases {
        let mut t = base.clone();
        let TrainerSpec::Exec(e) = &mut t.trainer else { panic!("exec grid") };
        mutate(e);
        assert_eq!(spec_error(t.validate()).0, expected);
    }
}

#[test]
fn an_exec_trial_with_a_factor_name_not_lower_case_is_refused() {
    let mut t = parse(EXEC).unwrap().expand().remove(0);
    let level = t.cell.0.remove("hidden").unwrap();
    t.cell.insert("Hidden", level);
    let TrainerSpec::Exec(e) = &mut t.trainer else { panic!("exec grid") };
    e.args = vec!["{lr}".into()];
    let (key, message) = spec_error(t.validate());
    assert_eq!(key, "Hidden");
    assert!(message.contains(r#""Hidden""#), "{message}");

    // A fixed setting's name follows the same rule.
    let mut t = parse(EXEC).unwrap().expand().remove(0);
    t.train.insert("Epochs".into(), Level::Int(2));
    let (key, message) = spec_error(t.validate());
    assert_eq!(key, "train.Epochs");
    assert!(message.contains("lower-case"), "{message}");

    // So does the grid's, and its factors stay in name order.
    let mut spec = parse(EXEC).unwrap();
    spec.factors[0].name = "Hidden".into();
    let TrainerSpec::Exec(e) = &mut spec.trainer else { panic!("exec grid") };
    e.args = vec!["{lr}".into()];
    assert_eq!(spec_error(spec.validate()).0, "grid.Hidden");
    let mut spec = parse(EXEC).unwrap();
    spec.factors.swap(0, 1);
    let (key, message) = spec_error(spec.validate());
    assert_eq!(key, "grid.hidden", "the factor after one that sorts later");
    assert!(message.contains("out of order"), "{message}");
}

// ---- 5. the stored form ---------------------------------------------------------

#[test]
fn exec_trials_round_trip_through_their_stored_parts() {
    let spec = GridSpec::from_file(&example_path()).unwrap();
    let trials = spec.expand();
    let (hash, settings) = stored::shared_settings(&trials[0].train, &trials[0].data, &trials[0].trainer);
    assert_eq!(hash.len(), 64);
    assert_eq!(hash, stored::settings_hash(&settings));
    assert!(settings.contains(r#""trainer":{"kind":"exec","command":["python3","train.py"]"#), "{settings}");
    assert_eq!(stored::train_of(&settings).unwrap(), (spec.train.clone(), "exec"));
    for t in &trials {
        let (h, s) = stored::shared_settings(&t.train, &t.data, &t.trainer);
        assert_eq!((&h, &s), (&hash, &settings), "one settings row for the whole grid");
        let back = stored::trial_spec(&stored::own_part(t), &s).unwrap();
        assert_eq!(&back, t);
        assert_eq!(back.id(&spec.name), t.id(&spec.name));
    }
    // Another command is another settings row.
    let mut other = trials[0].trainer.clone();
    let TrainerSpec::Exec(e) = &mut other else { panic!("exec grid") };
    e.command[1] = "other.py".into();
    assert_ne!(stored::shared_settings(&trials[0].train, &trials[0].data, &other).0, hash);
}

#[test]
fn bmenet_stored_settings_have_no_trainer_key() {
    let spec = GridSpec::parse(BMENET, Path::new(BMENET_FILE)).unwrap();
    let t = spec.expand().remove(0);
    let (hash, settings) = stored::shared_settings(&t.train, &t.data, &t.trainer);
    let value: serde_json::Value = serde_json::from_str(&settings).unwrap();
    let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["data", "train"]);
    assert!(!settings.contains("trainer"), "{settings}");
    assert_eq!(hash, stored::settings_hash(&settings));
    assert_eq!(stored::train_of(&settings).unwrap(), (spec.train.clone(), "bmenet"));
    assert_eq!(stored::trial_spec(&stored::own_part(&t), &settings).unwrap(), t);
}

// ---- 6. BMEnet refuses an exec trial ---------------------------------------------

#[test]
fn bmenet_resolve_refuses_an_exec_trial() {
    let t = GridSpec::from_file(&example_path()).unwrap().expand().remove(0);
    let err = bmenet::resolve(&t).map(|_| ()).unwrap_err();
    let (key, message) = spec_error(Err(err));
    assert_eq!(key, "trainer.kind");
    assert!(message.contains("exec trainer, not BMEnet"), "{message}");
    // A BMEnet trial of the reference grid resolves.
    let b = GridSpec::parse(BMENET, Path::new(BMENET_FILE)).unwrap().expand().remove(0);
    assert_eq!(bmenet::resolve(&b).unwrap().depth, 8);
}

// ---- found while writing these tests ---------------------------------------------

/// A factor (or setting) named `seed` is accepted, but `{seed}` in `args`
/// is always the trial's seed: the factor's level never reaches the command
/// through its placeholder. Either the name should be refused, or the
/// placeholder should be unambiguous.
#[test]
fn a_factor_named_seed_is_not_silently_shadowed() {
    let text = edit("hidden = [16, 32]", "hidden = [16, 32]\nseed = [5, 6]")
        .replace(r#""--hidden={hidden}""#, r#""--hidden={hidden}", "--seed={seed}""#);
    match parse(&text) {
        Err(GridError::Invalid { key, .. }) => assert_eq!(key, "grid.seed"),
        Err(other) => panic!("{other:?}"),
        Ok(spec) => {
            let t = &spec.expand()[0];
            assert_eq!(t.cell.get("seed"), Some(&Level::Int(5)));
            assert!(args_of(t).contains(&"--seed=5".to_owned()), "{:?} (trial seed {})", args_of(t), t.seed);
        }
    }
}

/// An over-long factor or environment-variable name is echoed whole in the
/// error's key (quote.rs: every quoted piece of user text is shortened);
/// `check_keys` shortens the key of an unknown BMEnet key.
#[test]
fn long_names_are_shortened_in_errors() {
    let long = "a".repeat(5000);
    let err = parse(&edit("hidden = [16, 32]", &format!("hidden = [16, 32]\n{long} = [1]"))).unwrap_err();
    assert!(err.to_string().len() < 1000, "{} bytes", err.to_string().len());
    let args = r#"args = ["--lr", "{lr}", "--hidden={hidden}"]"#;
    let err = parse(&edit(args, &format!("{args}\nenv = {{ {} = \"1\" }}", long.to_uppercase()))).unwrap_err();
    assert!(err.to_string().len() < 1000, "{} bytes", err.to_string().len());
}

/// Wire validation of an exec trial or grid with a factor name that breaks
/// the naming rule says "unknown factor ...; exec understands: " with an
/// empty list, where a setting's error (and the grid file's) gives the rule.
#[test]
fn a_bad_factor_name_on_the_wire_gets_the_naming_rule() {
    let mut t = parse(EXEC).unwrap().expand().remove(0);
    let level = t.cell.0.remove("hidden").unwrap();
    t.cell.insert("Hidden", level);
    let TrainerSpec::Exec(e) = &mut t.trainer else { panic!("exec grid") };
    e.args = vec!["{lr}".into()];
    let (_, message) = spec_error(t.validate());
    assert!(message.contains("lower-case"), "{message}");
    assert!(!message.ends_with("understands: "), "{message}");
}

/// A BMEnet grid with `dataset = "none"` and a `path` is told to remove the
/// path, after which it is told BMEnet needs "cifar10": the first error
/// should be the dataset's.
#[test]
fn a_bmenet_grid_with_dataset_none_is_told_about_the_dataset_first() {
    let text = BMENET.replace(r#"dataset = "cifar10""#, r#"dataset = "none""#);
    let err = GridSpec::parse(&text, Path::new(BMENET_FILE)).unwrap_err();
    let GridError::Invalid { key, .. } = &err else { panic!("{err:?}") };
    assert_eq!(key, "data.dataset", "{err}");
}
