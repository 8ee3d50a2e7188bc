//! What a submit costs the coordinator (issue 8, bug 5): 1,000 submits of
//! grids with the longest strings a grid may carry (a 64-character name, a
//! 4,096-byte data path) through a real coordinator on 127.0.0.1:0. The
//! database grows by far less than one path per trial (the shared settings
//! are stored once) and the process's resident memory stays flat.
//!
//! Alone in its test binary, so no other test's allocations show in the
//! RSS readings.

mod common;

use std::time::Duration;

use sweep_proto::v1 as pb;

const SUBMITS: usize = 1000;
const SEEDS: usize = 20;
const PATH_BYTES: usize = 4096;

/// Resident set size of this process, from /proc/self/statm (pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn grid(i: usize, path: &str) -> pb::GridSpec {
    // A 64-character name, unique per submit.
    let name = format!("footprint-{i:04}-{}", "n".repeat(64 - 15));
    assert_eq!(name.len(), 64);
    (&common::grid_spec(&name, SEEDS, "8", path)).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_maximal_submits_keep_the_coordinator_flat() {
    let (dir, store) = common::temp_sqlite_store().await;
    let (listener, addr) = common::loopback_listener().await;
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sweep_coordinator::serve(store.clone(), Default::default(), listener, async {
        let _ = rx.await;
    }));
    let mut ch = None;
    for _ in 0..100 {
        if let Ok(c) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await {
            ch = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch.expect("coordinator up"));
    let path = format!("/{}", "d".repeat(PATH_BYTES - 1));

    let warmup = SUBMITS / 10;
    let mut rss_after_warmup = 0;
    let mut bytes_after_warmup = 0;
    for i in 0..SUBMITS {
        let out = client.submit(pb::SubmitRequest { spec: Some(grid(i, &path)) }).await.unwrap().into_inner();
        assert_eq!(out.added_trials, SEEDS as u64);
        if i + 1 == warmup {
            rss_after_warmup = rss_bytes();
            bytes_after_warmup = dir_bytes(dir.path());
        }
    }
    let rss_end = rss_bytes();
    let bytes_end = dir_bytes(dir.path());

    let trials = ((SUBMITS - warmup) * SEEDS) as u64;
    let per_trial = bytes_end.saturating_sub(bytes_after_warmup) / trials;
    // Copying the path into every trial would cost more than PATH_BYTES per
    // trial; stored once per sweep (its grid, for reference) and once in
    // total (the shared settings), it costs a fraction of it.
    assert!(
        per_trial < (PATH_BYTES / 2) as u64,
        "the database grew by {per_trial} bytes per trial with a {PATH_BYTES}-byte data path"
    );
    let growth = rss_end.saturating_sub(rss_after_warmup);
    eprintln!("database: {per_trial} bytes per trial; RSS {} -> {} MiB", rss_after_warmup >> 20, rss_end >> 20);
    assert!(
        growth < 64 << 20,
        "resident memory grew by {} MiB over {} submits (from {} MiB)",
        growth >> 20,
        SUBMITS - warmup,
        rss_after_warmup >> 20
    );
    assert_eq!(store.status(None).await.unwrap().len(), SUBMITS);
}
