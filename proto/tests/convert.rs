//! Wire specs are checked by sweep-core's rules (their one copy): the
//! conversions refuse what a grid file would, name the field, and quote at
//! most a short prefix of a huge value.

use std::path::Path;

use sweep_core::{GridSpec, Level, TrialSpec};
use sweep_proto::convert::ConvertError;
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
