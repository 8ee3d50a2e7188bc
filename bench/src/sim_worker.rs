//! One simulated worker: the real worker's protocol over its own
//! connection, with nothing trained. It leases (`max_trials` at a time),
//! holds each trial for the configured time while heartbeating, sends the
//! trial's metric points and completes it, until the queue is empty or the
//! run's deadline passes.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sweep_proto::v1 as pb;
use sweep_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::latency::Latencies;

/// How a trial's points reach the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MetricsPath {
    /// In the `Complete` call (`last_batch`): one call per trial.
    Complete,
    /// On the worker's one long-lived `PushMetrics` stream, acknowledged
    /// before `Complete` (how a trial that streams during training ends).
    Stream,
}

/// What every simulated worker does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Trials asked for per `Lease` (a group lease when above 1).
    pub(crate) group: u32,
    /// Metric points per trial.
    pub(crate) points: u32,
    /// How long each trial "trains".
    pub(crate) trial: Duration,
    /// Heartbeat period while a trial trains.
    pub(crate) heartbeat: Duration,
    pub(crate) metrics: MetricsPath,
    /// No new lease after this instant.
    pub(crate) deadline: Option<Instant>,
    /// The fleet's size: with trials that last, worker `id` starts `id /
    /// workers` of a trial's time late, so leases arrive spread out as in a
    /// fleet running for a while, not all in the same instant.
    pub(crate) workers: u32,
}

/// What one worker did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) trials: u64,
    pub(crate) points: u64,
    pub(crate) lease: Latencies,
    pub(crate) complete: Latencies,
    pub(crate) ack: Latencies,
    pub(crate) heartbeat: Latencies,
}

/// The metric stream a worker keeps open across its trials.
struct MetricStream {
    batches: mpsc::Sender<pb::MetricBatch>,
    acks: tonic::Streaming<pb::MetricAck>,
    seq: u64,
}

pub(crate) async fn run(id: usize, channel: Channel, plan: Plan) -> Result<Tally> {
    let worker_id = format!("loadgen-{id}");
    let mut client = WorkerServiceClient::new(channel);
    let mut stream = match plan.metrics {
        MetricsPath::Stream => {
            let (batches, rx) = mpsc::channel(4);
            let acks = client.push_metrics(ReceiverStream::new(rx)).await.context("opening the metric stream")?;
            Some(MetricStream { batches, acks: acks.into_inner(), seq: 0 })
        }
        MetricsPath::Complete => None,
    };
    let mut tally = Tally::default();
    if !plan.trial.is_zero() {
        tokio::time::sleep(plan.trial.mul_f64(id as f64 / f64::from(plan.workers.max(1)))).await;
    }
    loop {
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let asked = Instant::now();
        let request = pb::LeaseRequest {
            worker_id: worker_id.clone(),
            device: "cpu".into(),
            wait_ms: 0,
            threads: 1,
            max_trials: plan.group,
        };
        let leased = retry("Lease", || {
            let (mut c, r) = (client.clone(), request.clone());
            async move { c.lease(r).await }
        })
        .await?
        .into_inner();
        tally.lease.record(asked.elapsed());
        let Some(first) = leased.assignment else { break };
        for a in std::iter::once(first).chain(leased.fused) {
            train(&mut client, &a, &plan, &mut tally).await?;
            let points = points(plan.points);
            let last_batch = match &mut stream {
                Some(s) => {
                    s.seq += 1;
                    let sent = Instant::now();
                    let batch =
                        pb::MetricBatch { lease_id: a.lease_id.clone(), seq: s.seq, points, ..Default::default() };
                    s.batches.send(batch).await.context("the metric stream closed")?;
                    let ack = s.acks.message().await.context("PushMetrics")?.context("the metric stream ended")?;
                    if ack.seq != s.seq {
                        bail!("acknowledgement for batch {} while waiting for {}", ack.seq, s.seq);
                    }
                    tally.ack.record(sent.elapsed());
                    None
                }
                None => Some(pb::MetricBatch { points, ..Default::default() }),
            };
            let sent = Instant::now();
            let request = pb::CompleteRequest {
                lease_id: a.lease_id.clone(),
                outcome: pb::Outcome::Succeeded as i32,
                summary: Some(pb::TrialSummary {
                    final_train_loss: Some(0.5),
                    final_test_accuracy: Some(0.5 + (tally.trials % 7) as f64 / 100.0),
                    ..Default::default()
                }),
                worker_id: worker_id.clone(),
                provenance: None,
                last_batch,
            };
            retry("Complete", || {
                let (mut c, r) = (client.clone(), request.clone());
                async move { c.complete(r).await }
            })
            .await?;
            tally.complete.record(sent.elapsed());
            tally.trials += 1;
            tally.points += u64::from(plan.points);
        }
    }
    Ok(tally)
}

/// Holds the trial for `plan.trial`, heartbeating every `plan.heartbeat`.
async fn train(
    client: &mut WorkerServiceClient<Channel>,
    a: &pb::Assignment,
    plan: &Plan,
    tally: &mut Tally,
) -> Result<()> {
    let end = Instant::now() + plan.trial;
    let mut step = 0;
    while Instant::now() < end {
        tokio::time::sleep(plan.heartbeat.min(end.saturating_duration_since(Instant::now()))).await;
        if Instant::now() >= end {
            break;
        }
        step += 1;
        let sent = Instant::now();
        let request = pb::HeartbeatRequest { lease_id: a.lease_id.clone(), epoch: 1, step, last_loss: Some(1.0) };
        let answer = retry("Heartbeat", || {
            let (mut c, r) = (client.clone(), request.clone());
            async move { c.heartbeat(r).await }
        })
        .await?
        .into_inner();
        tally.heartbeat.record(sent.elapsed());
        if answer.directive != pb::Directive::Continue as i32 {
            bail!("trial {}: heartbeat answered {:?}", a.trial_id, answer.directive);
        }
    }
    Ok(())
}

/// A trial's points: a loss falling over steps 1..=n.
fn points(n: u32) -> Vec<pb::MetricPoint> {
    (1..=i64::from(n))
        .map(|step| pb::MetricPoint { step, name: "train_loss".into(), value: 1.0 / step as f64, epoch: 1 })
        .collect()
}

/// A call retried as a real worker retries it: `UNAVAILABLE` (the store
/// rolled a batch back, or is busy) up to 5 times, 50 ms apart; the time
/// recorded includes the retries.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result.with_context(|| what.to_owned()),
        }
    }
}
