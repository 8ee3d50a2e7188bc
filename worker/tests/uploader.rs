//! The metric [`Uploader`] on its own, against a real gRPC server on
//! 127.0.0.1 (a scripted `WorkerService` whose `PushMetrics` acknowledges,
//! withholds, breaks or refuses as each test needs): re-sends after a dropped
//! stream, the checkpoint barrier, non-finite points, permanent refusals and
//! `truncate_after` on the first batch (invariants 4, 10 and 11).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sweep_proto::client::BearerToken;
use sweep_proto::v1 as pb;
use sweep_proto::v1::worker_service_client::WorkerServiceClient;
use sweep_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use sweep_worker::trainer::{FlushAck, Metric, StopFlag, StopReason, TrainEvent};
use sweep_worker::uploader::{UploadEnd, Uploader};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

/// What the server does with the batches of a `PushMetrics` stream.
#[derive(Clone)]
enum Script {
    /// Acknowledges every batch.
    AckAll,
    /// On the first stream: acknowledges the first batch, then breaks the
    /// stream (`UNAVAILABLE`) on the second without acknowledging it. Later
    /// streams acknowledge everything.
    BreakFirstStreamAtSecondBatch,
    /// Acknowledges batches only once the gate is open (in order).
    Gated(watch::Receiver<bool>),
    /// Answers the first batch with this error.
    Refuse(Code),
}

/// Every batch received: (stream number from 1, batch).
type Received = Arc<Mutex<Vec<(usize, pb::MetricBatch)>>>;

#[derive(Clone)]
struct Server {
    script: Script,
    received: Received,
    streams: Arc<Mutex<usize>>,
}

type AckStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::MetricAck, Status>> + Send>>;

fn ack(b: &pb::MetricBatch) -> Result<pb::MetricAck, Status> {
    Ok(pb::MetricAck { seq: b.seq, stored: b.points.len() as u64 })
}

#[tonic::async_trait]
impl WorkerService for Server {
    async fn lease(&self, _: Request<pb::LeaseRequest>) -> Result<Response<pb::LeaseResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    type PushMetricsStream = AckStream;
    async fn push_metrics(&self, req: Request<Streaming<pb::MetricBatch>>) -> Result<Response<AckStream>, Status> {
        let stream_no = {
            let mut n = self.streams.lock().unwrap();
            *n += 1;
            *n
        };
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            let mut n_in_stream = 0;
            while let Some(Ok(batch)) = incoming.next().await {
                n_in_stream += 1;
                this.received.lock().unwrap().push((stream_no, batch.clone()));
                let answer = match &this.script {
                    Script::AckAll => ack(&batch),
                    Script::BreakFirstStreamAtSecondBatch if stream_no == 1 && n_in_stream == 2 => {
                        Err(Status::unavailable("scripted: stream dropped"))
                    }
                    Script::BreakFirstStreamAtSecondBatch => ack(&batch),
                    Script::Gated(gate) => {
                        let mut gate = gate.clone();
                        let _ = gate.wait_for(|open| *open).await;
                        ack(&batch)
                    }
                    Script::Refuse(code) => Err(Status::new(*code, "scripted refusal")),
                };
                let end = answer.is_err();
                if tx.send(answer).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
    async fn complete(&self, _: Request<pb::CompleteRequest>) -> Result<Response<pb::CompleteResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn fail(&self, _: Request<pb::FailRequest>) -> Result<Response<pb::FailResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn release(&self, _: Request<pb::ReleaseRequest>) -> Result<Response<pb::ReleaseResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn push_log(&self, _: Request<pb::PushLogRequest>) -> Result<Response<pb::PushLogResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A running upload against a scripted server.
struct Upload {
    events: mpsc::Sender<TrainEvent>,
    stop: StopFlag,
    end: tokio::task::JoinHandle<UploadEnd>,
    received: Received,
    streams: Arc<Mutex<usize>>,
}

/// Starts the server on 127.0.0.1:0 and an uploader for lease "L" against
/// it; batches of at most `batch_points` points, sent after 20 ms.
async fn start(script: Script, batch_points: usize) -> Upload {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let streams = Arc::new(Mutex::new(0));
    let server = Server { script, received: received.clone(), streams: streams.clone() };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServiceServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let client = WorkerServiceClient::with_interceptor(channel, BearerToken::new(None).unwrap());
    let stop = StopFlag::new();
    let uploader = Uploader {
        client,
        lease: "L".into(),
        stop: stop.clone(),
        progress: Arc::new(Mutex::new(pb::HeartbeatRequest::default())),
        batch_points,
        batch_delay: Duration::from_millis(20),
        telemetry: Arc::default(),
        trial_id: "T".into(),
    };
    let (events, rx) = mpsc::channel(64);
    let end = tokio::spawn(uploader.run(rx));
    Upload { events, stop, end, received, streams }
}

impl Upload {
    async fn metric(&self, step: i64, value: f64) {
        let m = Metric { step, epoch: 1, name: "train_loss".into(), value };
        self.events.send(TrainEvent::Metric(m)).await.unwrap();
    }

    /// Sends a barrier; its answer arrives on the returned channel.
    async fn barrier(&self, checkpoint_step: Option<i64>) -> std::sync::mpsc::Receiver<bool> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.events.send(TrainEvent::Barrier { checkpoint_step, ack: FlushAck(tx) }).await.unwrap();
        rx
    }

    /// The trainer is done: waits for the upload's end.
    async fn finish(self) -> (UploadEnd, Vec<(usize, pb::MetricBatch)>, usize, StopFlag) {
        drop(self.events);
        let end = tokio::time::timeout(Duration::from_secs(20), self.end).await.expect("the upload ends").unwrap();
        let received = self.received.lock().unwrap().clone();
        let streams = *self.streams.lock().unwrap();
        (end, received, streams, self.stop)
    }
}

/// Waits (polling, up to 10 s) for the answer of a barrier.
async fn answer(rx: &std::sync::mpsc::Receiver<bool>) -> Option<bool> {
    for _ in 0..1000 {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(std::sync::mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    panic!("no answer to the barrier within 10 s");
}

fn steps(b: &pb::MetricBatch) -> Vec<i64> {
    b.points.iter().map(|p| p.step).collect()
}

#[tokio::test]
async fn first_batch_carries_truncate_after_before_any_point() {
    let u = start(Script::AckAll, 100).await;
    u.events.send(TrainEvent::Resumed { step: 16 }).await.unwrap();
    u.metric(17, 1.0).await;
    u.metric(18, 0.9).await;
    let (end, received, _, _) = u.finish().await;
    assert_eq!(end, UploadEnd::Acked);
    let (_, first) = &received[0];
    assert_eq!(first.seq, 1);
    assert_eq!(first.lease_id, "L");
    assert_eq!(first.truncate_after, Some(16));
    assert!(first.points.is_empty(), "the resume marker goes ahead of every point");
    assert!(received[1..].iter().all(|(_, b)| b.truncate_after.is_none()));
    let all: Vec<i64> = received.iter().flat_map(|(_, b)| steps(b)).collect();
    assert_eq!(all, vec![17, 18]);
}

#[tokio::test]
async fn unacknowledged_batches_are_resent_on_a_new_stream_after_a_drop() {
    // One point per batch: batch 1 is acknowledged, the stream breaks at
    // batch 2, which must come again (and batch 1 must not).
    let u = start(Script::BreakFirstStreamAtSecondBatch, 1).await;
    u.metric(1, 1.0).await;
    let first = u.barrier(None).await;
    assert_eq!(answer(&first).await, Some(true));
    u.metric(2, 0.9).await;
    u.metric(3, 0.8).await;
    let last = u.barrier(Some(3)).await;
    assert_eq!(answer(&last).await, Some(true), "acknowledged once re-sent on the new stream");
    let (end, received, streams, stop) = u.finish().await;
    assert_eq!(end, UploadEnd::Acked);
    assert_eq!(stop.reason(), None);
    assert!(streams >= 2, "a new stream after the drop");
    let on = |s: usize| -> Vec<u64> { received.iter().filter(|(n, _)| *n == s).map(|(_, b)| b.seq).collect() };
    assert_eq!(on(1), vec![1, 2]);
    let later: Vec<u64> = received.iter().filter(|(n, _)| *n > 1).map(|(_, b)| b.seq).collect();
    assert_eq!(later.first(), Some(&2), "the new stream starts with the unacknowledged batch: {later:?}");
    assert!(!later.contains(&1), "an acknowledged batch is never re-sent: {later:?}");
    // Every point arrived, in order of first arrival, exactly once per seq.
    let mut seen = std::collections::BTreeMap::new();
    for (_, b) in &received {
        seen.entry(b.seq).or_insert_with(|| steps(b));
    }
    let points: Vec<i64> = seen.values().flatten().copied().collect();
    assert_eq!(points, vec![1, 2, 3]);
}

#[tokio::test]
async fn checkpoint_barrier_waits_for_every_acknowledgement() {
    let (gate, rx) = watch::channel(false);
    let u = start(Script::Gated(rx), 100).await;
    u.metric(1, 1.0).await;
    u.metric(2, 0.9).await;
    let barrier = u.barrier(Some(2)).await;
    // The batch is out, but not acknowledged: no answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(barrier.try_recv().is_err(), "answered before the acknowledgement");
    assert!(!u.received.lock().unwrap().is_empty(), "the batch was sent");
    gate.send(true).unwrap();
    assert_eq!(answer(&barrier).await, Some(true));
    let (end, received, _, _) = u.finish().await;
    assert_eq!(end, UploadEnd::Acked);
    // The checkpoint step rides on the batch with the last point before it.
    let marked: Vec<&pb::MetricBatch> =
        received.iter().map(|(_, b)| b).filter(|b| b.checkpoint_step.is_some()).collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0].checkpoint_step, Some(2));
    let before: Vec<i64> = received.iter().map(|(_, b)| b).filter(|b| b.seq <= marked[0].seq).flat_map(steps).collect();
    assert_eq!(before, vec![1, 2]);
}

#[tokio::test]
async fn non_finite_points_are_dropped_never_sent() {
    let u = start(Script::AckAll, 100).await;
    u.metric(1, 1.0).await;
    u.metric(2, f64::NAN).await;
    u.metric(3, f64::INFINITY).await;
    u.metric(4, f64::NEG_INFINITY).await;
    u.metric(5, 0.5).await;
    let (end, received, _, _) = u.finish().await;
    assert_eq!(end, UploadEnd::Acked);
    let points: Vec<&pb::MetricPoint> = received.iter().flat_map(|(_, b)| &b.points).collect();
    assert_eq!(points.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 5]);
    assert!(points.iter().all(|p| p.value.is_finite()));
}

#[tokio::test]
async fn a_permanent_refusal_ends_the_upload_and_stops_the_trial() {
    let u = start(Script::Refuse(Code::InvalidArgument), 100).await;
    u.metric(4, 1.0).await;
    u.metric(7, 1.0).await;
    let barrier = u.barrier(Some(7)).await;
    assert_eq!(answer(&barrier).await, Some(false), "no checkpoint after a refusal");
    // The trainer notices the stop flag; what it still sends is drained.
    u.metric(8, 1.0).await;
    let (end, received, streams, stop) = u.finish().await;
    match end {
        UploadEnd::Refused(why) => {
            // The oldest unacknowledged batch: the first, with step 4.
            assert!(why.contains("metric batch 1") && why.contains("steps 4..="), "{why}");
            assert!(why.contains("InvalidArgument") && why.contains("scripted refusal"), "{why}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(stop.reason(), Some(StopReason::Refused));
    assert_eq!(streams, 1, "a refused batch is not re-sent");
    assert_eq!(received[0].1.seq, 1);
}

#[tokio::test]
async fn a_lost_lease_ends_the_upload_without_a_refusal() {
    let u = start(Script::Refuse(Code::FailedPrecondition), 100).await;
    u.metric(1, 1.0).await;
    let barrier = u.barrier(Some(1)).await;
    assert_eq!(answer(&barrier).await, Some(false));
    let (end, _, streams, stop) = u.finish().await;
    assert_eq!(end, UploadEnd::LeaseLost);
    assert_eq!(stop.reason(), Some(StopReason::LeaseLost));
    assert_eq!(streams, 1);
}
