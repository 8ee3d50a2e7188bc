//! Report benchmark: how long `sweep report` takes over a 10,000-trial sweep.
//!
//! Fills a sweep through the real store (lease, metrics, complete: 20
//! `train_loss` points and 8 `grad_norm/<block>` points per trial), then
//! times, through real gRPC on loopback: the `Analyze` call with trial rows
//! only (what `sweep report` asks for without pictures), the `Analyze` call
//! with curves and gradient flow (with `--html`/`--out`), and the effects
//! computation on the client (`sweep_core::effects::analyze`).
//!
//! Run: `cargo run --release -p sweep-coordinator --example report_bench -- [TRIALS]`
//! (default 10000). PostgreSQL too when SWEEP_BENCH_POSTGRES_URL is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use sweep_coordinator::store::{FinalOutcome, MetricRow, PostgresStore, SqliteStore, Store, TrialSummary};

use sweep_core::effects::{self, Factor, Observation};
use sweep_core::{Cell, Level, SweepResults};
use sweep_proto::v1 as pb;

#[path = "common/bench_grid.rs"]
mod bench_grid;
use bench_grid::grid;

async fn fill(store: &Arc<dyn Store>, trials: usize) -> (usize, Duration) {
    let t = Instant::now();
    let out = store.submit(&grid(trials), 1).await.unwrap();
    let mut n = 0usize;
    while let Some(lease) = store.lease("bench", 2, 3_600_000).await.unwrap() {
        let s = &lease.spec;
        let skip = s.level("skip").and_then(Level::as_bool).unwrap_or(true);
        let depth = s.level("depth").and_then(Level::as_f64).unwrap_or(0.0);
        let acc = 0.8 - if skip { 0.0 } else { depth / 200.0 } + (s.seed % 7) as f64 / 500.0;
        let mut points: Vec<MetricRow> = (1..=20)
            .map(|i| MetricRow { step: i * 100, epoch: 1, name: "train_loss".into(), value: 2.3 / i as f64 })
            .collect();
        for step in [100, 2000] {
            for b in ["stem", "block01", "block02", "fc1"] {
                points.push(MetricRow { step, epoch: 1, name: format!("grad_norm/{b}"), value: 0.1 + acc });
            }
        }
        store.put_metrics(&lease.lease_id, &points, None).await.unwrap();
        let summary = TrialSummary {
            final_train_loss: Some(1.0 - acc),
            final_test_loss: Some(1.1 - acc),
            final_test_accuracy: Some(acc),
            best_test_accuracy: Some(acc + 0.01),
            wall_seconds: 1.0,
        };
        store.complete(&lease.lease_id, FinalOutcome::Succeeded, &summary, 3).await.unwrap();
        n += 1;
    }
    assert_eq!(n as u64, out.total_trials);
    (n, t.elapsed())
}

/// The effects computation as the CLI does it: the response converted to
/// the domain once, one factor per cell key, levels as displayed.
fn effects_of(resp: &pb::AnalyzeResponse) -> usize {
    let results = SweepResults::try_from(resp.clone()).unwrap();
    let names: Vec<String> =
        results.trials.first().map(|t| t.cell.names().map(str::to_owned).collect()).unwrap_or_default();
    let level_of = |c: &Cell, n: &str| c.get(n).map(Level::display).unwrap_or_default();
    let factors: Vec<Factor> = names
        .iter()
        .map(|n| {
            let levels: BTreeSet<String> = results.trials.iter().map(|t| level_of(&t.cell, n)).collect();
            Factor::new(n.clone(), levels)
        })
        .collect();
    let obs: Vec<Observation> = results
        .trials
        .iter()
        .filter_map(|t| {
            Some(Observation {
                levels: names.iter().map(|n| level_of(&t.cell, n)).collect(),
                seed: t.seed,
                value: t.final_test_accuracy?,
            })
        })
        .collect();
    let opts = effects::Options { focus: vec!["skip".into()], ..Default::default() };
    let a = effects::analyze(&factors, &obs, &opts).unwrap();
    a.main_effects.len() + a.simple_effects.len() + a.paired.len()
}

async fn bench(backend: &'static str, store: Arc<dyn Store>, trials: usize) {
    let (n, fill_time) = fill(&store, trials).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sweep_coordinator::serve(
        store,
        sweep_coordinator::CoordinatorConfig::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ch = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut client =
        pb::analysis_service_client::AnalysisServiceClient::new(ch).max_decoding_message_size(256 * 1024 * 1024);
    let mut best = [Duration::MAX; 3];
    let mut sizes = (0, 0, 0);
    for _ in 0..3 {
        let t = Instant::now();
        let plain = client
            .analyze(pb::AnalyzeRequest {
                sweep_id: "bench".into(),
                curve_metrics: vec![],
                grad_flow: false,
                live: false,
            })
            .await
            .unwrap()
            .into_inner();
        best[0] = best[0].min(t.elapsed());
        let t = Instant::now();
        let rows = effects_of(&plain);
        best[1] = best[1].min(t.elapsed());
        let t = Instant::now();
        let full = client
            .analyze(pb::AnalyzeRequest {
                sweep_id: "bench".into(),
                curve_metrics: vec!["train_loss".into()],
                grad_flow: true,
                live: false,
            })
            .await
            .unwrap()
            .into_inner();
        best[2] = best[2].min(t.elapsed());
        sizes = (full.curves.len(), full.grad_flow.len(), rows);
    }
    let _ = stop.send(());
    let _ = server.await;
    println!(
        "| {backend} | {n} | {:.1} s | {:.0} ms | {:.0} ms | {:.0} ms | {} curve points, {} grad-flow points, {} effect rows |",
        fill_time.as_secs_f64(),
        best[0].as_secs_f64() * 1e3,
        best[1].as_secs_f64() * 1e3,
        best[2].as_secs_f64() * 1e3,
        sizes.0,
        sizes.1,
        sizes.2
    );
}

#[tokio::main]
async fn main() {
    let trials: usize = std::env::args().nth(1).map(|a| a.parse().expect("TRIALS")).unwrap_or(10_000);
    println!("| backend | trials | fill (lease+metrics+complete) | Analyze (trial rows) | effects (client) | Analyze + curves + grad flow | sizes |");
    println!("|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench("SQLite", Arc::new(SqliteStore::open(&url).await.unwrap()), trials).await;
    if let Ok(pg) = std::env::var("SWEEP_BENCH_POSTGRES_URL") {
        let store = PostgresStore::open(&pg).await.unwrap();
        // A clean slate: the bench sweep must not exist yet.
        bench("PostgreSQL", Arc::new(store), trials).await;
    }
}
