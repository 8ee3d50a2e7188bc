//! The calls on a running lease besides its metrics: heartbeats while the
//! trial runs ([`heartbeats`]), and the call that ends the lease
//! ([`complete`], [`fail`] or [`release`]), each retried until it lands, is
//! refused, ten minutes pass, or the shutdown grace period is over.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sweep_proto::v1 as pb;

use crate::daemon::{Client, Shutdown, WorkerConfig};
use crate::retry::{transient, verdict, Backoff, Verdict};
use crate::trainer::{StopFlag, StopReason, TrialSummary};

/// Renews the lease every `every` until aborted; turns the coordinator's
/// directives into stop requests.
pub(crate) async fn heartbeats(
    client: Client,
    progress: Arc<Mutex<pb::HeartbeatRequest>>,
    stop: StopFlag,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let req = progress.lock().map(|p| p.clone()).unwrap_or_default();
        match client.clone().heartbeat(req).await {
            Ok(r) => match pb::Directive::try_from(r.into_inner().directive) {
                Ok(pb::Directive::Cancel) => {
                    tracing::info!("sweep cancelled: stopping the trial");
                    stop.stop(StopReason::Cancelled);
                    return;
                }
                Ok(pb::Directive::LeaseLost) => {
                    tracing::warn!("lease lost (expired and re-queued): abandoning the trial");
                    stop.stop(StopReason::LeaseLost);
                    return;
                }
                _ => {}
            },
            Err(s) => tracing::warn!(code = ?s.code(), message = %s.message(), "heartbeat failed; will retry"),
        }
    }
}

/// How a finishing call ended when it did not land.
enum NotDone {
    /// The coordinator answered with this error (not worth retrying).
    Refused(tonic::Status),
    /// Ten minutes of retries, or the shutdown grace period, ran out.
    GaveUp,
}

/// Retries a finishing call until it lands, the request is refused, ten
/// minutes pass, or the shutdown grace period is over.
async fn finish<F, Fut>(what: &str, sd: &Shutdown, mut call: F) -> Result<(), NotDone>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let attempt = async {
        let mut backoff = Backoff::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            match call().await {
                Ok(()) => return Ok(()),
                Err(s) if transient(s.code()) && Instant::now() < deadline => {
                    tracing::warn!(code = ?s.code(), "{what} failed; retrying");
                    backoff.wait().await;
                }
                Err(s) if transient(s.code()) => {
                    tracing::warn!(code = ?s.code(), message = %s.message(), "{what} failed for ten minutes; giving up");
                    return Err(NotDone::GaveUp);
                }
                Err(s) => {
                    tracing::warn!(code = ?s.code(), message = %s.message(), "{what} refused");
                    return Err(NotDone::Refused(s));
                }
            }
        }
    };
    match sd.bounded(attempt).await {
        Some(r) => r,
        None => {
            tracing::warn!("{what}: the coordinator did not answer within the shutdown grace period; giving up");
            Err(NotDone::GaveUp)
        }
    }
}

pub(crate) async fn complete(
    client: &Client,
    config: &WorkerConfig,
    lease: &str,
    outcome: pb::Outcome,
    s: &TrialSummary,
    sd: &Shutdown,
) -> bool {
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    let req = pb::CompleteRequest {
        last_batch: None,
        provenance: Some(crate::provenance::of_result(&config.device, s.dataset_sha256.as_deref())),
        worker_id: config.worker_id.clone(),
        lease_id: lease.to_owned(),
        outcome: outcome as i32,
        summary: Some(pb::TrialSummary {
            final_train_loss: finite(s.final_train_loss),
            final_test_loss: finite(s.final_test_loss),
            final_test_accuracy: finite(s.final_test_accuracy),
            best_test_accuracy: finite(s.best_test_accuracy),
            wall_seconds: if s.wall_seconds.is_finite() { s.wall_seconds.max(0.0) } else { 0.0 },
        }),
    };
    let r = finish("complete", sd, || {
        let mut c = client.clone();
        let req = req.clone();
        async move { c.complete(req).await.map(|_| ()) }
    })
    .await;
    match r {
        Ok(()) => {
            tracing::info!(outcome = ?outcome, test_accuracy = ?s.final_test_accuracy, "trial finished");
            true
        }
        // A result the coordinator will never accept: fail the trial with
        // the reason rather than leave its lease to expire.
        Err(NotDone::Refused(st)) if verdict(st.code()) == Verdict::Refused => {
            let why = format!("the coordinator refused the trial's result ({:?}: {})", st.code(), st.message());
            fail(client, config, lease, &why, sd).await;
            false
        }
        Err(_) => false,
    }
}

pub(crate) async fn fail(client: &Client, config: &WorkerConfig, lease: &str, reason: &str, sd: &Shutdown) {
    tracing::warn!(reason, "trial failed");
    let req = pb::FailRequest {
        lease_id: lease.to_owned(),
        reason: bounded_text(reason, MAX_REASON_CHARS),
        worker_id: config.worker_id.clone(),
    };
    let _ = finish("fail", sd, || {
        let mut c = client.clone();
        let req = req.clone();
        async move { c.fail(req).await.map(|_| ()) }
    })
    .await;
}

pub(crate) async fn release(client: &Client, lease: &str, reason: &str, sd: &Shutdown) {
    tracing::info!(reason, "handing the trial back");
    let req = pb::ReleaseRequest { lease_id: lease.to_owned(), reason: reason.to_owned() };
    let _ = finish("release", sd, || {
        let mut c = client.clone();
        let req = req.clone();
        async move { c.release(req).await.map(|_| ()) }
    })
    .await;
}

/// Longest failure reason sent to the coordinator (it bounds stored text).
const MAX_REASON_CHARS: usize = 1000;

/// `s` cut to at most `max` characters, marked when cut.
fn bounded_text(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}...", &s[..i]),
    }
}
