//! Provenance per result (issue 12, acceptance 5): a real `sweep-worker`
//! training on libtorch sends, with each result, its code version, the
//! libtorch it was built against, the device's model and the dataset's
//! SHA-256; the coordinator stores them with the result, and `sweep report`
//! shows them in each JSON trial row and, once per sweep, in the notes of
//! the text and HTML reports.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_ok, sweep, sweep_run, Server};

#[test]
fn each_result_carries_what_produced_it_and_the_report_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let grid = common::grid_over_synth_data(
        dir.path(),
        "prov",
        (64, 32),
        "seeds = [0]\n[grid]\ndepth = 8\nskip = [true, false]\ninit = \"default\"\nbatchnorm = true\n\
         [train]\nepochs = 1\nbatch_size = 16\nlog_every = 1\n",
    );
    let db = dir.path().join("prov.db");
    let child = sweep_run(&grid, &dir.path().join("state"), &db).spawn().unwrap();
    let out = common::finish(child, Duration::from_secs(300), "sweep run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The dataset's checksum, computed here by another program: the five
    // training files then the test file.
    let data = dir.path().join("data");
    let files = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"];
    let cat = files.iter().map(|f| format!("'{}/{f}.bin'", data.display())).collect::<Vec<_>>().join(" ");
    let sum = Command::new("sh").arg("-c").arg(format!("cat {cat} | sha256sum")).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_owned();
    assert_eq!(sum.len(), 64);

    let server = Server::start(&db);
    let json = run_ok(sweep().args(["report", "prov", "--format", "json", "--coordinator", &server.url]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for t in v["trials"].as_array().unwrap() {
        let p = &t["provenance"];
        let code = p["code_version"].as_str().unwrap_or_default();
        assert!(code.starts_with(env!("CARGO_PKG_VERSION")), "the worker's version: {p}");
        assert!(p["libtorch"].as_str().unwrap_or_default().starts_with("2.11.0"), "the libtorch built against: {p}");
        assert!(!p["device_name"].as_str().unwrap_or_default().is_empty(), "the CPU's model: {p}");
        assert_eq!(p["dataset_sha256"], sum.as_str(), "{p}");
    }
    let text = run_ok(sweep().args(["report", "prov", "--coordinator", &server.url]));
    assert!(text.contains("Produced with (2 of 2 results recorded it): code 0.1.0"), "{text}");
    assert!(text.contains(&format!("dataset sha256 {}", &sum[..16])), "{text}");
    assert!(!text.contains("WARNING: the trials ran under different"), "{text}");
    let page = dir.path().join("report.html");
    run_ok(sweep().args(["report", "prov", "--coordinator", &server.url, "--html"]).arg(&page));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Produced with (2 of 2 results recorded it)") && html.contains(&sum[..16]), "{html}");
}
