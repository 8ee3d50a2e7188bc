//! Factors as data, end to end (issue 9, acceptance 1): a grid with the
//! optimizer and the learning rate as factors next to depth and skip runs
//! through `sweep run` (real coordinator, real `sweep-worker` training
//! BMEnet with libtorch on tiny synthetic data), and `sweep report` shows
//! the optimizer effect, the lr effect, the skip effect at each optimizer,
//! and draws the metric against lr with `--x lr` (on a log axis: the
//! levels span two decades).

mod common;

use std::time::Duration;

use common::{run_ok, sweep, sweep_run, Server};

#[test]
fn optimizer_and_lr_factors_run_end_to_end_and_report_their_effects() {
    let dir = tempfile::tempdir().unwrap();
    let grid = common::grid_over_synth_data(
        dir.path(),
        "opt",
        (64, 32),
        r#"seeds = [0, 1]
[grid]
depth = 8
skip = [true, false]
init = "default"
batchnorm = true
optimizer = ["sgd", "adam"]
lr = [0.001, 0.1]
[train]
epochs = 1
batch_size = 16
log_every = 1
"#,
    );
    // The dry run lists the cells with the new factors.
    let dry = run_ok(sweep().arg("submit").arg(&grid).arg("--dry-run"));
    assert!(dry.contains("optimizer=adam") && dry.contains("lr=0.1"), "{dry}");
    assert!(dry.contains("8 cells x 2 seeds [0, 1] = 16 trials"), "{dry}");

    let db = dir.path().join("opt.db");
    let child = sweep_run(&grid, &dir.path().join("state"), &db).args(["--workers", "2"]).spawn().unwrap();
    let out = common::finish(child, Duration::from_secs(600), "sweep run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sweep run failed\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let server = Server::start(&db);
    let json = run_ok(sweep().args(["report", "opt", "--format", "json", "--coordinator", &server.url]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 8, "{json}");
    assert!(cells.iter().all(|c| c["succeeded"] == 2), "every trial trains: {json}");
    assert!(cells.iter().any(|c| c["optimizer"] == "adam" && c["lr"] == 0.1), "factor columns: {json}");
    let main = v["main_effects"].as_array().unwrap();
    let effect_of = |f: &str| main.iter().find(|m| m["factor"] == f);
    let opt = effect_of("optimizer").unwrap_or_else(|| panic!("no optimizer effect: {json}"));
    assert_eq!((opt["level"].as_str(), opt["baseline"].as_str()), (Some("adam"), Some("sgd")));
    let lr = effect_of("lr").unwrap_or_else(|| panic!("no lr effect: {json}"));
    assert_eq!((lr["level"].as_str(), lr["baseline"].as_str()), (Some("0.1"), Some("0.001")));
    assert!(effect_of("skip").is_some(), "{json}");
    for m in [opt, lr] {
        assert!(m["effect"]["estimate"].as_f64().unwrap().is_finite(), "{m}");
    }
    // The skip effect at each optimizer (and each lr): the interactions.
    let inter = v["interactions"].as_array().unwrap();
    for level in ["sgd", "adam"] {
        assert!(
            inter.iter().any(|c| c["factor"] == "skip" && c["at"]["optimizer"] == level),
            "no skip effect at optimizer={level}: {json}"
        );
    }

    let md = run_ok(sweep().args(["report", "opt", "--format", "markdown", "--coordinator", &server.url]));
    assert!(md.contains("| depth | skip | init | batchnorm | optimizer | lr |"), "{md}");
    assert!(md.contains("at each level of the other factors") && md.contains("optimizer=adam"), "{md}");

    let figs = dir.path().join("figs");
    let report =
        run_ok(sweep().args(["report", "opt", "--x", "lr", "--out"]).arg(&figs).args(["--coordinator", &server.url]));
    assert!(report.contains("optimizer"), "{report}");
    let svg = std::fs::read_to_string(figs.join("accuracy-vs-lr.svg")).expect("the metric-vs-lr picture");
    assert!(svg.contains("lr (log scale)") && svg.contains("skip on") && svg.contains("skip off"), "picture text");
    assert!(std::fs::metadata(figs.join("accuracy-vs-lr.png")).unwrap().len() > 1000);
    // A non-numeric factor cannot be an axis; an unknown one is named.
    let bad = sweep().args(["report", "opt", "--x", "optimizer", "--coordinator", &server.url]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ordered (numeric) factor"), "{bad:?}");
    let bad = sweep().args(["report", "opt", "--baseline", "momentum=0.5", "--coordinator", &server.url]).output();
    let bad = bad.unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown factor \"momentum\""), "{bad:?}");
}
