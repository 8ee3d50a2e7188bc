//! Adaptive seeds (`[run] target_halfwidth`, `max_seeds`, `contrast`): the
//! grid keys, their errors, and the verdicts of `adaptive::review`, the
//! function both the coordinator and the report apply.

mod common;

use common::{edit, parse, rejects};
use sweep_core::adaptive::{cells_of, next_seed, review, Next, Outcome, Run, SeedPlan, Stop};
use sweep_core::{Cell, Level};

const RUN: &str = "max_attempts = 3\npriority = 0";

fn with_run(extra: &str) -> String {
    edit(RUN, &format!("{RUN}\n{extra}"))
}

#[test]
fn a_plan_is_parsed_with_the_focus_factor_as_the_default_contrast() {
    let g = parse(&with_run("target_halfwidth = 0.02\nmax_seeds = 10")).unwrap();
    assert_eq!(g.run.adaptive, Some(SeedPlan { target_halfwidth: 0.02, max_seeds: 10, contrast: "skip".into() }));
    let g = parse(&with_run("target_halfwidth = 1\nmax_seeds = 3\ncontrast = \"init\"")).unwrap();
    assert_eq!(g.run.adaptive, Some(SeedPlan { target_halfwidth: 1.0, max_seeds: 3, contrast: "init".into() }));
    assert_eq!(parse(&with_run("")).unwrap().run.adaptive, None);
    // The plan is not part of any trial's identity.
    let plain = parse(&with_run("")).unwrap().expand();
    let adaptive = parse(&with_run("target_halfwidth = 0.02\nmax_seeds = 10")).unwrap().expand();
    assert_eq!(plain, adaptive);
}

#[test]
fn plan_mistakes_are_refused_at_their_line() {
    rejects(&with_run("max_seeds = 10"), "run.max_seeds", 29, &["no effect without `target_halfwidth`"]);
    rejects(&with_run("contrast = \"skip\""), "run.contrast", 29, &["no effect without `target_halfwidth`"]);
    rejects(&with_run("target_halfwidth = 0.02"), "run.max_seeds", 26, &["missing", "max_seeds = 10"]);
    rejects(&with_run("target_halfwidth = 0\nmax_seeds = 10"), "run.target_halfwidth", 29, &["positive finite"]);
    rejects(&with_run("target_halfwidth = -0.1\nmax_seeds = 10"), "run.target_halfwidth", 29, &["positive"]);
    rejects(&with_run("target_halfwidth = nan\nmax_seeds = 10"), "run.target_halfwidth", 29, &[]);
    rejects(&with_run("target_halfwidth = \"2pp\"\nmax_seeds = 10"), "run.target_halfwidth", 29, &[]);
    rejects(
        &with_run("target_halfwidth = 0.02\nmax_seeds = 2"),
        "run.max_seeds",
        30,
        &["2 is fewer than the 3 planned seeds"],
    );
    rejects(&with_run("target_halfwidth = 0.02\nmax_seeds = 5000"), "run.max_seeds", 30, &["limit of 1000"]);
    // 120 cells x 1000 seeds is more trials than a sweep may have.
    let big = with_run("target_halfwidth = 0.02\nmax_seeds = 1000")
        .replace("depth = [8, 16, 32, 64]", "depth = [8, 16, 32, 64, 128]")
        .replace("batchnorm = [true, false]", "batchnorm = [true, false]\nprecision = [\"fp32\", \"bf16\"]");
    rejects(&big, "run.max_seeds", 31, &["at 1000 seeds per cell", "120000 trials"]);
    rejects(
        &with_run("target_halfwidth = 0.02\nmax_seeds = 10\ncontrast = \"lr\""),
        "run.contrast",
        31,
        &["\"lr\" is not a factor in this grid", "one of: depth, skip, init, batchnorm"],
    );
    let fixed_skip = edit("skip = [true, false]", "skip = true");
    let fixed_skip = fixed_skip.replace(RUN, &format!("{RUN}\ntarget_halfwidth = 0.02\nmax_seeds = 10"));
    rejects(&fixed_skip, "run.contrast", 29, &["not given, and the default", "\"skip\" is held at one level"]);
}

fn cell(depth: i64, skip: bool) -> Cell {
    [("depth".to_owned(), Level::Int(depth)), ("skip".to_owned(), Level::Bool(skip))].into_iter().collect()
}

fn plan(max_seeds: u32) -> SeedPlan {
    SeedPlan { target_halfwidth: 0.02, max_seeds, contrast: "skip".into() }
}

/// Runs of one depth: `on[i]` and `off[i]` are seed i's outcomes.
fn stratum(depth: i64, on: &[Outcome], off: &[Outcome]) -> Vec<Run> {
    let side = |skip: bool, xs: &[Outcome]| -> Vec<Run> {
        xs.iter().enumerate().map(|(s, &outcome)| Run { cell: cell(depth, skip), seed: s as u64, outcome }).collect()
    };
    [side(true, on), side(false, off)].concat()
}

fn values(xs: &[f64]) -> Vec<Outcome> {
    xs.iter().map(|&x| Outcome::Value(x)).collect()
}

#[test]
fn each_stratum_gets_its_verdict() {
    let schema = sweep_core::schema();
    // Clear: +30 points on every seed, little spread.
    let clear = stratum(32, &values(&[0.60, 0.62, 0.61]), &values(&[0.30, 0.31, 0.32]));
    // Open: no effect, 5 points of noise: wider than ±2 and contains 0.
    let open = stratum(8, &values(&[0.60, 0.50, 0.55]), &values(&[0.55, 0.57, 0.52]));
    // Precise: a tiny effect measured tightly (interval within ±2 points).
    let precise = stratum(16, &values(&[0.500, 0.501, 0.502]), &values(&[0.501, 0.500, 0.502]));
    let runs = [clear, open.clone(), precise].concat();
    let strata = review(&plan(10), schema, &runs);
    let by_depth = |d: i64| strata.iter().find(|s| s.at.get("depth") == Some(&Level::Int(d))).unwrap();
    assert_eq!(by_depth(32).next, Next::Stopped(Stop::Resolved));
    assert_eq!(by_depth(8).next, Next::SeedDue(3));
    assert_eq!(by_depth(16).next, Next::Stopped(Stop::BelowTarget));
    let e = &by_depth(32).effects[0];
    assert_eq!((e.level.clone(), e.pairs), (Level::Bool(true), 3));
    assert!((e.estimate.unwrap() - 0.3).abs() < 1e-12);
    // The baseline is the first level in display order (off before on).
    assert_eq!(by_depth(32).baseline, Level::Bool(false));
    assert_eq!(by_depth(8).seeds.len(), 3);

    // At max_seeds the open stratum stops.
    assert_eq!(review(&plan(3), schema, &open)[0].next, Next::Stopped(Stop::MaxSeeds));
}

#[test]
fn a_stratum_waits_for_its_trials_and_skips_unpaired_seeds() {
    let schema = sweep_core::schema();
    let mut runs = stratum(8, &values(&[0.6, 0.5, 0.55]), &values(&[0.55, 0.57, 0.52]));
    runs[5].outcome = Outcome::Pending;
    assert_eq!(review(&plan(10), schema, &runs)[0].next, Next::Waiting);
    // A diverged seed is no pair; the others still are.
    runs[5].outcome = Outcome::NoValue;
    let s = &review(&plan(10), schema, &runs)[0];
    assert_eq!((s.effects[0].pairs, s.next), (2, Next::SeedDue(3)));
    // Every seed diverged on one side: more seeds would not help.
    let dead = stratum(8, &values(&[0.6, 0.5, 0.55]), &[Outcome::NoValue; 3]);
    let s = &review(&plan(10), schema, &dead)[0];
    assert_eq!((s.effects[0].pairs, s.effects[0].estimate, s.next), (0, None, Next::Stopped(Stop::NoPairs)));
    // One pair: an estimate, no interval, one more seed.
    let one = stratum(8, &values(&[0.6]), &values(&[0.5]));
    let s = &review(&plan(10), schema, &one)[0];
    assert_eq!((s.effects[0].ci95, s.next), (None, Next::SeedDue(1)));
    // A stratum with one level of the contrast has nothing to judge.
    assert!(review(&plan(10), schema, &stratum(8, &values(&[0.6, 0.5]), &[])).is_empty());
}

#[test]
fn with_three_levels_every_level_must_be_settled() {
    let schema = sweep_core::schema();
    let plan = SeedPlan { target_halfwidth: 0.02, max_seeds: 10, contrast: "init".into() };
    let run = |init: &str, seed: u64, v: f64| Run {
        cell: [("init".to_owned(), Level::Str(init.into()))].into_iter().collect(),
        seed,
        outcome: Outcome::Value(v),
    };
    let mut runs = Vec::new();
    for (seed, (d, x, k)) in [(0.50, 0.70, 0.51), (0.52, 0.71, 0.56), (0.51, 0.72, 0.47)].into_iter().enumerate() {
        runs.extend([run("default", seed as u64, d), run("xavier_normal", seed as u64, x)]);
        runs.push(run("kaiming_normal", seed as u64, k));
    }
    let s = &review(&plan, schema, &runs)[0];
    // Declared order: default is the baseline; xavier is resolved, kaiming open.
    assert_eq!(s.baseline, Level::Str("default".into()));
    assert_eq!(s.effects.len(), 2);
    assert!(s.at.0.is_empty());
    assert_eq!(s.next, Next::SeedDue(3));
}

#[test]
fn the_next_seed_is_the_smallest_unused_and_cells_cover_every_level() {
    assert_eq!(next_seed(&[0, 1, 2].into_iter().collect()), 3);
    assert_eq!(next_seed(&[5, 10].into_iter().collect()), 0);
    assert_eq!(next_seed(&[0, 2].into_iter().collect()), 1);
    let at: Cell = [("depth".to_owned(), Level::Int(8))].into_iter().collect();
    let cells = cells_of(&at, "skip", &[Level::Bool(true), Level::Bool(false)]);
    assert_eq!(cells, vec![cell(8, true), cell(8, false)]);
}
