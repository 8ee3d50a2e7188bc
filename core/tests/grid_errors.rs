//! grid.toml refused: one test per kind of mistake, each checking the key,
//! the line and the message.
//!
//! Part of the grid.toml suite (`grid_parse_ok.rs`, `grid_errors.rs`,
//! `grid_validate.rs`, `grid_fuzz.rs`); the example file and the shared
//! helpers are in `tests/common`. Line numbers refer to the example's text.

mod common;

use common::{edit, parse, rejects, without_line, EXAMPLE};
use sweep_core::Level;

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
