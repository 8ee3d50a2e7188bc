//! `AnalysisService`: the data behind `sweep report`'s effects and pictures,
//! from the store's set-based [`Analytics`](crate::store::Analytics) queries.
//! Read-only; errors map through [`crate::error`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use sweep_proto::v1 as pb;

use crate::store::analytics::CellLevels;
use crate::store::Store;

/// Most curve metrics one request may ask for.
pub const MAX_CURVE_METRICS: usize = 8;

#[derive(Clone)]
pub struct Analysis {
    store: Arc<dyn Store>,
}

impl Analysis {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn cell(c: CellLevels) -> Option<pb::AnalysisCell> {
    Some(pb::AnalysisCell { depth: c.depth, skip: c.skip, init: c.init, batchnorm: c.batchnorm })
}

fn metric_name(name: &str) -> Result<&str, Status> {
    crate::bounds::metric_name("curve_metrics: names", name)
}

#[tonic::async_trait]
impl pb::analysis_service_server::AnalysisService for Analysis {
    async fn analyze(&self, req: Request<pb::AnalyzeRequest>) -> Result<Response<pb::AnalyzeResponse>, Status> {
        let req = req.into_inner();
        crate::bounds::sweep_id(&req.sweep_id)?;
        if req.curve_metrics.len() > MAX_CURVE_METRICS {
            return Err(Status::invalid_argument(format!(
                "curve_metrics: at most {MAX_CURVE_METRICS} metrics per request"
            )));
        }
        let id = req.sweep_id.as_str();
        let trials = self.store.trial_finals(id).await?;
        let mut curves = Vec::new();
        for metric in &req.curve_metrics {
            for c in self.store.curve(id, metric_name(metric)?).await? {
                curves.push(pb::CurveAggregate {
                    cell: cell(c.cell),
                    metric: metric.clone(),
                    step: c.step,
                    n: c.n,
                    sum: c.sum,
                    sum_sq: c.sum_sq,
                });
            }
        }
        let grad_flow = if req.grad_flow {
            self.store
                .grad_flow(id)
                .await?
                .into_iter()
                .map(|g| pb::GradFlowAggregate {
                    cell: cell(g.cell),
                    block: g.block,
                    last: g.last,
                    n: g.n,
                    sum: g.sum,
                    sum_sq: g.sum_sq,
                    mean_step: g.mean_step,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::AnalyzeResponse {
            sweep_id: req.sweep_id.clone(),
            trials: trials
                .into_iter()
                .map(|t| pb::TrialFinal {
                    cell: cell(t.cell),
                    seed: t.seed,
                    state: t.state.as_str().to_owned(),
                    final_train_loss: t.final_train_loss,
                    final_test_loss: t.final_test_loss,
                    final_test_accuracy: t.final_test_accuracy,
                    best_test_accuracy: t.best_test_accuracy,
                    wall_seconds: t.wall_seconds,
                    cell_key: t.cell_key,
                    device: t.device.unwrap_or_default(),
                    threads: t.threads.unwrap_or(0),
                    diverged_step: t.diverged_step,
                    train_images_used: t.train_images_used,
                })
                .collect(),
            curves,
            grad_flow,
        }))
    }
}
