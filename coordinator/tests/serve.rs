//! The coordinator as a real gRPC server on 127.0.0.1:0: health,
//! reflection, and input validation at the edge.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sweep_coordinator::store::Store;
use sweep_proto::v1 as pb;
use tonic::Code;

struct Server {
    url: String,
    store: Arc<dyn Store>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let (dir, store) = common::temp_sqlite_store().await;
    let (listener, addr) = common::loopback_listener().await;
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
        let resp =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service}");
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
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
    let depth = |wire: &mut pb::GridSpec, d: i64| {
        let f = wire.factors.iter_mut().find(|f| f.name == "depth").expect("a depth factor");
        f.levels = vec![(&sweep_core::Level::Int(d)).into()];
    };
    depth(&mut wire, 12);
    let err = client.submit(pb::SubmitRequest { spec: Some(wire.clone()) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("depth"), "{}", err.message());
    depth(&mut wire, 8);
    wire.seeds.clear();
    assert_eq!(client.submit(pb::SubmitRequest { spec: Some(wire) }).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(client.submit(pb::SubmitRequest { spec: None }).await.unwrap_err().code(), Code::InvalidArgument);
    assert!(server.store.status(None).await.unwrap().is_empty(), "an invalid submit stored something");

    // Unknown sweeps.
    let mut analysis = pb::analysis_service_client::AnalysisServiceClient::new(channel(&server.url).await);
    let nf = analysis
        .analyze(pb::AnalyzeRequest { sweep_id: "nope".into(), curve_metrics: vec![], grad_flow: false, live: false })
        .await
        .unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
    assert_eq!(
        client.cancel(pb::CancelRequest { sweep_id: "".into() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Worker calls under a lease that does not exist.
    let hb =
        worker.heartbeat(pb::HeartbeatRequest { lease_id: "0123abcd".into(), ..Default::default() }).await.unwrap();
    assert_eq!(hb.into_inner().directive, pb::Directive::LeaseLost as i32);
    let bad = worker
        .heartbeat(pb::HeartbeatRequest { lease_id: "'; DROP TABLE trials; --".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let c = worker
        .complete(pb::CompleteRequest {
            last_batch: None,
            provenance: None,
            lease_id: "0123abcd".into(),
            outcome: pb::Outcome::Succeeded as i32,
            summary: None,
            worker_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(c.code(), Code::FailedPrecondition);
    let c = worker
        .complete(pb::CompleteRequest {
            last_batch: None,
            provenance: None,
            lease_id: "0123abcd".into(),
            outcome: 99,
            summary: None,
            worker_id: String::new(),
        })
        .await
        .unwrap_err();
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
        let batch = pb::MetricBatch {
            lease_id: a.lease_id.clone(),
            seq: 1,
            points: vec![point],
            truncate_after: None,
            checkpoint_step: None,
        };
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
    let mut acks = worker
        .push_metrics(tokio_stream::iter(vec![good.clone(), pb::MetricBatch { seq: 2, ..good }]))
        .await
        .unwrap()
        .into_inner();
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
    let spec =
        sweep_core::GridSpec::parse(&GRID.replace("seeds = 1", "seeds = 4"), std::path::Path::new("/g.toml")).unwrap();
    client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap();
    let lease =
        |id: &str| pb::LeaseRequest { worker_id: id.into(), device: "cpu".into(), wait_ms: 0, ..Default::default() };
    // Default quarantine_after = 5: the broken node fails five in a row.
    for _ in 0..5 {
        let a = worker.lease(lease("broken-node")).await.unwrap().into_inner().assignment.unwrap();
        worker
            .fail(pb::FailRequest {
                lease_id: a.lease_id,
                reason: "CUDA error: no kernel image".into(),
                worker_id: "broken-node".into(),
            })
            .await
            .unwrap();
    }
    let refused = worker.lease(lease("broken-node")).await.unwrap_err();
    // Its own code (error.rs), not a lost lease's FAILED_PRECONDITION.
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("quarantined"), "{}", refused.message());
    // Healthy workers still get the work.
    let a = worker.lease(lease("healthy-node")).await.unwrap().into_inner().assignment;
    assert!(a.is_some(), "other workers keep working");
    let failures: u32 = server.store.trials("edge").await.unwrap().iter().map(|t| t.failures).sum();
    assert_eq!(failures, 5, "each failure was recorded against its trial");
}

/// A running coordinator with one leased trial: (server, worker client, assignment).
async fn one_lease(
) -> (Server, pb::worker_service_client::WorkerServiceClient<tonic::transport::Channel>, pb::Assignment) {
    let server = start().await;
    let ch = channel(&server.url).await;
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch.clone());
    let mut worker = pb::worker_service_client::WorkerServiceClient::new(ch);
    let spec = sweep_core::GridSpec::parse(
        &GRID.replace("[data]", "[run]\nkeep_weights = true\n[data]"),
        std::path::Path::new("/g.toml"),
    )
    .unwrap();
    client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap();
    let a = worker
        .lease(pb::LeaseRequest {
            worker_id: "w".into(),
            device: "cuda:0".into(),
            wait_ms: 0,
            threads: 3,
            max_trials: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .assignment
        .expect("a trial is queued");
    (server, worker, a)
}

#[tokio::test]
async fn results_outside_their_domain_are_refused() {
    let (server, mut worker, a) = one_lease().await;
    let good = pb::TrialSummary {
        final_train_loss: Some(0.9),
        final_test_loss: Some(1.2),
        final_test_accuracy: Some(0.42),
        best_test_accuracy: Some(0.45),
        wall_seconds: 12.0,
    };
    let bad: Vec<(&str, pb::TrialSummary)> = vec![
        ("accuracy 42.0", pb::TrialSummary { final_test_accuracy: Some(42.0), ..good }),
        ("negative accuracy", pb::TrialSummary { best_test_accuracy: Some(-0.1), ..good }),
        ("NaN accuracy", pb::TrialSummary { final_test_accuracy: Some(f64::NAN), ..good }),
        ("negative loss", pb::TrialSummary { final_train_loss: Some(-1.0), ..good }),
        ("infinite loss on success", pb::TrialSummary { final_test_loss: Some(f64::INFINITY), ..good }),
        ("NaN wall seconds", pb::TrialSummary { wall_seconds: f64::NAN, ..good }),
        ("negative wall seconds", pb::TrialSummary { wall_seconds: -1.0, ..good }),
        ("wall seconds 1e9", pb::TrialSummary { wall_seconds: 1e9, ..good }),
    ];
    for (what, s) in bad {
        let req = pb::CompleteRequest {
            last_batch: None,
            provenance: None,
            lease_id: a.lease_id.clone(),
            outcome: pb::Outcome::Succeeded as i32,
            summary: Some(s),
            worker_id: "w".into(),
        };
        let err = worker.complete(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains("summary."), "{what}: names the field: {}", err.message());
    }
    let t = &server.store.trials("edge").await.unwrap()[0];
    assert_eq!(t.state, sweep_coordinator::store::TrialState::Running, "no refused result was stored");

    let point =
        |step: i64, epoch: u32, name: &str, value: f64| pb::MetricPoint { step, name: name.into(), value, epoch };
    let bad_batches: Vec<(&str, pb::MetricBatch)> = vec![
        (
            "step past 1e12",
            pb::MetricBatch { points: vec![point(1_000_000_000_001, 1, "train_loss", 1.0)], ..Default::default() },
        ),
        (
            "step i64::MAX",
            pb::MetricBatch { points: vec![point(i64::MAX, 1, "train_loss", 1.0)], ..Default::default() },
        ),
        (
            "epoch past 1e6",
            pb::MetricBatch { points: vec![point(1, 1_000_001, "train_loss", 1.0)], ..Default::default() },
        ),
        ("accuracy 1.5", pb::MetricBatch { points: vec![point(1, 1, "test_accuracy", 1.5)], ..Default::default() }),
        (
            "class accuracy -0.5",
            pb::MetricBatch { points: vec![point(1, 1, "class_accuracy/3", -0.5)], ..Default::default() },
        ),
        (
            "infinite value",
            pb::MetricBatch { points: vec![point(1, 1, "train_loss", f64::INFINITY)], ..Default::default() },
        ),
        ("negative checkpoint step", pb::MetricBatch { checkpoint_step: Some(-1), ..Default::default() }),
        ("truncate past 1e12", pb::MetricBatch { truncate_after: Some(i64::MAX), ..Default::default() }),
    ];
    for (what, mut b) in bad_batches {
        b.lease_id = a.lease_id.clone();
        let mut acks = worker.push_metrics(tokio_stream::iter(vec![b])).await.unwrap().into_inner();
        let err = acks.message().await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    assert!(server.store.metrics(&a.trial_id).await.unwrap().is_empty(), "no refused point was stored");

    // Values at the edges of their domains are accepted.
    let edge = pb::MetricBatch {
        lease_id: a.lease_id.clone(),
        seq: 1,
        points: vec![point(1_000_000_000_000, 1_000_000, "test_accuracy", 1.0), point(0, 0, "train_loss", 0.0)],
        truncate_after: Some(0),
        checkpoint_step: Some(1_000_000_000_000),
    };
    let mut acks = worker.push_metrics(tokio_stream::iter(vec![edge])).await.unwrap().into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().stored, 2);
    // A diverged trial's non-finite loss is stored as absent, not refused.
    let diverged = pb::TrialSummary { final_train_loss: Some(f64::NAN), ..good };
    worker
        .complete(pb::CompleteRequest {
            last_batch: None,
            provenance: None,
            lease_id: a.lease_id.clone(),
            outcome: pb::Outcome::Diverged as i32,
            summary: Some(diverged),
            worker_id: "w".into(),
        })
        .await
        .unwrap();
    let t = &server.store.trials("edge").await.unwrap()[0];
    assert_eq!(
        (t.state, t.summary.final_train_loss, t.summary.final_test_accuracy),
        (sweep_coordinator::store::TrialState::Diverged, None, Some(0.42))
    );
}

#[tokio::test]
async fn strings_past_their_bounds_are_refused() {
    let server = start().await;
    let mut worker = pb::worker_service_client::WorkerServiceClient::new(channel(&server.url).await);
    let long = |n: usize| "x".repeat(n);
    for (what, req) in [
        (
            "worker_id of 129 bytes",
            pb::LeaseRequest { worker_id: long(129), device: "cpu".into(), ..Default::default() },
        ),
        ("empty worker_id", pb::LeaseRequest { worker_id: String::new(), device: "cpu".into(), ..Default::default() }),
        ("device of 33 bytes", pb::LeaseRequest { worker_id: "w".into(), device: long(33), ..Default::default() }),
        (
            "device with a NUL",
            pb::LeaseRequest { worker_id: "w".into(), device: "cuda:0\0".into(), ..Default::default() },
        ),
    ] {
        let err = worker.lease(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    assert!(worker
        .lease(pb::LeaseRequest { worker_id: long(128), device: long(32), ..Default::default() })
        .await
        .is_ok());
    let err = worker
        .fail(pb::FailRequest { lease_id: "0123abcd".into(), reason: "r".into(), worker_id: long(129) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_assignment_carries_store_identity_vouched_step_and_provenance() {
    let (server, mut worker, a) = one_lease().await;
    assert_eq!(a.store_id, server.store.store_id(), "the assignment names this database");
    assert_eq!(a.resume_step, None, "nothing vouched yet: start from scratch");
    assert!(a.keep_weights, "the grid's [run] keep_weights");
    // A checkpoint barrier at step 40, then the trial is handed back.
    let b = pb::MetricBatch {
        lease_id: a.lease_id.clone(),
        seq: 1,
        points: vec![pb::MetricPoint { step: 40, name: "train_loss".into(), value: 1.5, epoch: 1 }],
        truncate_after: Some(0),
        checkpoint_step: Some(40),
    };
    let mut acks = worker.push_metrics(tokio_stream::iter(vec![b])).await.unwrap().into_inner();
    acks.message().await.unwrap().unwrap();
    worker.release(pb::ReleaseRequest { lease_id: a.lease_id.clone(), reason: "SIGTERM".into() }).await.unwrap();
    let again = worker
        .lease(pb::LeaseRequest { worker_id: "w2".into(), device: "cpu".into(), wait_ms: 0, threads: 3, max_trials: 1 })
        .await
        .unwrap()
        .into_inner()
        .assignment
        .unwrap();
    assert_eq!((again.trial_id.as_str(), again.resume_step), (a.trial_id.as_str(), Some(40)));
    let diverged_at = pb::MetricBatch {
        lease_id: again.lease_id.clone(),
        seq: 1,
        points: vec![pb::MetricPoint { step: 57, name: "diverged_step".into(), value: 57.0, epoch: 2 }],
        ..Default::default()
    };
    let mut acks = worker.push_metrics(tokio_stream::iter(vec![diverged_at])).await.unwrap().into_inner();
    acks.message().await.unwrap().unwrap();
    worker
        .complete(pb::CompleteRequest {
            last_batch: None,
            provenance: None,
            lease_id: again.lease_id,
            outcome: pb::Outcome::Diverged as i32,
            summary: None,
            worker_id: "w2".into(),
        })
        .await
        .unwrap();

    let mut analysis = pb::analysis_service_client::AnalysisServiceClient::new(channel(&server.url).await);
    let resp = analysis
        .analyze(pb::AnalyzeRequest { sweep_id: "edge".into(), curve_metrics: vec![], grad_flow: false, live: false })
        .await
        .unwrap()
        .into_inner();
    let t = resp.trials.iter().find(|t| t.state == pb::TrialState::Diverged as i32).expect("the diverged trial");
    let c = &resp.contexts[t.context as usize];
    assert_eq!((c.device.as_str(), c.threads, t.diverged_step, t.train_images_used), ("cpu", 3, Some(57), None));
}

#[tokio::test]
async fn a_group_lease_answers_one_assignment_and_the_rest_fused() {
    let server = start().await;
    let ch = channel(&server.url).await;
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch.clone());
    let mut worker = pb::worker_service_client::WorkerServiceClient::new(ch);
    // One cell x 4 seeds.
    let grid = GRID.replace("skip = [true, false]", "skip = true").replace("seeds = 1", "seeds = 4");
    let spec = sweep_core::GridSpec::parse(&grid, std::path::Path::new("/g.toml")).unwrap();
    client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap();
    let req = |max_trials: u32| pb::LeaseRequest {
        worker_id: "fused".into(),
        device: "cuda:0".into(),
        wait_ms: 0,
        threads: 2,
        max_trials,
    };

    // Over the bound: refused, naming the value and the limit; nothing leased.
    let err = worker.lease(req(100_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("max_trials") && err.message().contains("100000"), "{}", err.message());
    assert!(err.message().contains(&sweep_coordinator::bounds::LEASE_GROUP_MAX.to_string()), "{}", err.message());
    assert_eq!(server.store.status(Some("edge")).await.unwrap()[0].counts.queued, 4);

    let answer = worker.lease(req(4)).await.unwrap().into_inner();
    let first = answer.assignment.expect("a trial is queued");
    assert_eq!(answer.fused.len(), 3, "the other three seeds come fused");
    let all: Vec<&pb::Assignment> = std::iter::once(&first).chain(&answer.fused).collect();
    let trials: std::collections::HashSet<&str> = all.iter().map(|a| a.trial_id.as_str()).collect();
    let leases: std::collections::HashSet<&str> = all.iter().map(|a| a.lease_id.as_str()).collect();
    assert_eq!((trials.len(), leases.len()), (4, 4), "distinct trials, each under its own lease");
    let want: std::collections::HashSet<String> = spec.expand().iter().map(|t| t.id("edge").0).collect();
    assert_eq!(trials, want.iter().map(String::as_str).collect());
    let group_of = |a: &pb::Assignment| a.spec.clone().map(|s| (s.cell, s.train, s.data));
    for a in &all {
        assert_eq!(group_of(a), group_of(&first), "one cell, one set of settings");
        assert_eq!((a.sweep_id.as_str(), a.attempt, a.resume_step), ("edge", 1, None));
        assert_eq!(a.store_id, server.store.store_id());
        assert!(a.lease_ttl_ms > 0 && a.heartbeat_interval_ms > 0);
    }
    // The rest of the protocol is per trial: a fused trial heartbeats and
    // completes under its own lease.
    let hb = worker
        .heartbeat(pb::HeartbeatRequest { lease_id: answer.fused[1].lease_id.clone(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(hb.into_inner().directive, pb::Directive::Continue as i32);
    let nothing = worker.lease(req(4)).await.unwrap().into_inner();
    assert!(nothing.assignment.is_none() && nothing.fused.is_empty(), "all four are held");
    // An old worker's request (max_trials 0) still gets one trial.
    worker.release(pb::ReleaseRequest { lease_id: first.lease_id.clone(), reason: "SIGTERM".into() }).await.unwrap();
    worker
        .release(pb::ReleaseRequest { lease_id: answer.fused[0].lease_id.clone(), reason: "SIGTERM".into() })
        .await
        .unwrap();
    let old = worker.lease(req(0)).await.unwrap().into_inner();
    assert!(old.assignment.is_some() && old.fused.is_empty(), "{old:?}");
}

/// A result's provenance is bounded, stored with it, and a Complete retried
/// with it (its first answer lost) is answered like any retried Complete.
#[tokio::test]
async fn a_results_provenance_is_stored_and_a_retried_complete_with_it_succeeds() {
    let (server, mut worker, a) = one_lease().await;
    let summary = pb::TrialSummary { final_test_accuracy: Some(0.5), wall_seconds: 1.0, ..Default::default() };
    let provenance = pb::Provenance {
        code_version: "0.1.0 (g1a2b3c)".into(),
        libtorch: "2.11.0".into(),
        device_name: "Test CPU".into(),
        dataset_sha256: "ab".repeat(32),
    };
    let complete = |p: pb::Provenance| pb::CompleteRequest {
        last_batch: None,
        provenance: Some(p),
        lease_id: a.lease_id.clone(),
        outcome: pb::Outcome::Succeeded as i32,
        summary: Some(summary),
        worker_id: "w".into(),
    };
    let long = pb::Provenance { device_name: "x".repeat(300), ..provenance.clone() };
    let err = worker.complete(complete(long)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("provenance.device_name"), "{}", err.message());
    let control = pb::Provenance { code_version: "0.1\n0".into(), ..provenance.clone() };
    assert_eq!(worker.complete(complete(control)).await.unwrap_err().code(), Code::InvalidArgument);

    worker.complete(complete(provenance.clone())).await.unwrap();
    worker.complete(complete(provenance.clone())).await.expect("a retried Complete is answered, provenance or not");
    let results = server.store.trial_results("edge").await.unwrap();
    let done = results.iter().find(|t| t.state == sweep_coordinator::store::TrialState::Succeeded).unwrap();
    assert_eq!(*done.provenance, sweep_core::Provenance::from(provenance));
}

#[tokio::test]
async fn a_complete_carrying_its_last_batch_stores_both_or_refuses_both() {
    let server = start().await;
    let ch = channel(&server.url).await;
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch.clone());
    let mut worker = pb::worker_service_client::WorkerServiceClient::new(ch);
    let spec = sweep_core::GridSpec::parse(GRID, std::path::Path::new("edge.toml")).unwrap();
    client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap();
    let a = worker
        .lease(pb::LeaseRequest { worker_id: "w".into(), device: "cpu".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .assignment
        .expect("a trial is queued");
    let point = |step, value| pb::MetricPoint { step, name: "train_loss".into(), value, epoch: 1 };
    let complete = |batch: pb::MetricBatch| pb::CompleteRequest {
        lease_id: a.lease_id.clone(),
        outcome: pb::Outcome::Succeeded as i32,
        summary: Some(pb::TrialSummary { final_test_accuracy: Some(0.5), ..Default::default() }),
        worker_id: "w".into(),
        provenance: None,
        last_batch: Some(batch),
    };
    // Refused at the edge: nothing stored, the trial still runs.
    for (what, batch) in [
        (
            "another lease",
            pb::MetricBatch { lease_id: "0123abcd".into(), points: vec![point(1, 1.0)], ..Default::default() },
        ),
        ("a NaN point", pb::MetricBatch { points: vec![point(1, f64::NAN)], ..Default::default() }),
        (
            "too many points",
            pb::MetricBatch { points: (1..=20_000).map(|s| point(s, 1.0)).collect(), ..Default::default() },
        ),
    ] {
        let err = worker.complete(complete(batch)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    assert!(server.store.metrics(&a.trial_id).await.unwrap().is_empty());
    assert_eq!(server.store.trials("edge").await.unwrap()[0].state, sweep_coordinator::store::TrialState::Running);

    // Accepted: the points and the result together; a retry adds nothing.
    let good =
        pb::MetricBatch { points: vec![point(1, 2.0), point(2, 1.0)], checkpoint_step: Some(2), ..Default::default() };
    worker.complete(complete(good.clone())).await.unwrap();
    worker.complete(complete(good)).await.unwrap();
    let stored: Vec<(i64, f64)> =
        server.store.metrics(&a.trial_id).await.unwrap().iter().map(|p| (p.step, p.value)).collect();
    assert_eq!(stored, vec![(1, 2.0), (2, 1.0)]);
    let t = server.store.trials("edge").await.unwrap().into_iter().find(|t| t.trial_id == a.trial_id).unwrap();
    assert_eq!((t.state, t.checkpoint_step), (sweep_coordinator::store::TrialState::Succeeded, Some(2)));
}
