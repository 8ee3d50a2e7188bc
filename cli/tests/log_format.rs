//! `--log-format json` (issue 12): the coordinator's and a worker's log
//! lines are JSON objects, and a worker's events during a trial carry the
//! worker and trial IDs as span fields. (The start-up banner lines, which
//! scripts read for the address, stay plain text.)

mod common;

use std::time::Duration;

use common::{finish, run_ok, small_grid, sweep};

/// The JSON objects among `lines`; every line that looks like one must be.
fn objects(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_logs_carry_trial_and_worker_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::serve_cmd(&dir.path().join("logs.db"));
    cmd.args(["--log-format", "json"]).env("SWEEP_LOG", "info");
    let server = common::Server::spawn(cmd);
    let url = server.url.clone();

    let grid = dir.path().join("logs.toml");
    // Two seeds per cell, trained as fused pairs: each trial's events must
    // still carry its own ID.
    std::fs::write(&grid, small_grid("logs", 2)).unwrap();
    run_ok(sweep().arg("submit").arg(&grid).args(["--coordinator", &url]));
    let worker = common::sim_worker(&url, "w-json", 1, dir.path())
        .args(["--log-format", "json", "--fuse", "2"])
        .env("SWEEP_LOG", "info")
        .spawn()
        .unwrap();
    let out = finish(worker, Duration::from_secs(60), "sweep-worker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let worker_lines: Vec<String> = String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned).collect();
    let events = objects(&worker_lines);
    assert!(events.len() >= 8, "{worker_lines:#?}");
    assert!(
        worker_lines
            .iter()
            .all(|l| l.starts_with('{') || l.starts_with("sweep-worker on ") || l.starts_with("warning: ")),
        "{worker_lines:#?}"
    );
    let finished: Vec<&serde_json::Value> = events.iter().filter(|e| e["message"] == "trial finished").collect();
    assert_eq!(finished.len(), 8, "{events:#?}");
    let mut trials = std::collections::BTreeSet::new();
    let mut groups = std::collections::BTreeMap::<String, usize>::new();
    for e in finished {
        assert_eq!(e["level"], "INFO");
        let spans = e["spans"].as_array().unwrap_or_else(|| panic!("no spans: {e}"));
        let worker = spans.iter().find(|s| s["name"] == "worker").unwrap_or_else(|| panic!("{e}"));
        assert_eq!(worker["worker"], "w-json");
        let group = spans.iter().find(|s| s["name"] == "group").unwrap_or_else(|| panic!("{e}"));
        assert_eq!(group["sweep"], "logs");
        assert_eq!(group["trials"], 2, "fused pairs: {e}");
        *groups.entry(group["first"].as_str().unwrap().to_owned()).or_default() += 1;
        let trial = spans.iter().rev().find(|s| s["name"] == "trial").unwrap_or_else(|| panic!("{e}"));
        let id = trial["trial"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{e}");
        trials.insert(id);
    }
    assert_eq!(trials.len(), 8, "each trial's end carries its own ID: {trials:?}");
    assert!(groups.values().all(|&n| n == 2) && groups.len() == 4, "{groups:?}");

    // The coordinator logged each lease before the worker finished; give
    // the reader of its stderr a moment.
    std::thread::sleep(Duration::from_millis(200));
    let server_lines = server.log.lock().unwrap().clone();
    let events = objects(&server_lines);
    let leased: Vec<&serde_json::Value> = events.iter().filter(|e| e["message"] == "trial leased").collect();
    assert_eq!(leased.len(), 8, "{server_lines:#?}");
    assert!(leased.iter().all(|e| e["worker"] == "w-json" && e["trial"].as_str().is_some_and(|t| t.len() == 32)));
}
