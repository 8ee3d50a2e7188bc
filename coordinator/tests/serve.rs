//! The coordinator as a real gRPC server on 127.0.0.1:0: health,
//! reflection, and input validation at the edge.

use std::sync::Arc;
use std::time::Duration;

use sweep_coordinator::store::{SqliteStore, Store};
use sweep_proto::v1 as pb;
use tonic::Code;

struct Server {
    url: String,
    store: Arc<dyn Store>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = store.clone();
    tokio::spawn(sweep_coordinator::serve(s, Default::default(), listener, async {
        let _ = rx.await;
    }));
    Server { url: format!("http://{addr}"), store, _stop: tx, _dir: dir }
}

async fn channel(url: &str) -> tonic::transport::Channel {
    for _ in 0..50 {
        if let Ok(c) = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not come up at {url}");
}

const GRID: &str = r#"
name = "edge"
seeds = 1
[grid]
depth = 8
skip = [true, false]
init = "default"
batchnorm = true
[data]
path = "/data"
"#;

#[tokio::test]
async fn health_and_reflection_answer() {
    let server = start().await;
    let ch = channel(&server.url).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["sweep.v1.SweepService", "sweep.v1.WorkerService"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service}");
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("{msg:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["sweep.v1.SweepService", "sweep.v1.WorkerService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}

#[tokio::test]
async fn invalid_wire_input_is_refused_and_stores_nothing() {
    let server = start().await;
    let ch = channel(&server.url).await;
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch.clone());
    let mut worker = pb::worker_service_client::WorkerServiceClient::new(ch);

    // A grid that the CLI would never send: depth 12, no seeds.
    let spec = sweep_core::GridSpec::parse(GRID, std::path::Path::new("/g.toml")).unwrap();
    let mut wire: pb::GridSpec = (&spec).into();
    wire.grid.as_mut().unwrap().depth = vec![12];
    let err = client.submit(pb::SubmitRequest { spec: Some(wire.clone()) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("depth"), "{}", err.message());
    wire.grid.as_mut().unwrap().depth = vec![8];
    wire.seeds.clear();
    assert_eq!(client.submit(pb::SubmitRequest { spec: Some(wire) }).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(client.submit(pb::SubmitRequest { spec: None }).await.unwrap_err().code(), Code::InvalidArgument);
    assert!(server.store.status(None).await.unwrap().is_empty(), "an invalid submit stored something");

    // Unknown sweeps.
    let nf = client.report(pb::ReportRequest { sweep_id: "nope".into() }).await.unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
    assert_eq!(client.cancel(pb::CancelRequest { sweep_id: "".into() }).await.unwrap_err().code(), Code::InvalidArgument);

    // Worker calls under a lease that does not exist.
    let hb = worker.heartbeat(pb::HeartbeatRequest { lease_id: "0123abcd".into(), ..Default::default() }).await.unwrap();
    assert_eq!(hb.into_inner().directive, pb::Directive::LeaseLost as i32);
    let bad = worker.heartbeat(pb::HeartbeatRequest { lease_id: "'; DROP TABLE trials; --".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let c = worker.complete(pb::CompleteRequest { lease_id: "0123abcd".into(), outcome: pb::Outcome::Succeeded as i32, summary: None, worker_id: String::new() }).await.unwrap_err();
    assert_eq!(c.code(), Code::FailedPrecondition);
    let c = worker.complete(pb::CompleteRequest { lease_id: "0123abcd".into(), outcome: 99, summary: None, worker_id: String::new() }).await.unwrap_err();
    assert_eq!(c.code(), Code::InvalidArgument);

    // A real lease, then bad metric batches: refused, nothing stored.
    client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap();
    let a = worker
        .lease(pb::LeaseRequest { worker_id: "w".into(), device: "cpu".into(), wait_ms: 0, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .assignment
        .expect("a trial is queued");
    for (what, point) in [
        ("NaN value", pb::MetricPoint { step: 1, name: "train_loss".into(), value: f64::NAN, epoch: 1 }),
        ("negative step", pb::MetricPoint { step: -1, name: "train_loss".into(), value: 1.0, epoch: 1 }),
        ("empty name", pb::MetricPoint { step: 1, name: "".into(), value: 1.0, epoch: 1 }),
    ] {
        let batch = pb::MetricBatch { lease_id: a.lease_id.clone(), seq: 1, points: vec![point], truncate_after: None, checkpoint_step: None };
        let mut acks = worker.push_metrics(tokio_stream::iter(vec![batch])).await.unwrap().into_inner();
        let err = acks.message().await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    assert!(server.store.metrics(&a.trial_id).await.unwrap().is_empty());

    // A good batch sent twice is stored once.
    let good = pb::MetricBatch {
        lease_id: a.lease_id.clone(),
        seq: 1,
        points: vec![pb::MetricPoint { step: 1, name: "train_loss".into(), value: 2.0, epoch: 1 }],
        truncate_after: None,
        checkpoint_step: None,
    };
    let mut acks = worker.push_metrics(tokio_stream::iter(vec![good.clone(), pb::MetricBatch { seq: 2, ..good }])).await.unwrap().into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap(), pb::MetricAck { seq: 1, stored: 1 });
    assert_eq!(acks.message().await.unwrap().unwrap(), pb::MetricAck { seq: 2, stored: 0 });
    assert_eq!(server.store.metrics(&a.trial_id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_worker_failing_trial_after_trial_is_quarantined() {
    let server = start().await;
    let ch = channel(&server.url).await;
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch.clone());
    let mut worker = pb::worker_service_client::WorkerServiceClient::new(ch);
    let spec = sweep_core::GridSpec::parse(&GRID.replace("seeds = 1", "seeds = 4"), std::path::Path::new("/g.toml")).unwrap();
    client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap();
    let lease = |id: &str| pb::LeaseRequest { worker_id: id.into(), device: "cpu".into(), wait_ms: 0, ..Default::default() };
    // Default quarantine_after = 5: the broken node fails five in a row.
    for _ in 0..5 {
        let a = worker.lease(lease("broken-node")).await.unwrap().into_inner().assignment.unwrap();
        worker
            .fail(pb::FailRequest { lease_id: a.lease_id, reason: "CUDA error: no kernel image".into(), worker_id: "broken-node".into() })
            .await
            .unwrap();
    }
    let refused = worker.lease(lease("broken-node")).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("quarantined"), "{}", refused.message());
    // Healthy workers still get the work.
    let a = worker.lease(lease("healthy-node")).await.unwrap().into_inner().assignment;
    assert!(a.is_some(), "other workers keep working");
    let failures: u32 = server.store.trials("edge").await.unwrap().iter().map(|t| t.failures).sum();
    assert_eq!(failures, 5, "each failure was recorded against its trial");
}
