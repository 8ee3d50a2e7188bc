//! The variance-propagation section (Glorot & Bengio, 2010; the lecture's
//! Eqs. 5 and 6), for sweeps run with `[analysis] variance = true`.
//!
//! The trainer stores, per trial, at step `epoch * VARIANCE_STEPS + layer`
//! (epoch 0 = initialisation; weight layers numbered from 1, input to
//! output): the measured variance of each layer's input (`forward`) and of
//! the loss gradient at its output (`backward`), and what the lecture's
//! equations predict from the layers' fans and weight variances
//! (`*_predicted`). The coordinator aggregates them per cell and step.
//!
//! The table summarises each cell by two ratios, at initialisation and
//! after the last epoch: how the forward variance changes from the first
//! layer to the last, and how the gradient variance changes from the last
//! layer back to the first (below 1: it vanishes on the way back; above:
//! it explodes), measured and predicted.

use std::collections::BTreeMap;

use serde::Serialize;
use sweep_core::bmenet::VARIANCE_STEPS;
use sweep_core::{Cell, SweepResults};

use super::design::Design;
use crate::tables::Table;

pub(super) const FORWARD: &str = sweep_core::bmenet::analysis_metrics::VARIANCE_FORWARD;
pub(super) const FORWARD_PREDICTED: &str = sweep_core::bmenet::analysis_metrics::VARIANCE_FORWARD_PREDICTED;
pub(super) const BACKWARD: &str = sweep_core::bmenet::analysis_metrics::VARIANCE_BACKWARD;
pub(super) const BACKWARD_PREDICTED: &str = sweep_core::bmenet::analysis_metrics::VARIANCE_BACKWARD_PREDICTED;
/// The metrics the section reads.
pub(super) const METRICS: [&str; 4] = [FORWARD, FORWARD_PREDICTED, BACKWARD, BACKWARD_PREDICTED];

/// One cell's means over seeds at one layer and epoch (the JSON rows).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct LayerRow {
    #[serde(flatten)]
    pub cell: Cell,
    pub epoch: i64,
    pub layer: i64,
    /// Seeds measured.
    pub n: u64,
    pub forward: Option<f64>,
    pub forward_predicted: Option<f64>,
    pub backward: Option<f64>,
    pub backward_predicted: Option<f64>,
}

/// Every cell's rows, by cell (in first-seen order), epoch and layer.
pub(super) fn rows(results: &SweepResults) -> Vec<LayerRow> {
    let mut cells: Vec<Cell> = Vec::new();
    let mut by: BTreeMap<(usize, i64, i64), LayerRow> = BTreeMap::new();
    for c in results.curves.iter().filter(|c| METRICS.contains(&c.metric.as_str()) && c.n > 0) {
        let i = match cells.iter().position(|x| *x == c.cell) {
            Some(i) => i,
            None => {
                cells.push(c.cell.clone());
                cells.len() - 1
            }
        };
        let (epoch, layer) = (c.step / VARIANCE_STEPS, c.step % VARIANCE_STEPS);
        let row = by.entry((i, epoch, layer)).or_insert_with(|| LayerRow {
            cell: c.cell.clone(),
            epoch,
            layer,
            n: 0,
            forward: None,
            forward_predicted: None,
            backward: None,
            backward_predicted: None,
        });
        let mean = Some(c.sum / c.n as f64);
        row.n = row.n.max(c.n);
        match c.metric.as_str() {
            FORWARD => row.forward = mean,
            FORWARD_PREDICTED => row.forward_predicted = mean,
            BACKWARD => row.backward = mean,
            _ => row.backward_predicted = mean,
        }
    }
    by.into_values().collect()
}

/// `last / first` of a per-layer series, as text.
fn ratio(first: Option<f64>, last: Option<f64>) -> String {
    match (first, last) {
        (Some(a), Some(b)) if a > 0.0 && (b / a).is_finite() => format!("{:.2e}", b / a),
        _ => "-".into(),
    }
}

/// The table: per cell, at initialisation and after the last epoch, the
/// forward ratio (last layer's input variance over the first's) and the
/// backward ratio (first layer's gradient variance over the last's),
/// measured and predicted; `None` without the analysis.
pub(super) fn table(design: &Design, results: &SweepResults) -> Option<Table> {
    let rows = rows(results);
    if rows.is_empty() {
        return None;
    }
    let names = design.names();
    let mut header: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    header.extend(
        ["epoch", "seeds", "layers", "forward last/first", "(Eq. 5)", "gradient first/last", "(Eq. 6)"]
            .map(str::to_owned),
    );
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let cell = &rows[i].cell;
        let of_cell: Vec<&LayerRow> = rows[i..].iter().take_while(|r| &r.cell == cell).collect();
        i += of_cell.len();
        let last_epoch = of_cell.iter().map(|r| r.epoch).max().unwrap_or(0);
        let epochs: Vec<i64> = if last_epoch == 0 { vec![0] } else { vec![0, last_epoch] };
        for epoch in epochs {
            let layers: Vec<&&LayerRow> = of_cell.iter().filter(|r| r.epoch == epoch).collect();
            let (Some(first), Some(last)) = (layers.first(), layers.last()) else { continue };
            let mut row: Vec<String> =
                names.iter().map(|n| cell.get(n).map(sweep_core::Level::display).unwrap_or_default()).collect();
            row.push(if epoch == 0 { "init".into() } else { epoch.to_string() });
            row.push(layers.iter().map(|r| r.n).max().unwrap_or(0).to_string());
            row.push(layers.len().to_string());
            row.push(ratio(first.forward, last.forward));
            row.push(ratio(first.forward_predicted, last.forward_predicted));
            row.push(ratio(last.backward, first.backward));
            row.push(ratio(last.backward_predicted, first.backward_predicted));
            out.push(row);
        }
    }
    Some(
        Table::new("Variance propagation (Glorot & Bengio): measured vs the lecture's equations", header, out).caption(
            "On a fixed batch of 64 training images, batch norm on its running statistics. Forward: the variance \
             of the last weight layer's input over the first's; gradient: the variance of the loss gradient at \
             the first layer's output over the last's (below 1 it vanishes on the way back, above 1 it explodes). \
             Predicted from each layer's fan and weight variance alone (Eq. 5: n_in Var[w] per layer; Eq. 6: \
             n_out Var[w]), which ignores ReLU, batch norm, pooling and skips: the gap is what those do. Means \
             over seeds; every layer is in the JSON (`variance`).",
        ),
    )
}
