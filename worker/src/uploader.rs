//! Metric upload for one lease: batches the trainer's points, sends them
//! over one `PushMetrics` stream, keeps every batch until the coordinator
//! acknowledges it was committed, and re-sends the unacknowledged ones on a
//! new stream after an error.
//!
//! Invariants it carries (ARCHITECTURE.md):
//! - 4: a trial is completed only after every one of its points is
//!   acknowledged ([`Uploader::run`] returns [`UploadEnd::Acked`] only then);
//! - 10: a checkpoint at step S is written only after every point up to S is
//!   acknowledged, in a batch that carries `checkpoint_step = S` and is
//!   ordered after all earlier points ([`Outbox::barrier`]);
//! - 11: the first batch of an attempt says where it resumed
//!   (`truncate_after`), ahead of any point.
//!
//! Defence in depth: a non-finite point is dropped with a warning (the
//! coordinator refuses them), and a batch the coordinator refuses for good
//! (any non-transient code but `FAILED_PRECONDITION`, which means the lease
//! is lost: [`crate::retry::verdict`]) ends the upload with [`UploadEnd::Refused`] instead of being
//! re-sent forever; the daemon then fails the trial.
//!
//! [`Outbox`] is the state machine without the network, so it is tested on
//! its own; [`Uploader`] drives it over gRPC.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sweep_proto::client::AuthChannel;
use sweep_proto::v1 as pb;
use sweep_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::retry::{verdict, Backoff, Verdict};
use crate::telemetry::Telemetry;
use crate::trainer::{FlushAck, Metric, StopFlag, StopReason, TrainEvent};

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEnd {
    /// The trainer is done and every point it sent is acknowledged.
    Acked,
    /// The coordinator says the lease is no longer ours.
    LeaseLost,
    /// The coordinator refused a batch for good; the text names the batch
    /// and the reason.
    Refused(String),
}

/// The upload's state without the network: the points not yet in a batch,
/// the batches not yet acknowledged (by sequence number) and the barriers
/// waiting for acknowledgements.
pub struct Outbox {
    lease: String,
    seq: u64,
    buf: Vec<pb::MetricPoint>,
    unacked: BTreeMap<u64, pb::MetricBatch>,
    /// (last sequence number the barrier waits for, its answer channel).
    barriers: Vec<(u64, FlushAck)>,
    dropped: u64,
}

impl Outbox {
    pub fn new(lease: impl Into<String>) -> Self {
        Self {
            lease: lease.into(),
            seq: 0,
            buf: Vec::new(),
            unacked: BTreeMap::new(),
            barriers: Vec::new(),
            dropped: 0,
        }
    }

    /// Buffers a point; a non-finite value is dropped with a warning and
    /// `false` is returned.
    pub fn push(&mut self, m: Metric) -> bool {
        if !m.value.is_finite() {
            self.dropped += 1;
            tracing::warn!(step = m.step, metric = %m.name, value = %m.value, "non-finite metric point dropped (never sent)");
            return false;
        }
        self.buf.push(pb::MetricPoint { step: m.step, name: m.name, value: m.value, epoch: m.epoch });
        true
    }

    /// Points buffered, not yet in a batch.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Non-finite points dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn new_batch(
        &mut self,
        points: Vec<pb::MetricPoint>,
        truncate_after: Option<i64>,
        checkpoint_step: Option<i64>,
    ) -> pb::MetricBatch {
        self.seq += 1;
        let batch =
            pb::MetricBatch { lease_id: self.lease.clone(), seq: self.seq, points, truncate_after, checkpoint_step };
        self.unacked.insert(self.seq, batch.clone());
        batch
    }

    /// Turns the buffered points into a batch (kept until acknowledged).
    /// `None` when nothing is buffered.
    pub fn seal(&mut self) -> Option<pb::MetricBatch> {
        if self.buf.is_empty() {
            return None;
        }
        let points = std::mem::take(&mut self.buf);
        Some(self.new_batch(points, None, None))
    }

    /// The attempt starts at `step`: a batch of its own with
    /// `truncate_after`, after anything already buffered.
    pub fn resumed(&mut self, step: i64) -> Vec<pb::MetricBatch> {
        let mut out: Vec<_> = self.seal().into_iter().collect();
        out.push(self.new_batch(Vec::new(), Some(step), None));
        out
    }

    /// A barrier: `ack` is answered `true` once every batch up to and
    /// including the returned one is acknowledged. With `checkpoint_step`,
    /// the buffered points go out in a batch that carries it (an empty batch
    /// when nothing is buffered), after every earlier batch.
    pub fn barrier(&mut self, checkpoint_step: Option<i64>, ack: FlushAck) -> Option<pb::MetricBatch> {
        let batch = match checkpoint_step {
            Some(s) => {
                let points = std::mem::take(&mut self.buf);
                Some(self.new_batch(points, None, Some(s)))
            }
            None => self.seal(),
        };
        self.barriers.push((self.seq, ack));
        self.answer_barriers();
        batch
    }

    /// The coordinator committed batch `seq`.
    pub fn ack(&mut self, seq: u64) {
        self.unacked.remove(&seq);
        self.answer_barriers();
    }

    fn answer_barriers(&mut self) {
        let first_unacked = self.unacked.keys().next().copied().unwrap_or(u64::MAX);
        self.barriers.retain(|(upto, ack)| {
            if *upto < first_unacked {
                let _ = ack.0.try_send(true);
                false
            } else {
                true
            }
        });
    }

    /// Batches not yet acknowledged, in order (to re-send on a new stream).
    pub fn unacked(&self) -> impl Iterator<Item = &pb::MetricBatch> {
        self.unacked.values()
    }

    /// Nothing buffered and nothing waiting for an acknowledgement.
    pub fn idle(&self) -> bool {
        self.buf.is_empty() && self.unacked.is_empty()
    }

    /// The oldest unacknowledged batch, described for an error message (the
    /// coordinator commits in order, so a refusal is about this one).
    pub fn describe_oldest(&self) -> String {
        match self.unacked.values().next() {
            None => "no batch".into(),
            Some(b) => {
                let mut s = format!("metric batch {} ({} points", b.seq, b.points.len());
                if let (Some(lo), Some(hi)) =
                    (b.points.iter().map(|p| p.step).min(), b.points.iter().map(|p| p.step).max())
                {
                    s.push_str(&format!(", steps {lo}..={hi}"));
                }
                if let Some(t) = b.truncate_after {
                    s.push_str(&format!(", resumed at step {t}"));
                }
                if let Some(c) = b.checkpoint_step {
                    s.push_str(&format!(", checkpoint at step {c}"));
                }
                s.push(')');
                s
            }
        }
    }

    /// Gives up: every waiting barrier is answered `false`.
    pub fn abandon(&mut self) {
        for (_, ack) in self.barriers.drain(..) {
            let _ = ack.0.try_send(false);
        }
    }
}

type Client = WorkerServiceClient<AuthChannel>;

/// Drives an [`Outbox`] over one `PushMetrics` stream at a time.
pub struct Uploader {
    pub client: Client,
    pub lease: String,
    /// Set to stop the trainer when the lease is lost or a batch refused.
    pub stop: StopFlag,
    /// Progress reported by the trainer, read by the heartbeats.
    pub progress: Arc<Mutex<pb::HeartbeatRequest>>,
    /// Most metric points per batch.
    pub batch_points: usize,
    /// Longest a point waits before its batch is sent.
    pub batch_delay: Duration,
    /// The worker's metrics, and the trial they are kept under.
    pub telemetry: Arc<Telemetry>,
    pub trial_id: String,
}

/// One open `PushMetrics` call.
struct MetricStream {
    tx: mpsc::Sender<pb::MetricBatch>,
    acks: tonic::Streaming<pb::MetricAck>,
}

impl Uploader {
    async fn open(&self, outbox: &Outbox) -> Result<MetricStream, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let acks = self.client.clone().push_metrics(ReceiverStream::new(rx)).await?.into_inner();
        for batch in outbox.unacked() {
            tx.send(batch.clone()).await.map_err(|_| tonic::Status::unavailable("metric stream closed"))?;
        }
        Ok(MetricStream { tx, acks })
    }

    /// Uploads until the trainer is done and everything is acknowledged, or
    /// the lease is lost, or a batch is refused for good.
    pub async fn run(self, mut events: mpsc::Receiver<TrainEvent>) -> UploadEnd {
        let mut outbox = Outbox::new(self.lease.clone());
        let mut events_open = true;
        let mut stream: Option<MetricStream> = None;
        let mut backoff = Backoff::new();
        let mut tick = tokio::time::interval(self.batch_delay);
        loop {
            if outbox.idle() && !events_open {
                return UploadEnd::Acked;
            }
            if stream.is_none() && !outbox.idle() {
                match self.open(&outbox).await {
                    Ok(s) => stream = Some(s),
                    Err(s) => match verdict(s.code()) {
                        Verdict::LeaseLost => return self.lost(outbox, events).await,
                        Verdict::Refused => return self.refused(outbox, events, &s).await,
                        Verdict::Retry => {
                            tracing::warn!(code = ?s.code(), "metric stream failed to open; retrying");
                            backoff.wait().await;
                            continue;
                        }
                    },
                }
            }
            let mut send: Vec<pb::MetricBatch> = Vec::new();
            tokio::select! {
                ev = events.recv(), if events_open => match ev {
                    Some(TrainEvent::Metric(m)) => {
                        outbox.push(m);
                        if outbox.buffered() >= self.batch_points {
                            send.extend(outbox.seal());
                        }
                    }
                    Some(TrainEvent::Barrier { checkpoint_step, ack }) => send.extend(outbox.barrier(checkpoint_step, ack)),
                    Some(TrainEvent::Resumed { step }) => send.extend(outbox.resumed(step)),
                    Some(TrainEvent::Progress { epoch, step, loss }) => {
                        self.telemetry.progress(&self.trial_id, epoch, step, loss);
                        if let Ok(mut p) = self.progress.lock() {
                            p.epoch = epoch;
                            p.step = step;
                            p.last_loss = loss.filter(|l| l.is_finite());
                        }
                    }
                    None => {
                        events_open = false;
                        send.extend(outbox.seal());
                    }
                },
                _ = tick.tick() => send.extend(outbox.seal()),
                ack = async { stream.as_mut().expect("checked").acks.message().await }, if stream.is_some() => {
                    match ack {
                        Ok(Some(a)) => { outbox.ack(a.seq); backoff.reset(); }
                        Ok(None) => stream = None,
                        Err(s) => match verdict(s.code()) {
                            Verdict::LeaseLost => return self.lost(outbox, events).await,
                            Verdict::Refused => return self.refused(outbox, events, &s).await,
                            Verdict::Retry => {
                                tracing::warn!(code = ?s.code(), message = %s.message(), "metric stream broke; re-sending unacknowledged batches");
                                stream = None;
                                backoff.wait().await;
                            }
                        },
                    }
                }
            }
            // A new stream re-sends every unacknowledged batch itself.
            if let Some(s) = &stream {
                for batch in send {
                    if s.tx.send(batch).await.is_err() {
                        stream = None;
                        break;
                    }
                }
            }
        }
    }

    async fn lost(&self, mut outbox: Outbox, events: mpsc::Receiver<TrainEvent>) -> UploadEnd {
        tracing::warn!("metrics refused: the lease is no longer ours; stopping the trial");
        self.stop.stop(StopReason::LeaseLost);
        outbox.abandon();
        drain(events).await;
        UploadEnd::LeaseLost
    }

    async fn refused(&self, mut outbox: Outbox, events: mpsc::Receiver<TrainEvent>, s: &tonic::Status) -> UploadEnd {
        let what = format!(
            "the coordinator refused {} for good ({:?}: {}); the trial cannot be recorded",
            outbox.describe_oldest(),
            s.code(),
            s.message()
        );
        tracing::error!("{what}; stopping the trial");
        self.stop.stop(StopReason::Refused);
        outbox.abandon();
        drain(events).await;
        UploadEnd::Refused(what)
    }
}

/// Reads the trainer's remaining events until it is done; barriers among
/// them are answered `false` (dropped).
async fn drain(mut events: mpsc::Receiver<TrainEvent>) {
    while let Some(ev) = events.recv().await {
        if let TrainEvent::Barrier { ack, .. } = ev {
            let _ = ack.0.try_send(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: i64, value: f64) -> Metric {
        Metric { step, epoch: 1, name: "train_loss".into(), value }
    }

    fn ack() -> (FlushAck, std::sync::mpsc::Receiver<bool>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        (FlushAck(tx), rx)
    }

    #[test]
    fn non_finite_points_are_dropped_never_batched() {
        let mut o = Outbox::new("L");
        assert!(o.push(m(1, 2.0)));
        assert!(!o.push(m(2, f64::NAN)));
        assert!(!o.push(m(3, f64::INFINITY)));
        assert!(!o.push(m(4, f64::NEG_INFINITY)));
        assert!(o.push(m(5, 1.5)));
        assert_eq!(o.dropped(), 3);
        let b = o.seal().expect("a batch");
        let steps: Vec<i64> = b.points.iter().map(|p| p.step).collect();
        assert_eq!(steps, vec![1, 5]);
        assert!(b.points.iter().all(|p| p.value.is_finite()));
    }

    #[test]
    fn resumed_batch_comes_first_and_carries_truncate_after() {
        let mut o = Outbox::new("L");
        let bs = o.resumed(16);
        assert_eq!(bs.len(), 1);
        assert_eq!(bs[0].seq, 1);
        assert_eq!(bs[0].truncate_after, Some(16));
        assert!(bs[0].points.is_empty());
        o.push(m(17, 1.0));
        assert_eq!(o.seal().unwrap().seq, 2);
    }

    #[test]
    fn checkpoint_barrier_rides_on_the_batch_after_all_earlier_points() {
        let mut o = Outbox::new("L");
        o.push(m(1, 1.0));
        let first = o.seal().unwrap();
        o.push(m(2, 1.0));
        o.push(m(3, 1.0));
        let (a, rx) = ack();
        let b = o.barrier(Some(3), a).expect("the barrier batch");
        assert_eq!(b.checkpoint_step, Some(3));
        assert!(b.seq > first.seq);
        assert_eq!(b.points.iter().map(|p| p.step).max(), Some(3));
        assert_eq!(o.buffered(), 0);
        // Not answered until every batch up to it is acknowledged, in any order.
        o.ack(b.seq);
        assert!(rx.try_recv().is_err());
        o.ack(first.seq);
        assert_eq!(rx.try_recv(), Ok(true));
        assert!(o.idle());
    }

    #[test]
    fn checkpoint_barrier_with_nothing_buffered_sends_an_empty_marker_batch() {
        let mut o = Outbox::new("L");
        let (a, rx) = ack();
        let b = o.barrier(Some(0), a).expect("a marker batch");
        assert!(b.points.is_empty());
        assert_eq!(b.checkpoint_step, Some(0));
        assert!(rx.try_recv().is_err());
        o.ack(b.seq);
        assert_eq!(rx.try_recv(), Ok(true));
    }

    #[test]
    fn plain_flush_with_everything_acknowledged_answers_at_once() {
        let mut o = Outbox::new("L");
        let (a, rx) = ack();
        assert!(o.barrier(None, a).is_none());
        assert_eq!(rx.try_recv(), Ok(true));
    }

    #[test]
    fn a_later_batch_does_not_hold_up_an_earlier_barrier() {
        let mut o = Outbox::new("L");
        o.push(m(1, 1.0));
        let (a, rx) = ack();
        let b1 = o.barrier(Some(1), a).unwrap();
        o.push(m(2, 1.0));
        let b2 = o.seal().unwrap();
        o.ack(b1.seq);
        assert_eq!(rx.try_recv(), Ok(true));
        assert_eq!(o.unacked().map(|b| b.seq).collect::<Vec<_>>(), vec![b2.seq]);
    }

    #[test]
    fn abandon_answers_waiting_barriers_false() {
        let mut o = Outbox::new("L");
        o.push(m(1, 1.0));
        let (a, rx) = ack();
        o.barrier(Some(1), a);
        o.abandon();
        assert_eq!(rx.try_recv(), Ok(false));
    }

    #[test]
    fn refusal_names_the_oldest_unacknowledged_batch() {
        let mut o = Outbox::new("L");
        o.push(m(4, 1.0));
        o.push(m(7, 1.0));
        o.seal();
        let d = o.describe_oldest();
        assert!(d.contains("metric batch 1") && d.contains("2 points") && d.contains("steps 4..=7"), "{d}");
    }
}
