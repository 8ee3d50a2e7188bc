//! The gradient-flow rows of the JSON report: per cell, layer group and
//! phase (first or last logged step), the mean gradient norm over seeds
//! with its 95% interval. The numbers behind the `gradient-flow` picture,
//! present when the report fetched them (`--out`/`--html`).

use serde::Serialize;
use sweep_core::stats::{t_interval, Moments};
use sweep_core::{Cell, SweepResults};

#[derive(Debug, Serialize)]
struct GradRow<'a> {
    #[serde(flatten)]
    cell: &'a Cell,
    /// `stem`, `block01`, ..., `fc2`.
    block: &'a str,
    /// `start` or `end` of training.
    phase: &'static str,
    /// Mean over the seeds of the step the norm was logged at.
    step: f64,
    n: u64,
    mean: f64,
    ci95_lo: Option<f64>,
    ci95_hi: Option<f64>,
}

/// `None` when the report did not fetch gradient norms.
pub(super) fn json(results: &SweepResults) -> Option<serde_json::Value> {
    if results.grad_flow.is_empty() {
        return None;
    }
    let rows: Vec<GradRow> = results
        .grad_flow
        .iter()
        .filter_map(|g| {
            let m = Moments::from_sums(g.n, g.sum, g.sum_sq)?;
            let ci = t_interval(&m, 0.95);
            Some(GradRow {
                cell: &g.cell,
                block: &g.block,
                phase: if g.last { "end" } else { "start" },
                step: g.mean_step,
                n: g.n,
                mean: m.mean,
                ci95_lo: ci.map(|c| c.0),
                ci95_hi: ci.map(|c| c.1),
            })
        })
        .collect();
    serde_json::to_value(rows).ok()
}
