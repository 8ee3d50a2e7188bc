//! The analyses end to end (issue 11, `[analysis] lesion = true`,
//! `variance = true` and `landscape = true`): a sweep runs through `sweep run` (real coordinator,
//! real `sweep-worker` training BMEnet with libtorch on tiny synthetic
//! data); each trial's analyses are stored with it, and `sweep report`
//! shows their tables, JSON and pictures. The lesion study's intact point
//! must be the trial's final test accuracy (the same evaluation, stored
//! twice by different paths).

mod common;

use std::time::Duration;

use common::{run_ok, sweep, sweep_run, Server};

#[test]
fn the_analyses_run_with_the_trials_and_the_report_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let grid = common::grid_over_synth_data(
        dir.path(),
        "lesion",
        (64, 40),
        r#"seeds = [0, 1]
[grid]
depth = 8
skip = [true, false]
init = "default"
batchnorm = true
[train]
epochs = 1
batch_size = 16
log_every = 2
[analysis]
lesion = true
variance = true
landscape = true
landscape_resolution = 3
landscape_images = 32
"#,
    );
    let db = dir.path().join("lesion.db");
    let child = sweep_run(&grid, &dir.path().join("state"), &db).args(["--workers", "2"]).spawn().unwrap();
    let out = common::finish(child, Duration::from_secs(300), "sweep run");
    assert!(out.status.success(), "sweep run failed\n{}", String::from_utf8_lossy(&out.stderr));

    let server = Server::start(&db);
    let json = run_ok(sweep().args(["report", "lesion", "--format", "json", "--coordinator", &server.url]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let removed = v["lesion"]["removed"].as_array().unwrap();
    // Depth 8 has 4 removable blocks: k = 0..=4 in each of the 2 cells.
    assert_eq!(removed.len(), 2 * 5, "{json}");
    for p in removed {
        assert_eq!(p["n"], 2, "both seeds measured: {p}");
        let mean = p["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{p}");
        assert!(p["ci95_lo"].as_f64().unwrap() <= mean && mean <= p["ci95_hi"].as_f64().unwrap(), "{p}");
    }
    for cell in v["cells"].as_array().unwrap() {
        let intact = removed.iter().find(|p| p["skip"] == cell["skip"] && p["at"] == 0).expect("intact point");
        let final_acc = cell["test_accuracy"]["mean"].as_f64().unwrap();
        assert!((intact["mean"].as_f64().unwrap() - final_acc).abs() < 1e-12, "{intact} vs {cell}");
    }
    let blocks = v["lesion"]["blocks"].as_array().unwrap();
    let positions: std::collections::BTreeSet<i64> = blocks.iter().map(|p| p["at"].as_i64().unwrap()).collect();
    assert_eq!(positions, [1, 3, 5, 7].into_iter().collect(), "the plain blocks of depth 8: {json}");

    let text = run_ok(sweep().args(["report", "lesion", "--coordinator", &server.url]));
    assert!(text.contains("Lesion study: test accuracy % with SkipBlocks removed"), "{text}");
    assert!(text.contains("1 block (each)") && text.contains("4 blocks") && text.contains("s per trial"), "{text}");
    assert!(!text.contains("lesion=true"), "the analysis is not listed as a training setting: {text}");
    assert!(text.contains("Variance propagation (Glorot & Bengio)") && text.contains("init"), "{text}");

    // Variance: 2 cells x (initialisation + 1 epoch) x 18 weight layers.
    let variance = v["variance"].as_array().unwrap();
    assert_eq!(variance.len(), 2 * 2 * 18, "{json}");
    for r in variance {
        assert_eq!(r["n"], 2, "{r}");
        for k in ["forward", "forward_predicted", "backward", "backward_predicted"] {
            assert!(r[k].as_f64().is_some_and(|x| x > 0.0 && x.is_finite()), "{k}: {r}");
        }
    }
    // Landscape: 2 cells x 3 x 3 points, a sharpness per cell.
    let land = &v["landscape"];
    assert_eq!((land["resolution"].as_u64(), land["dims"].as_u64()), (Some(3), Some(2)), "{land}");
    let points = land["points"].as_array().unwrap();
    assert_eq!(points.len(), 2 * 9, "{land}");
    assert!(points.iter().all(|p| p["n"] == 2 && p["loss"].as_f64().is_some_and(|l| l > 0.0)), "{land}");
    assert!(points.iter().any(|p| p["a"] == -1.0 && p["b"] == 1.0), "corners at -span..span: {land}");
    assert_eq!(land["sharpness"].as_array().unwrap().len(), 2, "{land}");
    assert!(text.contains("Loss landscape (Li et al.)") && text.contains("sharpness"), "{text}");
    let layer1_init = variance.iter().find(|r| r["epoch"] == 0 && r["layer"] == 1).unwrap();
    assert_eq!(layer1_init["forward"], layer1_init["forward_predicted"], "Eq. 5 starts from the measured input");

    let figs = dir.path().join("figs");
    run_ok(sweep().args(["report", "lesion", "--out"]).arg(&figs).args(["--coordinator", &server.url]));
    for name in ["lesion-removed", "lesion-blocks", "variance-forward", "variance-backward", "landscape-2d"] {
        let svg = std::fs::read_to_string(figs.join(format!("{name}.svg"))).expect(name);
        assert!(svg.contains("skip on") && svg.contains("skip off"), "{name}: one line per skip level");
        assert!(std::fs::metadata(figs.join(format!("{name}.png"))).unwrap().len() > 1000, "{name}.png");
    }
}
