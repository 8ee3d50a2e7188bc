//! The dashboard in a real browser: headless Chromium driven over
//! WebDriver (chromedriver + fantoccini) against `sweep serve --http`,
//! while a simulated sweep runs. It watches the live curve gain points,
//! checks the cell table against `sweep report --format json`, cancels a
//! sweep from its page, and writes a screenshot
//! (`$SWEEP_ARTIFACTS/dashboard.png`, default `target/artifacts`).
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver;
//! `scripts/test.sh` installs them). Without them it is skipped, unless
//! SWEEP_REQUIRE_BROWSER=1 (CI), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, run_ok, sim_worker, sweep, Server};
use fantoccini::{Client, ClientBuilder, Locator};

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// chromedriver and the browser, or `None` (skip) where there are none.
fn browser() -> Option<(PathBuf, Option<PathBuf>)> {
    let driver = std::env::var_os("SWEEP_CHROMEDRIVER").map(PathBuf::from).or_else(|| which("chromedriver"));
    let chrome = std::env::var_os("SWEEP_CHROME").map(PathBuf::from).or_else(|| which("chromium"));
    match driver {
        Some(d) => Some((d, chrome)),
        None => {
            assert_ne!(
                std::env::var("SWEEP_REQUIRE_BROWSER").as_deref(),
                Ok("1"),
                "SWEEP_REQUIRE_BROWSER=1 but no chromedriver (install chromium and chromium-driver)"
            );
            println!("skipped: no chromedriver on PATH");
            None
        }
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(driver: &Path, chrome: Option<&Path>) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let guard = Driver(child);
    let mut options = serde_json::json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400"]
    });
    if let Some(c) = chrome {
        options["binary"] = serde_json::json!(c);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (guard, c),
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The dashboard's address from `sweep serve`'s log.
fn dashboard_url(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix("sweep dashboard on ").map(|u| u.trim_end_matches('/').to_owned()));
        if let Some(u) = found {
            return u;
        }
        assert!(Instant::now() < deadline, "sweep serve did not print the dashboard's address");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn points(c: &Client) -> u64 {
    let el = c.find(Locator::Css("#curves")).await.expect("the curves element");
    el.attr("data-points").await.unwrap().unwrap_or_default().parse().unwrap_or(0)
}

async fn wait_for<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_curves_the_report_and_cancels() {
    let Some((driver, chrome)) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dash.db");
    let server = Server::start_with(&format!("sqlite://{}", db.display()), &["--http", "127.0.0.1:0"]);
    let web = dashboard_url(&server);
    // Two sweeps: one trained by a slow simulated worker, one never leased
    // (cancelled from its page).
    let live = dir.path().join("live.toml");
    std::fs::write(&live, common::small_grid("live", 2).replace("epochs = 2", "epochs = 4")).unwrap();
    let idle = dir.path().join("idle.toml");
    std::fs::write(&idle, common::small_grid("idle", 1)).unwrap();
    run_ok(sweep().arg("submit").arg(&live).args(["--coordinator", &server.url]));
    let mut worker = sim_worker(&server.url, "w1", 60, &dir.path().join("ckpt")).spawn().unwrap();

    let (_driver, c) = connect(&driver, chrome.as_deref()).await;
    c.goto(&format!("{web}/sweeps/live")).await.unwrap();
    wait_for(Duration::from_secs(60), "the first curve points", || async { points(&c).await > 0 }).await;
    let first = points(&c).await;
    wait_for(Duration::from_secs(60), "the curve to gain points", || async { points(&c).await > first }).await;
    println!("live curve: {first} points, then {}", points(&c).await);
    assert!(c.find(Locator::Css("#curves canvas")).await.is_ok(), "uPlot drew the chart");

    // The sweep's end: the page is reloaded and its cell table read.
    let status_url = server.url.clone();
    wait_for(Duration::from_secs(120), "the live sweep to finish", || {
        let url = status_url.clone();
        async move {
            let out = run_ok(sweep().args(["status", "live", "--coordinator", &url]));
            out.contains("finished")
        }
    })
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    c.goto(&format!("{web}/sweeps/live")).await.unwrap();
    let json = run_ok(sweep().args(["report", "live", "--format", "json", "--coordinator", &server.url]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cells = json["cells"].as_array().unwrap();
    let table = c.find(Locator::Css("#report table")).await.expect("the cell table");
    let rows = table.find_all(Locator::Css("tbody tr")).await.unwrap();
    let mut header = Vec::new();
    for th in table.find_all(Locator::Css("thead th")).await.unwrap() {
        header.push(th.text().await.unwrap());
    }
    let col = |prefix: &str| header.iter().position(|h| h.starts_with(prefix)).unwrap_or_else(|| panic!("{header:?}"));
    let (seeds_col, acc_col) = (col("seeds done"), col("test acc"));
    assert_eq!(rows.len(), cells.len(), "one row per cell");
    for (row, cell) in rows.iter().zip(cells) {
        let texts: Vec<String> = {
            let mut v = Vec::new();
            for td in row.find_all(Locator::Css("td")).await.unwrap() {
                v.push(td.text().await.unwrap());
            }
            v
        };
        assert_eq!(texts[0], cell["depth"].to_string(), "{texts:?} vs {cell}");
        let shown: f64 = texts[acc_col].split_whitespace().next().and_then(|t| t.parse().ok()).unwrap();
        let mean = cell["test_accuracy"]["mean"].as_f64().unwrap() * 100.0;
        assert!((shown - mean).abs() < 0.006, "{texts:?} vs {cell}");
        assert!(texts[seeds_col].starts_with(&cell["succeeded"].to_string()), "{texts:?} vs {cell}");
    }

    let artifacts = std::env::var_os("SWEEP_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("target/artifacts"));
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts.join("dashboard.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // Cancel from the page (a POST with the page's CSRF token).
    run_ok(sweep().arg("submit").arg(&idle).args(["--coordinator", &server.url]));
    c.goto(&format!("{web}/sweeps/idle")).await.unwrap();
    c.find(Locator::Css("#cancel")).await.unwrap().click().await.unwrap();
    // (The status table always has a "cancelled" column: wait for the
    // sweep's own state instead.)
    let url = server.url.clone();
    let queued = move || {
        let out = run_ok(sweep().args(["report", "idle", "--format", "json", "--coordinator", &url]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["cells"].as_array().unwrap().iter().map(|c| c["queued"].as_u64().unwrap()).sum::<u64>()
    };
    wait_for(Duration::from_secs(20), "the idle sweep to be cancelled", || {
        let queued = queued.clone();
        async move { queued() == 0 }
    })
    .await;
    let status = run_ok(sweep().args(["status", "idle", "--coordinator", &server.url]));
    assert!(
        status
            .lines()
            .any(|l| l.contains("idle") && l.trim_end().trim_end_matches('│').trim_end().ends_with("cancelled")),
        "{status}"
    );
    let body = c.source().await.unwrap();
    assert!(!body.contains("id=\"cancel\""), "a cancelled sweep has no cancel button");
    c.close().await.unwrap();

    // A POST without the page's CSRF token, or from another site, is refused.
    assert!(post(&web, "/sweeps/live/cancel", "csrf=guess", None).starts_with("HTTP/1.1 403"));
    let page = post(&web, "/sweeps/live/cancel", "csrf=guess", Some("http://evil.example"));
    assert!(page.starts_with("HTTP/1.1 403") && page.contains("another site"), "{page}");
}

/// A raw form POST; the response's head and body.
fn post(web: &str, path: &str, body: &str, origin: Option<&str>) -> String {
    use std::io::{Read, Write};
    let host = web.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
