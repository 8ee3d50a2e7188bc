//! Prometheus metrics (issue 12, acceptance 3): `sweep serve
//! --metrics-listen` serves `GET /metrics`; scraped before, during and after
//! a sweep run by a real `sweep-worker` process (simulated trainer) over
//! real gRPC, the exposition text is parsed and its counters must move.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{finish, small_grid, sweep};

/// `sweep serve` with metrics on ephemeral ports; killed on drop.
struct Served {
    child: Child,
    url: String,
    metrics: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &std::path::Path) -> Served {
    let mut child = sweep()
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut url, mut metrics) = (None, None);
    while url.is_none() || metrics.is_none() {
        let line = lines.next().expect("sweep serve printed its addresses").unwrap();
        if let Some(rest) = line.strip_prefix("sweep coordinator listening on ") {
            url = Some(format!("http://{}", rest.split_whitespace().next().unwrap()));
        }
        if let Some(rest) = line.strip_prefix("sweep metrics on http://") {
            metrics = Some(rest.trim_end_matches("/metrics").to_owned());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Served { child, url: url.unwrap(), metrics: metrics.unwrap() }
}

/// `GET /metrics` over a plain socket: (content type, body).
fn scrape(addr: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    (content_type, body.to_owned())
}

/// The exposition text parsed: `name{labels}` (labels as written) to value.
/// Every non-comment line must be `series value`, and every series must
/// have a `# TYPE` line for its family.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            types.push(rest.split_whitespace().next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not `series value`: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let name = series.split('{').next().unwrap();
        assert!(types.iter().any(|t| name.starts_with(t.as_str())), "no # TYPE for {name}");
        out.insert(series.to_owned(), value);
    }
    out
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| panic!("no series {series} in:\n{m:#?}"))
}

#[test]
fn metrics_are_served_and_move_with_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("metrics.db"));
    let (content_type, before) = scrape(&server.metrics);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let before = parse(&before);
    assert_eq!(get(&before, "sweep_leases_granted_total"), 0.0);
    assert_eq!(get(&before, "sweep_workers_connected"), 0.0);

    let grid = dir.path().join("small.toml");
    std::fs::write(&grid, small_grid("small", 2)).unwrap();
    let out = sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queued = parse(&scrape(&server.metrics).1);
    assert_eq!(get(&queued, r#"sweep_trials{sweep="small",state="queued"}"#), 8.0);
    assert_eq!(get(&queued, r#"sweep_rpc_duration_seconds_count{method="Submit"}"#), 1.0);

    let worker = common::sim_worker(&server.url, "w1", 1, dir.path()).spawn().unwrap();
    let out = finish(worker, Duration::from_secs(60), "sweep-worker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let after = parse(&scrape(&server.metrics).1);
    assert_eq!(get(&after, r#"sweep_trials{sweep="small",state="succeeded"}"#), 8.0);
    assert_eq!(get(&after, r#"sweep_trials{sweep="small",state="queued"}"#), 0.0);
    assert_eq!(get(&after, "sweep_leases_granted_total"), 8.0);
    assert_eq!(get(&after, r#"sweep_trials_finished_total{outcome="succeeded"}"#), 8.0);
    assert!(get(&after, "sweep_metric_points_total") >= 8.0 * 4.0, "each trial logs points");
    assert!(get(&after, r#"sweep_rpc_duration_seconds_count{method="Lease"}"#) >= 8.0);
    assert!(get(&after, r#"sweep_rpc_duration_seconds_count{method="Complete"}"#) >= 8.0);
    assert!(get(&after, r#"sweep_rpc_duration_seconds_sum{method="Complete"}"#) > 0.0);
    assert_eq!(get(&after, "sweep_workers_connected"), 1.0, "the worker was heard from within two TTLs");
    assert_eq!(get(&after, "sweep_leases_expired_total"), 0.0);
}

#[test]
fn a_workers_metrics_show_its_trial_progressing_and_its_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("worker-metrics.db"));
    let grid = dir.path().join("small.toml");
    std::fs::write(&grid, small_grid("wm", 1)).unwrap();
    let out = sweep().arg("submit").arg(&grid).args(["--coordinator", &server.url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut worker = common::sim_worker(&server.url, "wm1", 100, dir.path())
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(worker.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("sweep-worker printed its metrics address").unwrap();
        if let Some(rest) = line.strip_prefix("sweep-worker metrics on http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    // While a trial trains: its step moves, and its images per second show.
    let start = std::time::Instant::now();
    let training = loop {
        let m = parse(&scrape(&addr).1);
        let steps: Vec<f64> =
            m.iter().filter(|(k, _)| k.starts_with("sweep_worker_trial_step{")).map(|(_, v)| *v).collect();
        let rate = m.iter().any(|(k, v)| k.starts_with("sweep_worker_images_per_second{") && *v > 0.0);
        if steps.iter().any(|s| *s >= 2.0) && rate {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no progress in the worker's metrics: {m:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(get(&training, "sweep_worker_trials_running"), 1.0);
    assert!(training.keys().any(|k| k.starts_with(r#"sweep_worker_trial_epoch{sweep="wm",trial=""#)), "{training:#?}");
    // The CPU has no memory probe: no device memory series.
    assert!(!training.keys().any(|k| k.starts_with("sweep_worker_device_memory")), "{training:#?}");

    // Let it finish the sweep, scraping just before it idles out.
    let start = std::time::Instant::now();
    let done = loop {
        let m = parse(&scrape(&addr).1);
        if m.get(r#"sweep_worker_trials_finished_total{outcome="succeeded"}"#) == Some(&4.0) {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{m:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(get(&done, "sweep_worker_trials_running"), 0.0);
    assert!(!done.keys().any(|k| k.starts_with("sweep_worker_trial_step{")), "ended trials' series go: {done:#?}");
    let status = worker.wait().unwrap();
    assert!(status.success(), "{status}");
}
