//! `GET /sweeps/{sweep}/events`: server-sent events while a sweep runs,
//! fed by the coordinator's `Watch` stream (what `sweep watch` shows):
//! `status` (counts and running trials) at each change, and `curves` (each
//! cell's mean training loss per step over its running and finished
//! trials) when they grew. The stream ends after the sweep finished.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use sweep_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::pages::{cell_label, PageError};
use super::App;

/// The metric the live chart draws.
const LIVE_METRIC: &str = "train_loss";

pub(super) async fn events(
    State(app): State<App>,
    Path(sweep): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let mut client = crate::commands::connect(&app.grpc).await?;
    let mut watch = client.watch(pb::WatchRequest { sweep_id: sweep.clone() }).await?.into_inner();
    // One connection for the stream's curves.
    let mut analysis = pb::analysis_service_client::AnalysisServiceClient::new(
        crate::commands::channel(&app.grpc).await.map_err(PageError::from)?,
    )
    .max_decoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(8);
    tokio::spawn(async move {
        let mut last_curves = String::new();
        let mut finished = false;
        while !finished {
            // A status at each change, or every 2 s with the curves.
            let snapshot = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
            match snapshot {
                Ok(Some(Ok(s))) => {
                    finished = s.finished;
                    if tx.send(Event::default().event("status").data(status_json(&s).to_string())).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Err(_)) | None) => finished = true,
                Err(_) => {}
            }
            if let Some(curves) = curves_json(&mut analysis, &sweep).await {
                if curves != last_curves {
                    if tx.send(Event::default().event("curves").data(curves.clone())).await.is_err() {
                        return;
                    }
                    last_curves = curves;
                }
            }
        }
        let _ = tx.send(Event::default().event("finished").data("{}")).await;
    });
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()))
}

fn status_json(s: &pb::SweepStatus) -> serde_json::Value {
    let c = s.counts.unwrap_or_default();
    serde_json::json!({
        "queued": c.queued, "running": c.running, "succeeded": c.succeeded, "diverged": c.diverged,
        "failed": c.failed, "cancelled": c.cancelled, "finished": s.finished,
        "trials": s.running.iter().map(|r| serde_json::json!({
            "label": r.label, "step": r.step, "epoch": r.epoch, "loss": r.last_loss,
        })).collect::<Vec<_>>(),
    })
}

/// `{"metric": ..., "cells": [{"label", "steps": [...], "means": [...]}]}`,
/// or `None` when the coordinator did not answer.
async fn curves_json(
    client: &mut pb::analysis_service_client::AnalysisServiceClient<sweep_proto::client::AuthChannel>,
    sweep: &str,
) -> Option<String> {
    let req = pb::AnalyzeRequest {
        sweep_id: sweep.to_owned(),
        curve_metrics: vec![LIVE_METRIC.to_owned()],
        grad_flow: false,
        live: true,
    };
    let results = sweep_core::SweepResults::try_from(client.analyze(req).await.ok()?.into_inner()).ok()?;
    let trainer = results.trials.first().map_or("bmenet", |t| t.trainer.as_str());
    let mut cells: std::collections::BTreeMap<String, (Vec<i64>, Vec<f64>)> = Default::default();
    for c in results.curves.iter().filter(|c| c.n > 0) {
        let entry = cells.entry(cell_label(&c.cell, trainer)).or_default();
        entry.0.push(c.step);
        entry.1.push(c.sum / c.n as f64);
    }
    let cells: Vec<serde_json::Value> = cells
        .into_iter()
        .map(|(label, (steps, means))| serde_json::json!({"label": label, "steps": steps, "means": means}))
        .collect();
    Some(serde_json::json!({"metric": LIVE_METRIC, "cells": cells}).to_string())
}
