//! `AnalysisService`: the data behind `sweep report`'s effects and pictures,
//! from the store's set-based [`Analytics`](crate::store::Analytics) queries,
//! gathered as the domain's [`SweepResults`] and converted to the wire by
//! `sweep-proto`. Read-only; errors map through [`crate::error`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use sweep_core::SweepResults;
use sweep_proto::v1 as pb;

use crate::store::Store;

/// Most curve metrics one request may ask for.
pub const MAX_CURVE_METRICS: usize = 16;

#[derive(Clone)]
pub struct Analysis {
    store: Arc<dyn Store>,
}

impl Analysis {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
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
        let trials = self.store.trial_results(id).await?;
        let mut curves = Vec::new();
        for metric in &req.curve_metrics {
            curves.extend(self.store.curve(id, metric_name(metric)?, req.live).await?);
        }
        let grad_flow = if req.grad_flow { self.store.grad_flow(id).await? } else { Vec::new() };
        let (adaptive, strata) = match self.store.strata(id).await? {
            Some(s) => (Some(s.plan), s.strata),
            None => (None, Vec::new()),
        };
        let results = SweepResults { sweep_id: req.sweep_id.clone(), trials, curves, grad_flow, adaptive, strata };
        Ok(Response::new(pb::AnalyzeResponse::from(&results)))
    }
}
