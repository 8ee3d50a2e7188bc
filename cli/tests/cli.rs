//! End-to-end tests of the `sweep` binary: a real `sweep serve` process,
//! real `sweep submit`/`status`/`report` processes, and `sweep run` with real
//! worker processes (simulated trainer as the test double).

mod common;

use common::{run_ok, sweep, worker_bin, Server};

use std::process::Command;

/// The example grid, comments included.
const EXAMPLE: &str = include_str!("../../examples/skip-ablation.toml");

#[test]
fn submit_is_idempotent_and_only_new_cells_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("sweep.db"));
    let grid = dir.path().join("grid.toml");
    std::fs::write(&grid, EXAMPLE).unwrap();

    let dry = run_ok(sweep().args(["submit", "--dry-run"]).arg(&grid));
    assert!(dry.contains("48 cells x 3 seeds [0, 1, 2] = 144 trials"), "{dry}");
    assert_eq!(dry.lines().filter(|l| l.starts_with("depth=")).count(), 48);

    let first = run_ok(sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]));
    assert_eq!(first.lines().last(), Some("skip-ablation"), "sweep ID is the last line: {first}");
    assert!(first.contains("144 trials") && first.contains("144 new"), "{first}");

    let again = run_ok(sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]));
    assert!(again.contains("144 trials") && again.contains(", 0 new"), "{again}");

    std::fs::write(&grid, EXAMPLE.replace("seeds = [0, 1, 2]", "seeds = 4")).unwrap();
    let more = run_ok(sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]));
    assert!(more.contains("192 trials") && more.contains(", 48 new"), "{more}");

    let status = run_ok(sweep().args(["status", "skip-ablation", "--coordinator", &server.url]));
    assert!(status.contains("skip-ablation") && status.contains("192"), "{status}");
}

/// Each bad grid: (what is wrong, replacement applied to the valid example,
/// text the error must contain).
const BAD: &[(&str, &str, &str, &str)] = &[
    ("toml syntax", "name = \"skip-ablation\"", "name = \"skip-ablation", "grid.toml:"),
    ("unknown top-level key", "seeds = [0, 1, 2]", "seeds = [0, 1, 2]\ncolour = 3", "colour"),
    ("unknown train key", "batch_size = 4", "batchsize = 4", "batchsize"),
    ("missing name", "name = \"skip-ablation\"", "", "name"),
    ("missing seeds", "seeds = [0, 1, 2]", "", "seeds"),
    ("missing factor", "depth = [8, 16, 32, 64]", "", "depth"),
    ("empty factor", "depth = [8, 16, 32, 64]", "depth = []", "depth"),
    ("wrong type", "depth = [8, 16, 32, 64]", "depth = \"8\"", "depth"),
    ("depth not a multiple of 8", "depth = [8, 16, 32, 64]", "depth = [8, 12]", "12"),
    ("depth zero", "depth = [8, 16, 32, 64]", "depth = [0]", "depth"),
    ("unknown init", "\"kaiming_normal\"]", "\"he_normal\"]", "he_normal"),
    ("empty seeds", "seeds = [0, 1, 2]", "seeds = []", "seeds"),
    ("negative seed", "seeds = [0, 1, 2]", "seeds = [-1]", "seeds"),
    ("zero epochs", "epochs = 6", "epochs = 0", "epochs"),
    ("negative lr", "lr = 1e-4", "lr = -1.0", "lr"),
    ("unknown optimizer", "optimizer = \"sgd\"", "optimizer = \"rmsprop\"", "rmsprop"),
    ("unknown dataset", "dataset = \"cifar10\"", "dataset = \"mnist\"", "mnist"),
    ("zero max_attempts", "max_attempts = 3", "max_attempts = 0", "max_attempts"),
    ("duplicate factor value", "depth = [8, 16, 32, 64]", "depth = [8, 8]", "depth"),
    ("bad name", "name = \"skip-ablation\"", "name = \"skip ablation!\"", "name"),
];

#[test]
fn bad_grid_files_exit_2_with_a_clear_error_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("sweep.db"));
    for (what, from, to, needle) in BAD {
        assert!(EXAMPLE.contains(from), "{what}: the example has no {from:?}");
        let grid = dir.path().join("grid.toml");
        std::fs::write(&grid, EXAMPLE.replacen(from, to, 1)).unwrap();
        for dry in [false, true] {
            let mut cmd = sweep();
            cmd.arg("submit").arg(&grid).args(["--coordinator", &server.url]);
            if dry {
                cmd.arg("--dry-run");
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what}: expected exit 2, got {:?}; stderr: {stderr}", out.status);
            assert!(stderr.contains("grid.toml"), "{what}: error does not name the file: {stderr}");
            assert!(stderr.contains(needle), "{what}: error does not mention {needle:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        }
    }
    let status = run_ok(sweep().args(["status", "--coordinator", &server.url]));
    assert_eq!(status.trim(), "no sweeps", "bad grids stored something: {status}");
}

#[test]
fn unreachable_coordinator_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(&grid, EXAMPLE).unwrap();
    let out = sweep().arg("submit").arg(&grid).args(["--coordinator", "http://127.0.0.1:9"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the coordinator at http://127.0.0.1:9"), "{stderr}");
}

#[test]
fn sweep_run_prints_a_report_whose_rows_match_the_cells() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("small.toml");
    std::fs::write(&grid, common::small_grid("small", 2)).unwrap();
    let out = run_ok(
        sweep()
            .arg("run")
            .arg(&grid)
            .args(["--workers", "2", "--simulate-step-ms", "1", "--format", "json", "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--worker-bin")
            .arg(worker_bin()),
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["sweep_id"], "small");
    let cells = report["cells"].as_array().unwrap();
    let mut got: Vec<(u64, bool)> =
        cells.iter().map(|c| (c["depth"].as_u64().unwrap(), c["skip"].as_bool().unwrap())).collect();
    got.sort();
    assert_eq!(got, vec![(8, false), (8, true), (16, false), (16, true)]);
    for c in cells {
        assert_eq!(c["seeds_total"], 2);
        assert_eq!(c["succeeded"], 2);
        assert_eq!(c["test_accuracy"]["n"], 2);
        let (lo, mean, hi) = (
            c["test_accuracy"]["ci95_lo"].as_f64().unwrap(),
            c["test_accuracy"]["mean"].as_f64().unwrap(),
            c["test_accuracy"]["ci95_hi"].as_f64().unwrap(),
        );
        assert!(lo <= mean && mean <= hi, "{c}");
    }
    // The state folder holds the database and one log per worker.
    assert!(dir.path().join("state/small.db").exists());
    assert!(dir.path().join("state/logs/worker-1.log").exists());
}

#[test]
fn the_sweep_binary_does_not_link_libtorch() {
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_sweep")).output().expect("ldd is available");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(libs.contains("libc.so"), "unexpected ldd output: {libs}");
    assert!(!libs.contains("torch"), "sweep links libtorch:\n{libs}");
}

#[test]
fn help_teaches_with_examples() {
    for cmd in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["submit", "--help"],
        vec!["serve", "--help"],
        vec!["report", "--help"],
    ] {
        let out = run_ok(sweep().args(&cmd));
        assert!(out.contains("Example"), "`sweep {}` has no example:\n{out}", cmd.join(" "));
    }
}
