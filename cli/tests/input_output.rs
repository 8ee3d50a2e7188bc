// wait4(2) and kill(2) through libc, to measure a child's peak memory.
#![allow(unsafe_code)]
//! The `sweep` binary's edges (issue 8): numeric flags are range-checked
//! (exit 2), errors print each cause once and stay short, and text from the
//! coordinator reaches the terminal with its control characters escaped.

mod common;

use common::{run_ok, sweep, Server};

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use sweep_proto::v1 as pb;

/// Runs `cmd` to its end within `limit` (killed and failed otherwise).
fn output_within(cmd: &mut std::process::Command, limit: Duration) -> (Option<i32>, String, String) {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let what = format!("{cmd:?}");
    let out = common::finish(child, limit, &what);
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[test]
fn numeric_flags_out_of_range_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("g.toml");
    std::fs::write(&grid, common::small_grid("g", 1)).unwrap();
    let g = grid.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--lease-ttl-secs", "0"], "--lease-ttl-secs"),
        (&["serve", "--lease-ttl-secs", "86401"], "--lease-ttl-secs"),
        (&["serve", "--lease-ttl-secs", "18446744073709551615"], "--lease-ttl-secs"),
        (&["serve", "--lease-ttl-secs", "4294968"], "--lease-ttl-secs"),
        (&["serve", "--lease-ttl-secs=-1"], "--lease-ttl-secs"),
        (&["serve", "--lease-ttl-secs", "ten"], "--lease-ttl-secs"),
        (&["serve", "--max-connections", "0"], "--max-connections"),
        (&["serve", "--max-connections", "65537"], "--max-connections"),
        (&["serve", "--handshake-timeout-secs", "0"], "--handshake-timeout-secs"),
        (&["serve", "--handshake-timeout-secs", "601"], "--handshake-timeout-secs"),
        (&["run", g, "--workers", "0"], "--workers"),
        (&["run", g, "--workers", "257"], "--workers"),
        (&["run", g, "--workers", "4294967296"], "--workers"),
        (&["run", g, "--grace-secs", "3601"], "--grace-secs"),
    ];
    for (args, flag) in cases {
        let (code, _, stderr) = output_within(sweep().args(*args), Duration::from_secs(30));
        assert_eq!(code, Some(2), "sweep {}: {stderr}", args.join(" "));
        assert!(stderr.contains(flag) && stderr.contains("invalid value"), "sweep {}: {stderr}", args.join(" "));
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // The environment variable goes through the same check.
    let (code, _, stderr) =
        output_within(sweep().arg("serve").env("SWEEP_LEASE_TTL_SECS", "0"), Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("1..=86400"), "{stderr}");
}

#[test]
fn the_largest_lease_ttl_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sweep()
        .args(["serve", "--listen", "127.0.0.1:0", "--lease-ttl-secs", "86400", "--database-url"])
        .arg(format!("sqlite://{}", dir.path().join("s.db").display()))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("listening on") {
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "sweep serve ended: {seen}");
        seen += &String::from_utf8_lossy(&buf[..n]);
    }
    assert!(child.try_wait().unwrap().is_none(), "{seen}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_error_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // A grid file that cannot be read: the I/O error is both quoted in the
    // grid error's message and its source.
    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = output_within(sweep().arg("submit").arg(&missing), Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");

    // A database that cannot be opened (its folder is a file): the SQLite
    // error travels through the store's and the command's errors.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let url = format!("sqlite://{}/sweep.db", file.display());
    let (code, _, stderr) = output_within(
        sweep().args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url]),
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("plain-file"), "{stderr}");
    // Every cause once: no ": "-separated part repeats.
    let parts: Vec<&str> = line.trim_start_matches("error: ").split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p) || p.len() < 8, "{p:?} printed twice: {line}");
    }
    assert!(line.len() < 600, "{line}");
}

#[test]
fn text_from_the_coordinator_reaches_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("sweep.db"));
    let grid = dir.path().join("g.toml");
    std::fs::write(&grid, common::small_grid("esc", 1)).unwrap();
    run_ok(sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]));

    // A hostile worker takes a trial under a name that would clear the
    // screen and retitle the terminal.
    let evil = "evil\u{1b}[2J\u{1b}]0;pwned\u{7}";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leased = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
        let mut client = pb::worker_service_client::WorkerServiceClient::new(channel);
        client
            .lease(pb::LeaseRequest {
                worker_id: evil.into(),
                device: "cpu".into(),
                wait_ms: 2000,
                ..Default::default()
            })
            .await
    });
    match leased {
        Ok(a) => {
            assert!(a.into_inner().assignment.is_some(), "a queued trial was offered");
            let status = run_ok(sweep().args(["status", "esc", "--coordinator", &server.url]));
            assert!(!status.contains('\u{1b}') && !status.contains('\u{7}'), "raw control characters: {status:?}");
            assert!(status.contains("evil\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"), "{status}");
        }
        // A coordinator that refuses such names outright is fine too.
        Err(s) => assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}"),
    }

    // An error message quoting what the user asked for.
    let (code, stdout, stderr) = output_within(
        sweep().args(["report", "nope\u{1b}[31mred", "--coordinator", &server.url]),
        Duration::from_secs(30),
    );
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    assert!(!stderr.contains('\u{1b}') && !stdout.contains('\u{1b}'), "{stderr:?}");
}

/// Runs `cmd` to its end (killed after `limit`) and returns its exit code,
/// stderr and peak resident memory in bytes, as the kernel accounted it
/// for this one child (`wait4`).
fn peak_rss_of(cmd: &mut std::process::Command, limit: Duration) -> (Option<i32>, String, u64) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut err = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; the child is ours.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    let _ = done_tx.send(());
    assert!(!watchdog.join().unwrap(), "{cmd:?} still running after {limit:?}");
    std::mem::forget(child); // reaped above
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    (code, stderr, usage.ru_maxrss as u64 * 1024)
}

/// A 20 MB grid file whose one unknown key is 20 MB long is refused with
/// exit 2, a short message and bounded memory (issue 8, acceptance 5: under
/// 100 MB resident; the quadratic "did you mean" used gigabytes).
#[test]
fn a_huge_grid_file_with_a_huge_unknown_key_is_refused_with_a_short_error() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("huge.toml");
    let key = "k".repeat(20 * 1024 * 1024);
    std::fs::write(&grid, format!("{}\n{key} = 1\n", common::small_grid("huge", 1))).unwrap();
    for dry in [true, false] {
        let mut cmd = sweep();
        cmd.arg("submit").arg(&grid).args(["--coordinator", "http://127.0.0.1:9"]);
        if dry {
            cmd.arg("--dry-run");
        }
        let (code, stderr, rss) = peak_rss_of(&mut cmd, Duration::from_secs(120));
        assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(2000)]);
        assert!(stderr.len() < 2048, "{} bytes of stderr: {}", stderr.len(), &stderr[..2000]);
        assert!(stderr.contains("huge.toml"), "{stderr}");
        assert!(rss < 100 * 1024 * 1024, "peak RSS {} MB refusing a 20 MB grid", rss / (1024 * 1024));
    }
}

/// Acceptance 6 of issue 8, through the binary: a second `sweep serve` on
/// the SQLite file a running coordinator holds exits 1 naming the file and
/// the holder; a coordinator whose database lost its `-wal` file (with
/// sweeps in it) refuses to start instead of serving an empty database.
#[test]
fn a_second_coordinator_and_a_database_without_its_wal_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sweep.db");
    let first = Server::start(&db);
    let grid = dir.path().join("grid.toml");
    std::fs::write(&grid, common::small_grid("walled", 2)).unwrap();
    run_ok(sweep().args(["submit", "--coordinator", &first.url]).arg(&grid));

    let (code, _, err) = output_within(&mut common::serve_cmd(&db), Duration::from_secs(30));
    assert_eq!(code, Some(1), "a second coordinator must exit 1: {err}");
    assert!(err.contains(&db.display().to_string()), "names the database: {err}");
    assert!(err.contains("another coordinator"), "says why: {err}");
    assert!(err.lines().count() <= 6, "short: {err}");

    // SIGKILL the first coordinator (its WAL is not checkpointed then),
    // then lose the WAL: the sweeps it held are gone from the main file.
    drop(first);
    let wal = dir.path().join("sweep.db-wal");
    assert!(wal.exists(), "the coordinator ran in WAL mode");
    std::fs::remove_file(&wal).unwrap();
    let _ = std::fs::remove_file(dir.path().join("sweep.db-shm"));
    let (code, _, err) = output_within(&mut common::serve_cmd(&db), Duration::from_secs(30));
    assert_eq!(code, Some(1), "a database that lost its WAL must be refused: {err}");
    assert!(err.contains("-wal") || err.contains("WAL"), "says what happened: {err}");
}
