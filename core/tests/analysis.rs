//! `[analysis]` in grid.toml (issue 11): analyses of a trial's trained
//! weights are written in their own table, stored with the fixed settings,
//! never factors; off (the default) they leave every trial ID as it was.

use std::path::Path;

use sweep_core::bmenet;
use sweep_core::{GridError, GridSpec, Level};

const EXAMPLE: &str = include_str!("../../examples/skip-ablation.toml");

fn parse(text: &str) -> Result<GridSpec, GridError> {
    GridSpec::parse(text, Path::new("/g/grid.toml"))
}

fn with_analysis(lines: &str) -> String {
    EXAMPLE.replace("[data]\n", &format!("[analysis]\n{lines}\n\n[data]\n"))
}

fn ids(spec: &GridSpec) -> Vec<String> {
    spec.expand().iter().map(|t| t.id(&spec.name).0).collect()
}

fn error(text: &str) -> (String, usize, String) {
    match parse(text) {
        Err(GridError::Invalid { line, key, message, .. }) => (key, line, message),
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn lesion_is_an_analysis_stored_with_the_settings() {
    let plain = parse(EXAMPLE).unwrap();
    let off = parse(&with_analysis("lesion = false")).unwrap();
    assert_eq!(ids(&off), ids(&plain), "an analysis left off is the same trials");
    let on = parse(&with_analysis("lesion = true")).unwrap();
    on.validate().unwrap();
    assert_eq!(on.train.get("lesion"), Some(&Level::Bool(true)));
    let t = &on.expand()[0];
    t.validate().unwrap();
    assert!(bmenet::resolve(t).unwrap().analyses.lesion);
    assert!(!bmenet::resolve(&plain.expand()[0]).unwrap().analyses.lesion);
    let both = parse(&with_analysis("lesion = true\nvariance = true")).unwrap();
    let r = bmenet::resolve(&both.expand()[0]).unwrap();
    assert!(r.analyses.lesion && r.analyses.variance);
    assert_eq!(ids(&parse(&with_analysis("variance = false")).unwrap()), ids(&plain));
    let plain_ids = ids(&plain);
    assert!(ids(&on).iter().all(|id| !plain_ids.contains(id)), "trials with a lesion study are other trials");
}

#[test]
fn an_analysis_is_never_a_factor_and_its_errors_say_where_it_goes() {
    let (key, line, message) =
        error(&EXAMPLE.replace("batchnorm = [true, false]\n", "batchnorm = [true, false]\nlesion = [true, false]\n"));
    assert_eq!((key.as_str(), line), ("grid.lesion", 9));
    assert!(message.contains("[analysis]"), "{message}");
    let (key, _, message) = error(&with_analysis("lesion = 1"));
    assert_eq!(key, "analysis.lesion");
    assert!(message.contains("expected a boolean"), "{message}");
    let (key, _, message) = error(&with_analysis("lesoin = true"));
    assert_eq!(key, "analysis.lesoin");
    assert!(message.contains("lesion"), "a suggestion: {message}");
    // A landscape_* key without `landscape = true` would be ignored: refused.
    let (key, _, message) = error(&with_analysis("landscape_resolution = 5"));
    assert_eq!(key, "analysis.landscape_resolution");
    assert!(message.contains("no effect without `landscape = true`"), "{message}");
    let on = parse(&with_analysis("landscape = true\nlandscape_resolution = 5")).unwrap();
    assert_eq!(bmenet::resolve(&on.expand()[0]).unwrap().analyses.landscape.map(|l| l.resolution), Some(5));
    let mut t = parse(EXAMPLE).unwrap().expand().remove(0);
    t.train.insert("landscape_dims".into(), Level::Int(1));
    let e = t.validate().unwrap_err().to_string();
    assert!(e.contains("analysis.landscape_dims") && e.contains("landscape = true"), "{e}");
    let (key, _, message) = error(&EXAMPLE.replace("augment = false\n", "augment = false\nlesion = true\n"));
    assert_eq!(key, "train.lesion");
    assert!(message.contains("belongs in [analysis]"), "{message}");

    // Over the wire: not a factor, not a cell level, not the default.
    let mut spec = parse(EXAMPLE).unwrap();
    spec.factors.push(sweep_core::Factor { name: "lesion".into(), levels: vec![Level::Bool(true)] });
    let e = spec.validate().unwrap_err().to_string();
    assert!(e.contains("grid.lesion") && e.contains("not a factor"), "{e}");
    let mut t = parse(EXAMPLE).unwrap().expand().remove(0);
    t.cell.0.insert("lesion".into(), Level::Bool(true));
    let e = t.validate().unwrap_err().to_string();
    assert!(e.contains("analysis.lesion") && e.contains("not a factor"), "{e}");
    let mut t = parse(EXAMPLE).unwrap().expand().remove(0);
    t.train.insert("lesion".into(), Level::Bool(false));
    let e = t.validate().unwrap_err().to_string();
    assert!(e.contains("analysis.lesion") && e.contains("is the default"), "{e}");
}
