//! Shared helpers for the orchestration tests: a real coordinator (the
//! library's `serve` on 127.0.0.1:0, SQLite in a temp folder) and real
//! `sweep-worker` processes talking gRPC over loopback.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sweep_coordinator::store::{SqliteStore, Store};
use sweep_coordinator::CoordinatorConfig;
use sweep_core::GridSpec;
use tokio::process::{Child, Command};

pub(crate) struct Coordinator {
    pub url: String,
    pub store: Arc<dyn Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Coordinator {
    pub(crate) async fn start(dir: &Path, config: CoordinatorConfig) -> Coordinator {
        let url = format!("sqlite://{}", dir.join("sweep.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("open sqlite store"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = store.clone();
        let handle = tokio::spawn(async move {
            sweep_coordinator::serve(s, config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        Coordinator { url: format!("http://{addr}"), store, stop: Some(tx), handle: Some(handle) }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

/// A coordinator config with short timers so tests finish quickly.
pub(crate) fn fast_config(lease_ttl: Duration) -> CoordinatorConfig {
    CoordinatorConfig {
        lease_ttl,
        heartbeat_interval: lease_ttl / 4,
        reap_interval: Duration::from_millis(100),
        max_lease_wait: Duration::from_secs(2),
        ..Default::default()
    }
}

pub(crate) fn grid(text: &str) -> GridSpec {
    GridSpec::parse(text, Path::new("/tmp/test-grid.toml")).expect("valid test grid")
}

/// Starts a `sweep-worker` process with the simulated (test-double) trainer.
pub(crate) fn spawn_worker(url: &str, id: &str, checkpoints: &Path, step_ms: u64, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sweep-worker"))
        .args(["--coordinator", url, "--worker-id", id, "--simulate-step-ms", &step_ms.to_string()])
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .args(extra)
        .env("SWEEP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sweep-worker")
}

/// Polls until `cond` holds for the sweep's status, or panics after `limit`.
pub(crate) async fn wait_for<F>(store: &Arc<dyn Store>, sweep: &str, limit: Duration, what: &str, mut cond: F)
where
    F: FnMut(&sweep_coordinator::store::SweepStatus) -> bool,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s = store.status(Some(sweep)).await.expect("status").remove(0);
        if cond(&s) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}; last status: {:?}", s.counts);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
