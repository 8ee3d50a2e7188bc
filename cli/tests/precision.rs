//! `[train] precision = "bf16"` end to end (issue 10): a grid that asks for
//! it runs through `sweep run` (real coordinator, real `sweep-worker`
//! training BMEnet with libtorch at bfloat16 on tiny synthetic data), every
//! trial succeeds, and `sweep report` says what the trials trained with in
//! its provenance: the text's "Trained with:" note and each JSON trial row's
//! settings.

mod common;

use std::time::Duration;

use common::{run_ok, sweep, sweep_run, Server};

#[test]
fn a_bf16_sweep_trains_and_its_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let grid = common::grid_over_synth_data(
        dir.path(),
        "bf16",
        (64, 32),
        r#"seeds = [0]
[grid]
depth = 8
skip = [true, false]
init = "default"
batchnorm = true
[train]
epochs = 1
batch_size = 16
log_every = 1
precision = "bf16"
"#,
    );
    let db = dir.path().join("bf16.db");
    let child = sweep_run(&grid, &dir.path().join("state"), &db).spawn().unwrap();
    let out = common::finish(child, Duration::from_secs(300), "sweep run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sweep run failed\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let server = Server::start(&db);
    let json = run_ok(sweep().args(["report", "bf16", "--format", "json", "--coordinator", &server.url]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "{json}");
    for t in trials {
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["settings"]["precision"], "bf16", "{t}");
        assert_eq!(t["settings"]["epochs"], 1, "{t}");
    }
    let text = run_ok(sweep().args(["report", "bf16", "--coordinator", &server.url]));
    assert!(text.contains("Trained with: epochs=1, batch_size=16") && text.contains("precision=bf16."), "{text}");
}
