//! Adaptive seeds end to end (issue 11, acceptance 3): `sweep run` with
//! real worker processes (the simulated trainer as the test double) over
//! real gRPC, then `sweep status` and `sweep report` against the stored
//! sweep.
//!
//! In the simulated trainer, skip changes how fast a network learns only
//! when it is deep (its rate is 8/depth without skips), so at depth 32 the
//! skip effect is about +33 points on every seed (clear at the 3 planned
//! seeds), while at depth 8 both sides learn alike and differ by noise
//! (the interval keeps containing 0, and a target of ±0.1 points is never
//! met): that stratum gets a seed per round up to `max_seeds`.

mod common;

use std::time::Duration;

use common::{finish, sweep, sweep_run, Server};

const GRID: &str = r#"
name = "adaptive"
seeds = 3
[grid]
depth = [8, 32]
skip = [true, false]
init = "default"
batchnorm = false
[train]
epochs = 1
batch_size = 4
log_every = 2
[data]
path = "data"
train_subset = 8
[run]
target_halfwidth = 0.001
max_seeds = 6
"#;

#[test]
fn an_open_contrast_gets_seeds_until_max_seeds_and_a_clear_one_stops_at_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("adaptive.toml");
    std::fs::write(&grid, GRID).unwrap();
    let db = dir.path().join("adaptive.db");
    let mut run = sweep_run(&grid, &dir.path().join("state"), &db);
    run.args(["--workers", "2", "--simulate-step-ms", "1", "--format", "json"]);
    let out = finish(run.spawn().unwrap(), Duration::from_secs(120), "sweep run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    // Seeds per cell: 3 planned at depth 32 (resolved), 6 at depth 8.
    let mut seeds: Vec<(u64, bool, u64)> = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["depth"].as_u64().unwrap(), c["skip"].as_bool().unwrap(), c["seeds_total"].as_u64().unwrap()))
        .collect();
    seeds.sort();
    assert_eq!(seeds, vec![(8, false, 6), (8, true, 6), (32, false, 3), (32, true, 3)], "{stdout}");

    // The report judges the strata as the coordinator did, and says why
    // each stopped.
    let adaptive = &report["adaptive"];
    assert_eq!(adaptive["plan"]["contrast"], "skip");
    let state_at = |depth: u64| {
        let s = adaptive["strata"].as_array().unwrap().iter().find(|s| s["at"]["depth"] == depth).unwrap();
        (s["state"].as_str().unwrap().to_owned(), s["seeds"].as_array().unwrap().len())
    };
    assert_eq!(state_at(32), ("resolved".to_owned(), 3));
    assert_eq!(state_at(8), ("max_seeds".to_owned(), 6));
    let s32 = adaptive["strata"].as_array().unwrap().iter().find(|s| s["at"]["depth"] == 32).unwrap();
    let lo = s32["effects"][0]["ci95_lo"].as_f64().unwrap();
    assert!(lo > 0.2, "depth 32: skip on should be far ahead: {s32}");
    // The added seeds are the next numbers, shared by both cells.
    let s8 = adaptive["strata"].as_array().unwrap().iter().find(|s| s["at"]["depth"] == 8).unwrap();
    assert_eq!(s8["seeds"], serde_json::json!([0, 1, 2, 3, 4, 5]));
    assert_eq!(s8["effects"][0]["pairs"], 6);
    let notes = report["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n.as_str().unwrap().contains("Seeds were added adaptively")
            && n.as_str().unwrap().contains("docs/adaptive-seeds.md")),
        "{notes:?}"
    );

    // `sweep status` over the stored sweep says the same.
    let server = Server::start(&db);
    let status = sweep().args(["status", "adaptive", "--coordinator", &server.url]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("finished"), "{text}");
    assert!(text.contains("Adaptive seeds: the skip effect per stratum"), "{text}");
    let row = |depth: &str| text.lines().find(|l| l.contains(&format!("depth={depth} "))).unwrap_or_default();
    assert!(row("32").contains("resolved") && row("32").contains("┆ 3 "), "{text}");
    assert!(row("8").contains("max_seeds reached") && row("8").contains("┆ 6 "), "{text}");

    // The markdown report has the table too.
    let md =
        sweep().args(["report", "adaptive", "--format", "markdown", "--coordinator", &server.url]).output().unwrap();
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("## Adaptive seeds: the skip effect per stratum"), "{md}");
}
