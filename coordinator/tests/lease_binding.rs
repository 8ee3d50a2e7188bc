//! A lease belongs to the worker identity that took it, and quarantine is
//! kept in the database (issue 8, acceptance 7). Real coordinators over
//! 127.0.0.1:0, real tokens, a real SQLite file that outlives a coordinator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sweep_coordinator::auth::{Auth, Tokens};
use sweep_coordinator::store::{self, Store, TrialState};
use sweep_coordinator::Security;
use sweep_proto::client::{AuthChannel, ClientSecurity};
use sweep_proto::v1 as pb;
use tonic::Code;

const WORKER_A: &str = "worker-token-a-0123456789abcdef";
const WORKER_B: &str = "worker-token-b-0123456789abcdef";
const CLIENT: &str = "client-token-0123456789abcdef";

type Worker = pb::worker_service_client::WorkerServiceClient<AuthChannel>;
type Client = pb::sweep_service_client::SweepServiceClient<AuthChannel>;

struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), sweep_coordinator::ServeError>>,
}

fn security() -> Security {
    Security {
        auth: Auth::new(Some(Tokens::new(vec![WORKER_A.into(), WORKER_B.into()], vec![CLIENT.into()]))),
        ..Default::default()
    }
}

async fn serve(store: Arc<dyn Store>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sweep_coordinator::serve_secure(store, Default::default(), security(), listener, async {
        let _ = rx.await;
    }));
    Running { url, stop, task }
}

async fn channel(url: &str, token: &str) -> AuthChannel {
    let sec = ClientSecurity { token: Some(token.into()), ..Default::default() };
    for _ in 0..100 {
        if let Ok(ch) = sec.endpoint(url).unwrap().connect().await {
            return tonic::service::interceptor::InterceptedService::new(ch, sec.interceptor().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator did not come up at {url}");
}

async fn worker(url: &str, token: &str) -> Worker {
    Worker::new(channel(url, token).await)
}

async fn submit(url: &str) {
    let spec = common::grid_spec("bound", 10, "[8, 16]", "/data");
    Client::new(channel(url, CLIENT).await).submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap();
}

fn lease_req(id: &str) -> pb::LeaseRequest {
    pb::LeaseRequest { worker_id: id.into(), device: "cpu".into(), wait_ms: 0, threads: 2, max_trials: 1 }
}

async fn lease(w: &mut Worker, id: &str) -> pb::Assignment {
    w.lease(lease_req(id)).await.unwrap().into_inner().assignment.expect("a queued trial")
}

fn batch(lease: &str) -> pb::MetricBatch {
    pb::MetricBatch {
        lease_id: lease.into(),
        seq: 1,
        points: vec![pb::MetricPoint { step: 1, name: "train_loss".into(), value: 2.0, epoch: 1 }],
        truncate_after: Some(0),
        checkpoint_step: None,
    }
}

fn summary() -> pb::TrialSummary {
    pb::TrialSummary {
        final_train_loss: Some(1.0),
        final_test_loss: Some(1.1),
        final_test_accuracy: Some(0.4),
        best_test_accuracy: Some(0.45),
        wall_seconds: 3.0,
    }
}

#[tokio::test]
async fn another_workers_token_cannot_act_on_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).await.unwrap();
    let server = serve(store.clone()).await;
    submit(&server.url).await;
    let mut a = worker(&server.url, WORKER_A).await;
    let mut b = worker(&server.url, WORKER_B).await;
    let held = lease(&mut a, "node-a").await;
    let l = held.lease_id.clone();

    let denied = |what: &str, r: Result<(), tonic::Status>| match r {
        Err(s) if s.code() == Code::PermissionDenied => {
            assert!(
                !s.message().contains(WORKER_A) && !s.message().contains(WORKER_B),
                "no token echoed: {}",
                s.message()
            );
        }
        other => panic!("{what} with another worker's token: expected PERMISSION_DENIED, got {other:?}"),
    };
    denied(
        "heartbeat",
        b.heartbeat(pb::HeartbeatRequest { lease_id: l.clone(), epoch: 1, step: 5, last_loss: None }).await.map(|_| ()),
    );
    let push = b.push_metrics(tokio_stream::iter(vec![batch(&l)])).await;
    denied(
        "push_metrics",
        match push {
            Ok(acks) => acks.into_inner().message().await.map(|_| ()),
            Err(s) => Err(s),
        },
    );
    let complete = pb::CompleteRequest {
        last_batch: None,
        provenance: None,
        lease_id: l.clone(),
        outcome: pb::Outcome::Succeeded as i32,
        summary: Some(summary()),
        worker_id: "node-a".into(),
    };
    denied("complete", b.complete(complete.clone()).await.map(|_| ()));
    denied(
        "fail",
        b.fail(pb::FailRequest { lease_id: l.clone(), reason: "x".into(), worker_id: "node-a".into() })
            .await
            .map(|_| ()),
    );
    denied("release", b.release(pb::ReleaseRequest { lease_id: l.clone(), reason: "x".into() }).await.map(|_| ()));

    // Nothing B tried changed the trial.
    let t = store.trials("bound").await.unwrap().into_iter().find(|t| t.trial_id == held.trial_id).unwrap();
    assert_eq!((t.state, t.failures, t.handbacks), (TrialState::Running, 0, 0));
    assert!(store.metrics(&held.trial_id).await.unwrap().is_empty());

    // The holder itself gets through every call.
    let hb =
        a.heartbeat(pb::HeartbeatRequest { lease_id: l.clone(), epoch: 1, step: 5, last_loss: None }).await.unwrap();
    assert_eq!(hb.into_inner().directive, pb::Directive::Continue as i32);
    let mut acks = a.push_metrics(tokio_stream::iter(vec![batch(&l)])).await.unwrap().into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().stored, 1);
    a.complete(complete).await.unwrap();
    let t = store.trials("bound").await.unwrap().into_iter().find(|t| t.trial_id == held.trial_id).unwrap();
    assert_eq!(t.state, TrialState::Succeeded);

    // B's own leases work for B (and are refused to A).
    let mine = lease(&mut b, "node-b").await;
    b.release(pb::ReleaseRequest { lease_id: mine.lease_id.clone(), reason: "SIGTERM".into() }).await.unwrap();
    let again = lease(&mut b, "node-b").await;
    let r = a.fail(pb::FailRequest { lease_id: again.lease_id, reason: "x".into(), worker_id: "node-b".into() }).await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    let _ = server.stop.send(());
}

#[tokio::test]
async fn quarantine_survives_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = store::open(&url).await.unwrap();
    let server = serve(store.clone()).await;
    submit(&server.url).await;
    let mut a = worker(&server.url, WORKER_A).await;

    // A worker that fails four in a row and then completes one starts over.
    for _ in 0..4 {
        let t = lease(&mut a, "flaky-node").await;
        a.fail(pb::FailRequest { lease_id: t.lease_id, reason: "flaky".into(), worker_id: "flaky-node".into() })
            .await
            .unwrap();
    }
    let t = lease(&mut a, "flaky-node").await;
    a.complete(pb::CompleteRequest {
        last_batch: None,
        provenance: None,
        lease_id: t.lease_id,
        outcome: pb::Outcome::Succeeded as i32,
        summary: Some(summary()),
        worker_id: "flaky-node".into(),
    })
    .await
    .unwrap();

    // A broken node fails five in a row (default quarantine_after = 5).
    for _ in 0..5 {
        let t = lease(&mut a, "broken-node").await;
        // The worker ID a Fail call declares does not matter: the failure is
        // counted against the worker that took the lease.
        a.fail(pb::FailRequest { lease_id: t.lease_id, reason: "CUDA error".into(), worker_id: "someone-else".into() })
            .await
            .unwrap();
    }
    let refused = a.lease(lease_req("broken-node")).await.unwrap_err();
    // Quarantine has its own code (error.rs), not a lost lease's.
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("quarantined"), "{}", refused.message());
    assert!(
        a.lease(lease_req("someone-else")).await.unwrap().into_inner().assignment.is_some(),
        "only the failing worker is quarantined"
    );

    // Stop the coordinator completely (its store, and the file lock, go with it).
    drop(a);
    drop(store);
    let _ = server.stop.send(());
    tokio::time::timeout(Duration::from_secs(20), server.task).await.expect("coordinator stops").unwrap().unwrap();

    // A new coordinator on the same database still refuses the broken node.
    let store = store::open(&url).await.expect("the database is free again");
    let server = serve(store.clone()).await;
    let mut a = worker(&server.url, WORKER_A).await;
    let refused = a.lease(lease_req("broken-node")).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "a restart forgives nobody");
    assert!(refused.message().contains("quarantined"), "{}", refused.message());
    assert!(refused.message().contains("restart"), "says a restart does not lift it: {}", refused.message());
    // The flaky node (reset by its success) and other identities still work.
    assert!(a.lease(lease_req("flaky-node")).await.unwrap().into_inner().assignment.is_some());
    let mut b = worker(&server.url, WORKER_B).await;
    assert!(
        b.lease(lease_req("broken-node")).await.unwrap().into_inner().assignment.is_some(),
        "another identity is another worker"
    );
    let _ = server.stop.send(());
}
