//! Orchestration overhead benchmark: how many no-op trials per second the
//! coordinator turns over, through real gRPC on loopback, with SQLite and
//! with PostgreSQL side by side.
//!
//! Each simulated worker loops: Lease -> PushMetrics (one batch of 10
//! points, acknowledged after commit) -> Complete. Nothing is trained, so
//! the figure is the per-trial cost of the orchestration itself. Also
//! times `Report` over the finished sweep (set-based SQL aggregation).
//!
//! Run: `bench/overhead.sh` (or `cargo run --release -p sweep-coordinator
//! --example overhead_bench -- TRIALS WORKERS`). PostgreSQL is used when
//! SWEEP_BENCH_POSTGRES_URL is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sweep_coordinator::store::{PostgresStore, SqliteStore, Store};
use sweep_coordinator::CoordinatorConfig;
use sweep_proto::v1 as pb;

#[path = "common/bench_grid.rs"]
mod bench_grid;
use bench_grid::grid;

async fn worker_loop(url: String, id: usize) -> u64 {
    let ch = tonic::transport::Endpoint::from_shared(url).unwrap().tcp_nodelay(true).connect().await.unwrap();
    let mut w = pb::worker_service_client::WorkerServiceClient::new(ch);
    let mut done = 0;
    loop {
        let a = w
            .lease(pb::LeaseRequest {
                worker_id: format!("bench-{id}"),
                device: "cpu".into(),
                wait_ms: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .assignment;
        let Some(a) = a else { return done };
        let points = (1..=10)
            .map(|s| pb::MetricPoint { step: s, name: "train_loss".into(), value: 1.0 / s as f64, epoch: 1 })
            .collect();
        let batch = pb::MetricBatch {
            lease_id: a.lease_id.clone(),
            seq: 1,
            points,
            truncate_after: None,
            checkpoint_step: None,
        };
        let mut acks = w.push_metrics(tokio_stream::iter(vec![batch])).await.unwrap().into_inner();
        acks.message().await.unwrap().expect("ack");
        w.complete(pb::CompleteRequest {
            last_batch: None,
            provenance: None,
            worker_id: format!("bench-{id}"),
            lease_id: a.lease_id,
            outcome: pb::Outcome::Succeeded as i32,
            summary: Some(pb::TrialSummary {
                final_train_loss: Some(0.5),
                final_test_accuracy: Some(0.5 + (done % 7) as f64 / 100.0),
                wall_seconds: 0.0,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        done += 1;
    }
}

struct Row {
    backend: &'static str,
    trials: usize,
    workers: usize,
    submit: Duration,
    run: Duration,
    report: Duration,
}

async fn bench(backend: &'static str, store: Arc<dyn Store>, trials: usize, workers: usize) -> Row {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sweep_coordinator::serve(store.clone(), CoordinatorConfig::default(), listener, async {
        let _ = rx.await;
    }));
    let spec = grid(trials);
    let t = Instant::now();
    let out = store.submit(&spec, 0).await.unwrap();
    let submit = t.elapsed();
    let t = Instant::now();
    let handles: Vec<_> = (0..workers).map(|i| tokio::spawn(worker_loop(url.clone(), i))).collect();
    let mut done = 0;
    for h in handles {
        done += h.await.unwrap();
    }
    let run = t.elapsed();
    assert_eq!(done, out.total_trials, "every trial completed exactly once");
    let t = Instant::now();
    let results = store.trial_results("bench").await.unwrap();
    let report = t.elapsed();
    let cells: std::collections::BTreeSet<String> = results.iter().map(|r| r.cell.canonical()).collect();
    assert_eq!(cells.len(), 100);
    let _ = tx.send(());
    let _ = server.await;
    Row { backend, trials: out.total_trials as usize, workers, submit, run, report }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let trials = args.first().copied().unwrap_or(10_000);
    let workers = args.get(1).copied().unwrap_or(16);
    let mut rows = Vec::new();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    rows.push(bench("SQLite (WAL, 1 writer)", Arc::new(SqliteStore::open(&url).await.unwrap()), trials, workers).await);

    if let Ok(pg) = std::env::var("SWEEP_BENCH_POSTGRES_URL") {
        use std::str::FromStr;
        let schema = format!("bench_{}", std::process::id());
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&pg).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await.unwrap();
        let opts = sqlx::postgres::PgConnectOptions::from_str(&pg).unwrap().options([("search_path", schema.as_str())]);
        rows.push(bench("PostgreSQL", Arc::new(PostgresStore::open_with(opts).await.unwrap()), trials, workers).await);
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut admin).await.unwrap();
    }

    println!("| backend | trials | workers | submit | lease+metrics+complete | trials/s | per trial | report over {trials} trials |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} ms | {:.2} s | {:.0} | {:.2} ms | {:.1} ms |",
            r.backend,
            r.trials,
            r.workers,
            r.submit.as_secs_f64() * 1e3,
            r.run.as_secs_f64(),
            r.trials as f64 / r.run.as_secs_f64(),
            r.run.as_secs_f64() * 1e3 / r.trials as f64,
            r.report.as_secs_f64() * 1e3,
        );
    }
}
