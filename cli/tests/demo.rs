//! The demo grid (`examples/demo.toml`, what `scripts/demo.sh` runs) on its
//! subset of the real CIFAR-10 (issue 11, acceptance 4): `sweep run` with
//! two real libtorch workers, about 4 minutes on 2 CPU cores. Its report
//! must show what the README says the demo shows:
//! - the skip effect at depth 32 with a paired 95% interval above zero;
//! - the gradient-flow difference: at the start of training the plain
//!   32-layer network's gradient at its input is a vanishing fraction of
//!   the one at its output, the residual one's is not.
//!
//! CIFAR-10 is read from `$SWEEP_CIFAR_DIR`, else from
//! `../shared/datasets/cifar-10-batches-bin` beside the repository (where
//! CI has it). Without it the test fails and says so: it checks the demo a
//! newcomer runs, on the data the demo uses.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{finish, sweep_run};

fn cifar_dir() -> PathBuf {
    match std::env::var_os("SWEEP_CIFAR_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/cifar-10-batches-bin"),
    }
}

/// The mean gradient norm of `block` in the depth-32 cell with `skip`, at
/// the start of training.
fn grad_at_start(rows: &[serde_json::Value], skip: bool, block: &str) -> f64 {
    rows.iter()
        .find(|r| r["depth"] == 32 && r["skip"] == skip && r["block"] == block && r["phase"] == "start")
        .and_then(|r| r["mean"].as_f64())
        .unwrap_or_else(|| panic!("no gradient-flow row for depth 32, skip {skip}, {block}"))
}

#[test]
fn the_demo_shows_the_depth_32_skip_effect_and_the_vanishing_gradients() {
    let data = cifar_dir();
    assert!(
        data.join("test_batch.bin").is_file(),
        "the demo test needs CIFAR-10 (binary version) at {}: set SWEEP_CIFAR_DIR to its folder",
        data.display()
    );
    let data = data.canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../../examples/demo.toml");
    let path_line = example.lines().find(|l| l.starts_with("path = ")).expect("the demo grid names its data");
    let grid = dir.path().join("demo.toml");
    std::fs::write(&grid, example.replace(path_line, &format!("path = {:?}", data.display().to_string()))).unwrap();

    let out_dir = dir.path().join("report");
    let mut run = sweep_run(&grid, &dir.path().join("state"), &dir.path().join("demo.db"));
    run.args(["--workers", "2", "--format", "json", "--out"]).arg(&out_dir);
    let out = finish(run.spawn().unwrap(), Duration::from_secs(1500), "the demo's sweep run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    for c in report["cells"].as_array().unwrap() {
        assert_eq!((c["seeds_total"].as_u64(), c["succeeded"].as_u64()), (Some(4), Some(4)), "{c}");
    }
    let paired = report["paired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["factor"] == "skip" && p["at"]["depth"] == "32")
        .unwrap_or_else(|| panic!("no paired skip comparison at depth 32: {}", report["paired"]));
    let (lo, hi) = (paired["test"]["ci95"][0].as_f64().unwrap(), paired["test"]["ci95"][1].as_f64().unwrap());
    assert_eq!(paired["level"], "true", "skip on minus off: {paired}");
    eprintln!("depth 32, skip on minus off: [{:+.1}, {:+.1}] points", lo * 100.0, hi * 100.0);
    assert!(lo > 0.0, "the demo's depth-32 skip effect has an interval that is not above zero: {paired}");

    let rows = report["gradient_flow"].as_array().expect("gradient-flow rows (the report drew its pictures)");
    let plain = grad_at_start(rows, false, "stem") / grad_at_start(rows, false, "fc2");
    let residual = grad_at_start(rows, true, "stem") / grad_at_start(rows, true, "fc2");
    eprintln!("gradient at the input / at the output, depth 32, start: plain {plain:.1e}, residual {residual:.1e}");
    assert!(plain < 1e-6, "the plain network's gradient should vanish towards the input: {plain:e}");
    assert!(residual > 1e-2, "the residual network's gradient should reach the input: {residual:e}");
    assert!(out_dir.join("gradient-flow.png").is_file() && out_dir.join("gradient-flow.svg").is_file());
}
