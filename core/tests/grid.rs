//! grid.toml: the issue's example, trial identity across resubmissions, one
//! test per kind of mistake (key, line and message), and a fuzz-style
//! property that no input makes the parser panic.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sweep_core::{GridError, GridSpec, Level, TrialId, TrialSpec};

/// The example from the grid.toml reference (issue 2), comments included:
/// `examples/skip-ablation.toml`, shared with the store and CLI tests.
/// Line numbers in the tests below refer to this text.
const EXAMPLE: &str = include_str!("../../examples/skip-ablation.toml");

const GRID_FILE: &str = "/sweeps/ablation/grid.toml";

fn parse(text: &str) -> Result<GridSpec, GridError> {
    GridSpec::parse(text, Path::new(GRID_FILE))
}

/// The example with `old` (which must occur exactly once) replaced.
fn edit(old: &str, new: &str) -> String {
    assert_eq!(EXAMPLE.matches(old).count(), 1, "{old:?} must occur once in EXAMPLE");
    EXAMPLE.replacen(old, new, 1)
}

/// The example without the line that starts with `prefix`.
fn without_line(prefix: &str) -> String {
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with(prefix)).count(), 1, "{prefix:?}");
    lines.iter().filter(|l| !l.starts_with(prefix)).map(|l| format!("{l}\n")).collect()
}

/// Asserts the text is rejected with this key, at this line, with a message
/// containing each fragment; returns the column for tests that care.
#[track_caller]
fn rejects(text: &str, key: &str, line: usize, fragments: &[&str]) -> usize {
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

fn ids(spec: &GridSpec) -> Vec<TrialId> {
    spec.expand().iter().map(|t| t.id(&spec.name)).collect()
}

fn ints(v: &[i64]) -> Vec<Level> {
    v.iter().copied().map(Level::Int).collect()
}

fn bools(v: &[bool]) -> Vec<Level> {
    v.iter().copied().map(Level::Bool).collect()
}

fn strs(v: &[&str]) -> Vec<Level> {
    v.iter().map(|s| Level::Str((*s).to_owned())).collect()
}

/// The levels of factor `name`, to mutate (it must be a factor).
fn levels_mut<'a>(spec: &'a mut GridSpec, name: &str) -> &'a mut Vec<Level> {
    &mut spec.factors.iter_mut().find(|f| f.name == name).unwrap_or_else(|| panic!("no factor {name}")).levels
}

/// Sets a fixed `[train]` setting of a spec.
fn set_train(spec: &mut GridSpec, name: &str, level: Level) {
    assert!(spec.train.contains_key(name), "{name} is not a setting");
    spec.train.insert(name.to_owned(), level);
}

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

// ---- one test per kind of mistake -----------------------------------------

#[test]
fn toml_syntax_error() {
    rejects(&edit("epochs = 6", "epochs = 6 6"), "train.epochs", 11, &["invalid TOML"]);
    rejects(&edit("[train]", "[train"), "", 10, &["invalid TOML"]);
}

#[test]
fn duplicate_key() {
    rejects(&edit("epochs = 6", "epochs = 6\nepochs = 7"), "train.epochs", 12, &["duplicate key"]);
}

#[test]
fn unknown_top_level_key() {
    rejects(
        &edit("seeds = [0, 1, 2]", "seeds = [0, 1, 2]\ncolour = \"red\""),
        "colour",
        3,
        &["unknown key `colour` at the top level", "expected one of: name, seeds"],
    );
    rejects(&edit("seeds = [0, 1, 2]", "seeds = [0, 1, 2]\nseed = 4"), "seed", 3, &["did you mean `seeds`?"]);
}

#[test]
fn section_key_at_the_top_level() {
    rejects(&edit("seeds = [0, 1, 2]", "seeds = [0, 1, 2]\nepochs = 6"), "epochs", 3, &["belongs in [train]"]);
}

#[test]
fn unknown_key_in_grid() {
    rejects(
        &edit("skip = [true, false]", "skip = [true, false]\ndepht = 8"),
        "grid.depht",
        7,
        &["unknown key `depht` in [grid]", "did you mean `depth`?"],
    );
    // A [data] or [run] key is not a factor (a [train] key may be one:
    // see `a_train_key_in_grid_is_a_factor`).
    rejects(
        &edit("skip = [true, false]", "skip = [true, false]\ntrain_subset = [100, 200]"),
        "grid.train_subset",
        7,
        &["unknown key `train_subset` in [grid]", "is a [data] setting, not a grid factor"],
    );
    rejects(
        &edit("skip = [true, false]", "skip = [true, false]\npriority = [0, 1]"),
        "grid.priority",
        7,
        &["is a [run] setting, not a grid factor"],
    );
}

/// Issue 9: any [train] key may be a factor. Before, `lr = [0.1, 0.01]` in
/// [grid] was refused as "not a grid factor"; it is now a factor (once its
/// [train] line is gone: a key is a factor or a setting, never both).
#[test]
fn a_train_key_in_grid_is_a_factor() {
    let text = edit("skip = [true, false]", "skip = [true, false]\nlr = [0.1, 0.01]").replace("lr = 1e-4\n", "");
    let spec = parse(&text).unwrap();
    assert_eq!(spec.levels("lr"), [Level::Float(0.1), Level::Float(0.01)]);
    assert!(!spec.train.contains_key("lr"));
    assert_eq!(spec.cell_count(), 48 * 2);
    spec.validate().unwrap();
    // With its [train] line still there, both places are named.
    rejects(
        &edit("skip = [true, false]", "skip = [true, false]\nlr = [0.1, 0.01]"),
        "train.lr",
        15,
        &["`lr` is also a factor in [grid] (line 7, column 6)", "either a factor or a fixed setting"],
    );
}

#[test]
fn unknown_key_in_train() {
    rejects(&edit("batch_size = 4", "batchsize = 4"), "train.batchsize", 12, &["did you mean `batch_size`?"]);
}

#[test]
fn unknown_key_in_data() {
    rejects(
        &edit("test_subset = 10000 ", "test_subst = 10000 "),
        "data.test_subst",
        24,
        &["did you mean `test_subset`?"],
    );
}

#[test]
fn unknown_key_in_run() {
    rejects(&edit("priority = 0", "priorty = 0"), "run.priorty", 28, &["did you mean `priority`?"]);
    rejects(&edit("priority = 0", "workers = 4"), "run.workers", 28, &["expected one of: max_attempts, priority"]);
}

#[test]
fn missing_name() {
    rejects(&without_line("name ="), "name", 1, &["missing required key `name`"]);
}

#[test]
fn missing_seeds() {
    rejects(&without_line("seeds ="), "seeds", 1, &["missing required key `seeds`"]);
}

#[test]
fn missing_factor() {
    rejects(
        &without_line("batchnorm ="),
        "grid.batchnorm",
        4,
        &["missing required key `batchnorm` in [grid]", "batchnorm = [true, false]"],
    );
}

#[test]
fn missing_tables_and_paths() {
    let no_grid: String = EXAMPLE.lines().filter(|l| !l.starts_with("[grid]")).map(|l| format!("{l}\n")).collect();
    // Without the header the factors land at the top level.
    rejects(&no_grid, "depth", 4, &["belongs in [grid]"]);
    rejects(&without_line("path ="), "data.path", 20, &["missing required key `path` in [data]"]);
    rejects("name = \"x\"\nseeds = 1\n[data]\npath = \"d\"\n", "grid", 1, &["missing [grid] table"]);
    let no_data = EXAMPLE.split("[data]").next().unwrap();
    rejects(no_data, "data", 1, &["missing [data] table"]);
    rejects(&edit("[grid] ", "[[grid]] "), "grid", 4, &["expected a table ([grid]), found an array"]);
}

#[test]
fn empty_factor_list() {
    rejects(
        &edit("init = [\"default\", \"xavier_normal\", \"kaiming_normal\"]", "init = []"),
        "grid.init",
        7,
        &["empty list"],
    );
}

#[test]
fn wrong_type() {
    let col = rejects(
        &edit("depth = [8, 16, 32, 64]", "depth = \"8\""),
        "grid.depth",
        5,
        &["expected an integer, found the string \"8\"", "remove the quotes"],
    );
    assert_eq!(col, 9);
    rejects(&edit("skip = [true, false]", "skip = [true, 1]"), "grid.skip", 6, &["expected a boolean"]);
    rejects(&edit("epochs = 6", "epochs = 6.0"), "train.epochs", 11, &["expected an integer, found the float 6.0"]);
    rejects(&edit("lr = 1e-4", "lr = \"fast\""), "train.lr", 14, &["expected a number"]);
    rejects(&edit("augment = false", "augment = \"no\""), "train.augment", 18, &["expected a boolean"]);
    rejects(&edit("name = \"skip-ablation\"", "name = 7"), "name", 1, &["expected a string"]);
    rejects(&edit("[0, 1, 2]", "\"three\""), "seeds", 2, &["expected a list of seeds or a count"]);
}

#[test]
fn depth_not_a_positive_multiple_of_8() {
    for bad in ["0", "12", "-8"] {
        let col = rejects(
            &edit("[8, 16, 32, 64]", &format!("[8, {bad}]")),
            "grid.depth",
            5,
            &[&format!("{bad} is not a positive multiple of 8")],
        );
        assert_eq!(col, 13, "the column of the offending element");
    }
    rejects(&edit("[8, 16, 32, 64]", "8589934592"), "grid.depth", 5, &["8589934592 is deeper than the limit of 1024"]);
}

#[test]
fn unknown_init_name() {
    rejects(
        &edit("\"xavier_normal\"", "\"xavier\""),
        "grid.init",
        7,
        &["unknown init scheme \"xavier\"", "default, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal"],
    );
}

#[test]
fn duplicate_factor_values() {
    let col = rejects(&edit("[8, 16, 32, 64]", "[8, 16, 8]"), "grid.depth", 5, &["8 is listed more than once"]);
    assert_eq!(col, 17, "points at the repetition");
    rejects(&edit("[true, false]\ninit", "[true, true]\ninit"), "grid.skip", 6, &["listed more than once"]);
}

#[test]
fn duplicate_seeds() {
    rejects(&edit("[0, 1, 2]", "[0, 1, 1]"), "seeds", 2, &["1 is listed more than once"]);
}

#[test]
fn negative_seed() {
    rejects(&edit("[0, 1, 2]", "[0, -1]"), "seeds", 2, &["seed -1 is negative"]);
}

#[test]
fn no_seeds() {
    rejects(&edit("[0, 1, 2]", "[]"), "seeds", 2, &["at least one seed is needed"]);
    rejects(&edit("[0, 1, 2]", "0"), "seeds", 2, &["at least one seed is needed (got 0)"]);
    rejects(&edit("[0, 1, 2]", "-3"), "seeds", 2, &["at least one seed is needed (got -3)"]);
}

#[test]
fn bad_names() {
    rejects(&edit("\"skip-ablation\"", "\"\""), "name", 1, &["must not be empty"]);
    rejects(&edit("\"skip-ablation\"", "\"skip ablation\""), "name", 1, &["contains ' '", "letters, digits"]);
    rejects(&edit("\"skip-ablation\"", "\"a/b\""), "name", 1, &["contains '/'"]);
    let long = format!("\"{}\"", "x".repeat(65));
    rejects(&edit("\"skip-ablation\"", &long), "name", 1, &["65 characters long; the limit is 64"]);
    parse(&edit("\"skip-ablation\"", &format!("\"{}\"", "x".repeat(64)))).unwrap();
}

#[test]
fn zero_epochs() {
    rejects(&edit("epochs = 6", "epochs = 0"), "train.epochs", 11, &["must be at least 1, got 0"]);
}

#[test]
fn zero_batch_size() {
    rejects(&edit("batch_size = 4", "batch_size = 0"), "train.batch_size", 12, &["at least 1"]);
}

#[test]
fn bad_learning_rate() {
    for bad in ["0", "-1e-3", "nan", "inf", "-inf"] {
        rejects(&edit("lr = 1e-4", &format!("lr = {bad}")), "train.lr", 14, &["must be a positive finite number"]);
    }
    rejects(&edit("lr = 1e-4", "lr = 1e400"), "train.lr", 14, &["out of range"]);
    rejects(&edit("lr = 1e-4", "lr = 0.0"), "train.lr", 14, &["must be a positive finite number"]);
}

#[test]
fn momentum_out_of_range() {
    for bad in ["1.0", "-0.1", "1", "nan"] {
        rejects(
            &edit("momentum = 0.9", &format!("momentum = {bad}")),
            "train.momentum",
            15,
            &["at least 0 and less than 1"],
        );
    }
    parse(&edit("momentum = 0.9", "momentum = 0")).unwrap();
}

#[test]
fn negative_weight_decay() {
    rejects(&edit("weight_decay = 0.0", "weight_decay = -1e-4"), "train.weight_decay", 16, &[">= 0"]);
}

#[test]
fn zero_log_every() {
    rejects(&edit("log_every = 2000", "log_every = 0"), "train.log_every", 17, &["at least 1"]);
}

#[test]
fn unknown_optimizer() {
    rejects(
        &edit("optimizer = \"sgd\"", "optimizer = \"rmsprop\""),
        "train.optimizer",
        13,
        &["unknown optimizer \"rmsprop\"", "\"adam\""],
    );
}

#[test]
fn unknown_dataset() {
    rejects(&edit("\"cifar10\"", "\"mnist\""), "data.dataset", 21, &["unknown dataset \"mnist\"", "cifar10"]);
}

#[test]
fn empty_data_path() {
    rejects(&edit("\"data/cifar-10-batches-bin\"", "\"\""), "data.path", 22, &["must not be empty"]);
}

#[test]
fn zero_subsets() {
    rejects(&edit("train_subset = 50000", "train_subset = 0"), "data.train_subset", 23, &["at least 1"]);
    rejects(&edit("test_subset = 10000", "test_subset = -5"), "data.test_subset", 24, &["at least 1, got -5"]);
}

#[test]
fn zero_max_attempts() {
    rejects(&edit("max_attempts = 3", "max_attempts = 0"), "run.max_attempts", 27, &["at least 1"]);
}

#[test]
fn priority_out_of_range() {
    rejects(&edit("priority = 0", "priority = 3000000000"), "run.priority", 28, &["out of range"]);
}

#[test]
fn excessive_size() {
    rejects(&edit("[0, 1, 2]", "2084"), "grid", 4, &["48 cells x 2084 seeds = 100032 trials", "limit of 100000"]);
    // A huge count is refused before it is turned into a list.
    rejects(
        &edit("[0, 1, 2]", "9000000000000000000"),
        "seeds",
        2,
        &["9000000000000000000 seeds are more than the limit of 100000"],
    );
    parse(&edit("[0, 1, 2]", "2083")).unwrap();
}

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

// ---- robustness ------------------------------------------------------------

/// An edit to the example's text.
#[derive(Debug, Clone)]
enum Mutation {
    SetByte(usize, u8),
    InsertByte(usize, u8),
    DeleteByte(usize),
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Swap the right-hand sides of two `key = value` lines.
    SwapValues(usize, usize),
    /// Replace a line's right-hand side with a value from elsewhere.
    ReplaceValue(usize, &'static str),
}

const ODD_VALUES: &[&str] = &[
    "0",
    "-1",
    "[]",
    "[[]]",
    "\"\"",
    "\"8\"",
    "nan",
    "-inf",
    "1e999",
    "true",
    "{}",
    "{ a = 1 }",
    "9223372036854775807",
    "-9223372036854775808",
    "0x7fffffff",
    "1979-05-27",
    "[1, \"a\"]",
    "[8, 8]",
    "\"é\u{1F600}\"",
    "'''\nmulti\n'''",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(b"[]=\"'#,.\n -0189{}".to_vec())];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        any::<usize>().prop_map(Mutation::DeleteByte),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapValues(a, b)),
        (any::<usize>(), prop::sample::select(ODD_VALUES)).prop_map(|(a, v)| Mutation::ReplaceValue(a, v)),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let n = bytes.len().max(1);
        let nl = lines.len().max(1);
        let value_lines: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains('=')).collect();
        match *m {
            Mutation::SetByte(i, b) if !bytes.is_empty() => bytes[i % n] = b,
            Mutation::InsertByte(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::DeleteByte(i) if !bytes.is_empty() => {
                bytes.remove(i % n);
            }
            Mutation::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % nl);
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % nl].clone();
                lines.insert(i % nl, l);
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::SwapValues(a, b) if !value_lines.is_empty() => {
                let (a, b) = (value_lines[a % value_lines.len()], value_lines[b % value_lines.len()]);
                let split = |l: &str| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()));
                if let (Some((ka, va)), Some((kb, vb))) = (split(&lines[a]), split(&lines[b])) {
                    lines[a] = format!("{ka}={vb}");
                    lines[b] = format!("{kb}={va}");
                }
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::ReplaceValue(a, v) if !value_lines.is_empty() => {
                let a = value_lines[a % value_lines.len()];
                if let Some((k, _)) = lines[a].split_once('=') {
                    lines[a] = format!("{k}= {v}");
                }
                bytes = lines.join("\n").into_bytes();
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The example with `optimizer` and `lr` moved from [train] to [grid].
fn factor_example() -> String {
    let text = EXAMPLE
        .replacen(
            "batchnorm = [true, false]\n",
            "batchnorm = [true, false]\noptimizer = [\"sgd\", \"adam\"]\nlr = [1e-3, 1e-2]\n",
            1,
        )
        .lines()
        .filter(|l| !l.starts_with("optimizer = \"sgd\"") && !l.starts_with("lr = 1e-4"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let spec = parse(&text).expect("the factor example parses");
    assert_eq!(spec.cell_count(), 48 * 4, "optimizer and lr are factors");
    text
}

/// What must hold for any input: no panic; an error names the file and a
/// real position; an accepted spec passes `validate` and respects the size
/// limit (so the parser and the wire validator agree).
fn check_any_input(text: &str) -> Result<(), TestCaseError> {
    match parse(text) {
        Ok(spec) => {
            prop_assert!(spec.validate().is_ok(), "parsed but invalid: {:?}", spec.validate());
            prop_assert!((spec.cell_count() * spec.seeds.len()) as u64 <= sweep_core::grid::MAX_TRIALS);
        }
        Err(GridError::Invalid { line, column, ref message, .. }) => {
            let lines = text.split('\n').count();
            prop_assert!(line >= 1 && line <= lines, "line {} of {}", line, lines);
            prop_assert!(column >= 1);
            prop_assert!(!message.is_empty());
            let shown = parse(text).unwrap_err().to_string();
            let prefix = format!("{GRID_FILE}:{line}:{column}: ");
            prop_assert!(shown.starts_with(&prefix), "{}", shown);
        }
        Err(other) => prop_assert!(false, "unexpected error kind {:?}", other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check_any_input(&apply(EXAMPLE, &mutations))?;
    }

    /// The same with [train] keys as factors (issue 9): mutations move
    /// values between [grid] and [train], retype levels, and so on.
    #[test]
    fn mutated_factor_examples_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check_any_input(&apply(&factor_example(), &mutations))?;
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        check_any_input(&text)?;
    }

    #[test]
    fn toml_like_strings_never_panic(text in "([a-z_]{1,8} = [-0-9a-z\"\\[\\], .]{0,12}\n|\\[[a-z]{1,6}\\]\n){0,12}") {
        check_any_input(&text)?;
    }
}

#[test]
fn deeply_nested_values_are_refused_not_a_stack_overflow() {
    for depth in [1_000usize, 100_000, 1_000_000] {
        for (open, close) in [("[", "]"), ("{a=", "}")] {
            let text = format!("x = {}1{}\n{EXAMPLE}", open.repeat(depth), close.repeat(depth));
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.len() < 400, "{depth}: {} bytes", e.len());
        }
        let text = format!("{} = 1\n{EXAMPLE}", vec!["a"; depth].join("."));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.len() < 400, "{depth}: {} bytes", e.len());
    }
}
