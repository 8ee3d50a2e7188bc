//! Wire specs are checked by sweep-core's rules (their one copy): the
//! conversions refuse what a grid file would, name the field, and quote at
//! most a short prefix of a huge value.

use std::path::Path;

use sweep_core::adaptive::{Effect, Next, SeedPlan, Stop, Stratum};
use sweep_core::{Cell, CurveSums, GradFlowSums, GridSpec, Level, SweepResults, TrialResult, TrialSpec, TrialState};
use sweep_proto::convert::{trial_state, ConvertError};
use sweep_proto::v1 as pb;
use sweep_proto::v1::level::Kind;

const GRID: &str = r#"
name = "wire"
seeds = 2
[grid]
depth = [8, 16]
skip = [true, false]
init = "default"
batchnorm = true
[data]
path = "/data/cifar"
"#;

fn grid() -> GridSpec {
    GridSpec::parse(GRID, Path::new("/g.toml")).unwrap()
}

fn trial() -> pb::TrialSpec {
    (&grid().expand()[0]).into()
}

fn wire(kind: Kind) -> pb::Level {
    pb::Level { kind: Some(kind) }
}

/// The levels of factor `name` in a wire grid spec.
fn wire_levels<'a>(g: &'a mut pb::GridSpec, name: &str) -> &'a mut Vec<pb::Level> {
    &mut g.factors.iter_mut().find(|f| f.name == name).unwrap_or_else(|| panic!("no factor {name}")).levels
}

#[track_caller]
fn refused_trial(t: pb::TrialSpec) -> ConvertError {
    TrialSpec::try_from(t).expect_err("accepted an invalid trial spec")
}

#[test]
fn trial_specs_round_trip() {
    let domain = grid().expand().remove(0);
    assert_eq!(TrialSpec::try_from(pb::TrialSpec::from(&domain)).unwrap(), domain);
}

#[test]
fn trial_depth_uses_the_core_rule_including_the_cap() {
    for (depth, fragment) in [
        (0, "not a positive multiple of 8"),
        (12, "not a positive multiple of 8"),
        (1032, "deeper than the limit of 1024"),
    ] {
        let mut t = trial();
        t.cell.insert("depth".into(), wire(Kind::Int(depth)));
        let e = refused_trial(t);
        assert_eq!(e.field, "spec.depth");
        assert!(e.message.contains(fragment), "{depth}: {e}");
        // The same words as a grid file's error for that depth.
        let mut domain = grid().expand().remove(0);
        domain.cell.insert("depth", Level::Int(depth));
        assert!(domain.validate().unwrap_err().to_string().ends_with(&e.message));
    }
    let mut t = trial();
    t.cell.insert("depth".into(), wire(Kind::Int(1024)));
    assert_eq!(TrialSpec::try_from(t).unwrap().cell.get("depth"), Some(&Level::Int(1024)));
}

#[test]
fn trial_training_and_data_settings_are_checked() {
    let mut t = trial();
    t.train.insert("lr".into(), wire(Kind::Float(f64::NAN)));
    assert_eq!(refused_trial(t).field, "spec.train.lr");
    let mut t = trial();
    t.data.as_mut().unwrap().path = format!("/{}", "p".repeat(1 << 20));
    let e = refused_trial(t);
    assert_eq!(e.field, "spec.data.path");
    assert!(e.message.contains("1048577 bytes long; the limit is 4096"), "{e}");
    assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
    let mut t = trial();
    t.cell.insert("init".into(), wire(Kind::Text("i".repeat(1 << 20))));
    let e = refused_trial(t);
    assert_eq!(e.field, "spec.init");
    assert!(e.message.contains("… (1048576 bytes)") && e.to_string().len() < 300, "{e}");
}

#[test]
fn grid_specs_are_refused_by_field_with_short_messages() {
    let mut g: pb::GridSpec = (&grid()).into();
    assert_eq!(GridSpec::try_from(g.clone()).unwrap(), grid());
    g.name = "..".into();
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!(e.field, "name");
    assert!(e.message.contains("begins with"), "{e}");

    let mut g: pb::GridSpec = (&grid()).into();
    *wire_levels(&mut g, "depth") = vec![wire(Kind::Int(8)), wire(Kind::Int(2048))];
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!(e.field, "grid.depth");

    let mut g: pb::GridSpec = (&grid()).into();
    g.data.as_mut().unwrap().dataset = "d".repeat(1 << 20);
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!(e.field, "data.dataset");
    assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());

    let mut g: pb::GridSpec = (&grid()).into();
    *wire_levels(&mut g, "init") = vec![wire(Kind::Text("z".repeat(1 << 20)))];
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!(e.field, "grid.init");
    assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

// ---- issue 9: factors as typed level maps, the trial state as an enum ------

/// A grid with [train] keys as factors: a string (`optimizer`) and floats
/// (`lr`; `weight_decay` given as an integer and a float).
const FACTORS: &str = r#"
name = "factors"
seeds = [0, 1]
[grid]
depth = [8, 32]
skip = [true, false]
init = "default"
batchnorm = true
optimizer = ["sgd", "adam"]
lr = [1e-3, 1e-2]
weight_decay = [0, 5e-4]
[train]
epochs = 2
momentum = 0.5
[data]
path = "/data/cifar"
test_subset = 100
"#;

fn factors_grid() -> GridSpec {
    GridSpec::parse(FACTORS, Path::new("/g.toml")).unwrap()
}

/// Through the wire's bytes, as a peer would receive it.
fn reencode<M: prost::Message + Default>(m: &M) -> M {
    M::decode(m.encode_to_vec().as_slice()).unwrap()
}

#[test]
fn grid_specs_with_float_and_string_factors_round_trip() {
    let domain = factors_grid();
    let g = pb::GridSpec::from(&domain);
    let names: Vec<&str> = g.factors.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["depth", "skip", "init", "batchnorm", "optimizer", "lr", "weight_decay"]);
    let levels = |name: &str| g.factors.iter().find(|f| f.name == name).unwrap().levels.clone();
    assert_eq!(levels("depth"), [wire(Kind::Int(8)), wire(Kind::Int(32))]);
    assert_eq!(levels("skip"), [wire(Kind::Flag(true)), wire(Kind::Flag(false))]);
    assert_eq!(levels("optimizer"), [wire(Kind::Text("sgd".into())), wire(Kind::Text("adam".into()))]);
    assert_eq!(levels("lr"), [wire(Kind::Float(1e-3)), wire(Kind::Float(1e-2))]);
    assert_eq!(levels("weight_decay"), [wire(Kind::Float(0.0)), wire(Kind::Float(5e-4))]);
    let mut train: Vec<&str> = g.train.keys().map(String::as_str).collect();
    train.sort_unstable();
    assert_eq!(train, ["augment", "batch_size", "epochs", "log_every", "momentum"]);
    assert_eq!(g.train["momentum"], wire(Kind::Float(0.5)));
    assert_eq!(g.train["epochs"], wire(Kind::Int(2)));

    let back = GridSpec::try_from(reencode(&g)).unwrap();
    assert_eq!(back, domain);
    let ids = |s: &GridSpec| s.expand().iter().map(|t| t.id(&s.name)).collect::<Vec<_>>();
    assert_eq!(ids(&back), ids(&domain));
}

#[test]
fn trial_specs_with_factor_settings_round_trip() {
    let domain = factors_grid();
    let trials = domain.expand();
    assert_eq!(trials.len(), 2 * 2 * 2 * 2 * 2 * 2);
    for t in &trials {
        let w = pb::TrialSpec::from(t);
        assert_eq!(w.cell.len(), 7);
        assert!(!w.train.contains_key("lr") && w.train.contains_key("momentum"));
        let back = TrialSpec::try_from(reencode(&w)).unwrap();
        assert_eq!(&back, t);
        assert_eq!(back.id(&domain.name), t.id(&domain.name));
        assert_eq!(back.cell.get("weight_decay").unwrap().kind(), sweep_core::LevelKind::Float);
    }
}

#[test]
fn wire_levels_must_be_of_the_keys_kind() {
    // The wire carries typed levels: an integer for a float factor is not
    // converted (the grid file parser does that), it is refused.
    let mut g: pb::GridSpec = (&factors_grid()).into();
    *wire_levels(&mut g, "lr") = vec![wire(Kind::Int(1))];
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!((e.field.as_str(), e.message.as_str()), ("grid.lr", "expected a number, found the integer 1"));

    let mut g: pb::GridSpec = (&factors_grid()).into();
    *wire_levels(&mut g, "skip") = vec![wire(Kind::Text("true".into()))];
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!(e.field, "grid.skip");
    assert!(e.message.contains("expected a boolean"), "{e}");

    let mut t = pb::TrialSpec::from(&factors_grid().expand()[0]);
    t.cell.insert("optimizer".into(), wire(Kind::Text("adamw".into())));
    let e = refused_trial(t);
    assert_eq!(e.field, "spec.train.optimizer");
    assert!(e.message.contains("unknown optimizer \"adamw\""), "{e}");

    let mut t = pb::TrialSpec::from(&factors_grid().expand()[0]);
    t.train.insert("epochs".into(), wire(Kind::Float(2.0)));
    let e = refused_trial(t);
    assert_eq!(e.field, "spec.train.epochs");
    assert!(e.message.contains("expected an integer, found the float 2.0"), "{e}");
}

#[test]
fn the_schema_is_enforced_on_wire_specs() {
    let mut g: pb::GridSpec = (&factors_grid()).into();
    g.train.insert("lr".into(), wire(Kind::Float(0.1)));
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!(e.field, "train.lr");
    assert!(e.message.contains("both a factor and a fixed setting"), "{e}");

    let mut g: pb::GridSpec = (&factors_grid()).into();
    g.factors.retain(|f| f.name != "batchnorm");
    assert_eq!(GridSpec::try_from(g).unwrap_err().field, "grid.batchnorm");

    let mut g: pb::GridSpec = (&factors_grid()).into();
    g.train.remove("momentum");
    assert_eq!(GridSpec::try_from(g).unwrap_err().field, "train.momentum");

    // An unknown factor with a huge name: named, briefly.
    let mut g: pb::GridSpec = (&factors_grid()).into();
    g.factors.push(pb::Factor { name: "k".repeat(1 << 20), levels: vec![wire(Kind::Int(1))] });
    let e = GridSpec::try_from(g).unwrap_err();
    assert!(e.field.starts_with("grid.kkkk") && e.field.ends_with("… (1048576 bytes)"), "{}", e.field);
    assert!(e.message.contains("unknown factor"), "{e}");
    assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());

    let mut t = pb::TrialSpec::from(&factors_grid().expand()[0]);
    t.cell.remove("skip");
    let e = refused_trial(t);
    assert_eq!(e.field, "spec.skip");
    assert!(e.message.contains("missing"), "{e}");

    let mut t = pb::TrialSpec::from(&factors_grid().expand()[0]);
    t.data = None;
    assert_eq!(refused_trial(t).field, "spec.data");
    let mut g: pb::GridSpec = (&factors_grid()).into();
    g.run = None;
    assert_eq!(GridSpec::try_from(g).unwrap_err().field, "run");
}

#[test]
fn a_level_without_a_kind_is_refused() {
    let none = pb::Level { kind: None };
    let mut g: pb::GridSpec = (&factors_grid()).into();
    wire_levels(&mut g, "lr").push(none.clone());
    let e = GridSpec::try_from(g).unwrap_err();
    assert_eq!((e.field.as_str(), e.message.as_str()), ("grid.lr", "a level without a value"));

    let mut g: pb::GridSpec = (&factors_grid()).into();
    g.train.insert("momentum".into(), none.clone());
    assert_eq!(GridSpec::try_from(g).unwrap_err().field, "train.momentum");

    let mut t = trial();
    t.cell.insert("depth".into(), none.clone());
    let e = refused_trial(t);
    assert_eq!((e.field.as_str(), e.message.as_str()), ("spec.cell.depth", "a level without a value"));

    let mut t = trial();
    t.train.insert("epochs".into(), none.clone());
    assert_eq!(refused_trial(t).field, "spec.train.epochs");

    let mut r = pb::AnalyzeResponse::from(&results());
    r.contexts[0].cell.insert("depth".into(), none.clone());
    assert_eq!(SweepResults::try_from(r).unwrap_err().field, "contexts.cell.depth");
    let mut r = pb::AnalyzeResponse::from(&results());
    r.curves[0].cell.insert("skip".into(), none.clone());
    assert_eq!(SweepResults::try_from(r).unwrap_err().field, "curves.cell.skip");
    let mut r = pb::AnalyzeResponse::from(&results());
    r.grad_flow[0].cell.insert("lr".into(), none);
    assert_eq!(SweepResults::try_from(r).unwrap_err().field, "grad_flow.cell.lr");
}

#[test]
fn a_non_finite_float_is_refused() {
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut g: pb::GridSpec = (&factors_grid()).into();
        *wire_levels(&mut g, "lr") = vec![wire(Kind::Float(1e-3)), wire(Kind::Float(x))];
        let e = GridSpec::try_from(g).unwrap_err();
        assert_eq!(e.field, "grid.lr");
        assert_eq!(e.message, format!("{x} is not a finite number"));

        let mut g: pb::GridSpec = (&factors_grid()).into();
        g.train.insert("momentum".into(), wire(Kind::Float(x)));
        assert_eq!(GridSpec::try_from(g).unwrap_err().field, "train.momentum");

        let mut t = pb::TrialSpec::from(&factors_grid().expand()[0]);
        t.cell.insert("lr".into(), wire(Kind::Float(x)));
        let e = refused_trial(t);
        assert_eq!(e.field, "spec.cell.lr");
        assert!(e.message.contains("not a finite number"), "{e}");

        let mut r = pb::AnalyzeResponse::from(&results());
        r.contexts[1].cell.insert("lr".into(), wire(Kind::Float(x)));
        assert_eq!(SweepResults::try_from(r).unwrap_err().field, "contexts.cell.lr");
    }
}

#[test]
fn trial_states_cross_the_wire_as_an_enum() {
    for s in TrialState::ALL {
        let w = pb::TrialState::from(s);
        assert_eq!(w.as_str_name(), format!("TRIAL_STATE_{}", s.as_str().to_uppercase()));
        assert_eq!(trial_state("state", w.into()).unwrap(), s);
    }
    for raw in [0, 7, 99, -1] {
        let e = trial_state("trials.state", raw).unwrap_err();
        assert_eq!((e.field.as_str(), e.message), ("trials.state", format!("unknown trial state {raw}")));
    }
    let mut r = pb::AnalyzeResponse::from(&results());
    r.trials[0].state = pb::TrialState::Unspecified.into();
    let e = SweepResults::try_from(r).unwrap_err();
    assert_eq!(e.field, "trials.state");
}

fn cell(levels: &[(&str, Level)]) -> Cell {
    levels.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn results() -> SweepResults {
    let a = cell(&[("depth", Level::Int(32)), ("skip", Level::Bool(true)), ("lr", Level::Float(1e-3))]);
    // The same numbers with other kinds: a different cell.
    let b = cell(&[("depth", Level::Float(32.0)), ("skip", Level::Str("on".into())), ("lr", Level::Float(1.0))]);
    SweepResults {
        sweep_id: "factors".into(),
        trials: vec![
            TrialResult {
                trial_id: "0123456789abcdef0123456789abcdef".into(),
                cell: a.clone().into(),
                cell_key: "k1".into(),
                seed: 0,
                state: TrialState::Succeeded,
                final_train_loss: Some(0.5),
                final_test_loss: Some(0.75),
                final_test_accuracy: Some(0.625),
                best_test_accuracy: Some(0.7),
                wall_seconds: Some(12.5),
                device: "cuda:0".into(),
                threads: 4,
                diverged_step: None,
                train_images_used: Some(1000),
                settings: std::sync::Arc::new(
                    [("lr".to_owned(), Level::Float(0.1)), ("precision".to_owned(), Level::Str("bf16".into()))]
                        .into_iter()
                        .collect(),
                ),
                provenance: std::sync::Arc::new(sweep_core::Provenance {
                    code_version: "0.1.0 (g1a2b3c)".into(),
                    libtorch: "2.11.0+cu130".into(),
                    device_name: "NVIDIA H200".into(),
                    dataset_sha256: "ab".repeat(32),
                }),
                trainer: "exec".into(),
                finals: [("f1".to_owned(), 0.75)].into_iter().collect(),
            },
            TrialResult {
                trial_id: String::new(),
                cell: b.clone().into(),
                cell_key: "k2".into(),
                seed: u64::MAX,
                state: TrialState::Diverged,
                final_train_loss: None,
                final_test_loss: None,
                final_test_accuracy: None,
                best_test_accuracy: None,
                wall_seconds: None,
                device: String::new(),
                threads: 0,
                diverged_step: Some(-1),
                train_images_used: None,
                settings: Default::default(),
                provenance: Default::default(),
                trainer: "bmenet".into(),
                finals: Default::default(),
            },
        ],
        curves: vec![
            CurveSums { cell: a.clone(), metric: "test/accuracy".into(), step: 100, n: 3, sum: 1.5, sum_sq: 0.8 },
            CurveSums { cell: b, metric: "train/loss".into(), step: 0, n: 1, sum: -0.25, sum_sq: 0.0625 },
        ],
        grad_flow: vec![GradFlowSums {
            cell: a,
            block: "block01".into(),
            last: true,
            n: 2,
            sum: 3.0,
            sum_sq: 5.0,
            mean_step: 1500.5,
        }],
        adaptive: Some(SeedPlan { target_halfwidth: 0.02, max_seeds: 10, contrast: "skip".into() }),
        strata: vec![Stratum {
            at: cell(&[("depth", Level::Int(32))]),
            seeds: [0, 1, 2].into_iter().collect(),
            baseline: Level::Bool(false),
            effects: vec![Effect { level: Level::Bool(true), pairs: 3, estimate: Some(0.3), ci95: Some((0.2, 0.4)) }],
            next: Next::Stopped(Stop::Resolved),
        }],
    }
}

#[test]
fn sweep_results_round_trip_through_analyze_responses() {
    let domain = results();
    let w = pb::AnalyzeResponse::from(&domain);
    assert_eq!(w.trials[0].state, pb::TrialState::Succeeded as i32);
    assert_eq!(w.trials[1].state, pb::TrialState::Diverged as i32);
    let context = |i: usize| &w.contexts[w.trials[i].context as usize];
    assert_eq!(context(1).cell["depth"], wire(Kind::Float(32.0)));
    assert_eq!(context(0).cell["depth"], wire(Kind::Int(32)));
    let back = SweepResults::try_from(reencode(&w)).unwrap();
    assert_eq!(back, domain);
    assert_eq!(back.trials[1].cell.get("depth"), Some(&Level::Float(32.0)));
    assert_eq!(SweepResults::try_from(pb::AnalyzeResponse::default()).unwrap(), SweepResults::default());
}

#[test]
fn trials_that_share_a_context_cross_the_wire_once_and_share_it_after() {
    let mut domain = results();
    let mut twin = domain.trials[0].clone();
    twin.seed = 1;
    twin.trial_id = "fedcba9876543210fedcba9876543210".into();
    domain.trials.push(twin);
    let w = pb::AnalyzeResponse::from(&domain);
    assert_eq!(w.contexts.len(), 2, "two trials share one context");
    assert_eq!((w.trials[0].context, w.trials[2].context), (0, 0));
    let back = SweepResults::try_from(reencode(&w)).unwrap();
    assert_eq!(back, domain);
    assert!(std::sync::Arc::ptr_eq(&back.trials[0].cell, &back.trials[2].cell), "one cell, shared");
    assert!(std::sync::Arc::ptr_eq(&back.trials[0].settings, &back.trials[2].settings));

    let mut w = pb::AnalyzeResponse::from(&domain);
    w.contexts.clear();
    let e = SweepResults::try_from(w).unwrap_err();
    assert_eq!(e.field, "contexts");
    assert!(e.message.contains("the coordinator is older than this client"), "{e}");

    let mut w = pb::AnalyzeResponse::from(&domain);
    w.trials[1].context = 7;
    let e = SweepResults::try_from(w).unwrap_err();
    assert_eq!((e.field.as_str(), e.message.as_str()), ("trials.context", "7 names no context (the answer has 2)"));
}

#[test]
fn a_seed_plan_crosses_the_wire_with_its_grid_and_is_checked_there() {
    let text = format!("{GRID}[run]\ntarget_halfwidth = 0.02\nmax_seeds = 6\n");
    let g = GridSpec::parse(&text, Path::new("/g.toml")).unwrap();
    let plan = g.run.adaptive.clone().expect("a plan");
    assert_eq!(plan, SeedPlan { target_halfwidth: 0.02, max_seeds: 6, contrast: "skip".into() });
    let w = pb::GridSpec::from(&g);
    assert_eq!(GridSpec::try_from(reencode(&w)).unwrap(), g);
    for (change, field) in [
        (&(|p: &mut pb::SeedPlan| p.target_halfwidth = f64::NAN) as &dyn Fn(&mut pb::SeedPlan), "run.target_halfwidth"),
        (&|p: &mut pb::SeedPlan| p.max_seeds = 1, "run.max_seeds"),
        (&|p: &mut pb::SeedPlan| p.max_seeds = 100_000, "run.max_seeds"),
        (&|p: &mut pb::SeedPlan| p.contrast = "init".into(), "run.contrast"),
        (&|p: &mut pb::SeedPlan| p.contrast = "nope".into(), "run.contrast"),
    ] {
        let mut bad = w.clone();
        change(bad.run.as_mut().unwrap().adaptive.as_mut().unwrap());
        let e = GridSpec::try_from(bad).expect_err("accepted a bad plan");
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn strata_round_trip_and_a_due_seed_is_recomputed_from_the_seeds() {
    let at = cell(&[("depth", Level::Int(32)), ("init", Level::Str("default".into()))]);
    let effect = Effect { level: Level::Bool(true), pairs: 3, estimate: Some(0.25), ci95: Some((0.1, 0.4)) };
    for next in [
        Next::Waiting,
        Next::SeedDue(2),
        Next::Stopped(Stop::Resolved),
        Next::Stopped(Stop::BelowTarget),
        Next::Stopped(Stop::MaxSeeds),
        Next::Stopped(Stop::NoPairs),
    ] {
        let s = Stratum {
            at: at.clone(),
            seeds: [0, 1, 3].into_iter().collect(),
            baseline: Level::Bool(false),
            effects: vec![effect.clone(), Effect { level: Level::Bool(true), pairs: 0, estimate: None, ci95: None }],
            next,
        };
        let back = Stratum::try_from(reencode(&pb::Stratum::from(&s))).unwrap();
        assert_eq!(back, s);
    }
    let e = Stratum::try_from(pb::Stratum { state: 99, ..Default::default() }).unwrap_err();
    assert_eq!(e.field, "stratum.state");
}
