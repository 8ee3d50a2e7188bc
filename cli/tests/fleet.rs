//! `sweep ls` and `sweep workers` (issue 12) against a real coordinator
//! and a real `sweep-worker` process (simulated trainer).

mod common;

use std::time::{Duration, Instant};

use common::{finish, run_ok, small_grid, sweep, Server};

#[test]
fn ls_lists_sweeps_and_workers_shows_who_runs_what() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("fleet.db"));
    let ls = || run_ok(sweep().args(["ls", "--coordinator", &server.url]));
    let workers = || run_ok(sweep().args(["workers", "--coordinator", &server.url]));
    assert!(ls().contains("no sweeps"), "{}", ls());
    assert!(workers().contains("no workers heard from"), "{}", workers());

    for (name, seeds) in [("older", 1), ("newer", 2)] {
        let grid = dir.path().join(format!("{name}.toml"));
        std::fs::write(&grid, small_grid(name, seeds)).unwrap();
        run_ok(sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]));
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed = ls();
    let row = |name: &str| listed.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{listed}")).to_owned();
    assert!(listed.find("newer").unwrap() < listed.find("older").unwrap(), "newest first:\n{listed}");
    let cells =
        |row: String| row.split(['│', '┆']).map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect::<Vec<_>>();
    assert_eq!(cells(row("older"))[1..7], ["4", "0 (0%)", "0", "4", "0/0", "active"], "{listed}");
    assert!(cells(row("newer"))[7].ends_with('s'), "an age in seconds: {listed}");

    // A slow simulated worker, so it is seen training.
    let worker = common::sim_worker(&server.url, "w1", 150, dir.path()).args(["--fuse", "2"]).spawn().unwrap();
    let start = Instant::now();
    let seen = loop {
        let w = workers();
        if w.contains("w1") && w.contains("(epoch") {
            break w;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the worker never showed training:\n{w}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = seen.lines().find(|l| l.contains("w1")).unwrap();
    assert!(line.contains("cpu") && line.contains("0/5"), "device, failures in a row: {seen}");
    assert!(seen.contains("older: ") || seen.contains("newer: "), "the sweep and cell it trains: {seen}");
    let out = finish(worker, Duration::from_secs(120), "sweep-worker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let done = ls();
    let row = done.lines().find(|l| l.contains("newer")).unwrap().to_owned();
    assert_eq!(cells(row)[1..7], ["8", "8 (100%)", "0", "0", "0/0", "finished"], "{done}");
    let idle = workers();
    assert!(idle.contains("w1") && idle.contains("idle"), "heard from within two TTLs, idle now: {idle}");
}
