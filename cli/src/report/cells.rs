//! The per-cell rows: counts by state and mean, sd and 95% interval of each
//! result value over the cell's succeeded seeds; as table cells and CSV.

use std::collections::BTreeMap;

use serde::Serialize;
use sweep_core::stats::{t_interval, Moments};
use sweep_core::{Cell, Level, TrialResult, TrialState};

use super::design::{row_order, Design};

/// Mean, sd and 95% interval of one value over a cell's succeeded seeds.
#[derive(Debug, Serialize)]
pub(crate) struct Estimate {
    pub n: u64,
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub ci95_lo: Option<f64>,
    pub ci95_hi: Option<f64>,
}

/// The estimate over samples (a cell's succeeded seeds).
pub(super) fn estimate_of(xs: &[f64]) -> Estimate {
    match Moments::from_samples(xs) {
        None => Estimate { n: 0, mean: None, sd: None, ci95_lo: None, ci95_hi: None },
        Some(s) => {
            let ci = t_interval(&s, 0.95);
            Estimate { n: s.n, mean: Some(s.mean), sd: s.sd, ci95_lo: ci.map(|c| c.0), ci95_hi: ci.map(|c| c.1) }
        }
    }
}

/// One report row (the JSON format is an array of these, each with one key
/// per factor; see the README).
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    #[serde(flatten)]
    pub cell: Cell,
    pub seeds_total: u64,
    pub succeeded: u64,
    pub diverged: u64,
    pub failed: u64,
    pub running: u64,
    pub queued: u64,
    pub test_accuracy: Estimate,
    pub train_loss: Estimate,
    pub test_loss: Estimate,
    pub best_test_accuracy: Estimate,
    pub wall_seconds: Estimate,
}

/// One row per cell (trials of the same levels with different settings
/// together), in display order.
pub(super) fn cell_rows(design: &Design, trials: &[TrialResult]) -> Vec<Row> {
    let mut by: BTreeMap<Vec<Level>, Vec<&TrialResult>> = BTreeMap::new();
    for t in trials {
        by.entry(row_order(design, &t.cell)).or_default().push(t);
    }
    by.into_values()
        .map(|ts| {
            let count = |s: TrialState| ts.iter().filter(|t| t.state == s).count() as u64;
            let ok: Vec<&&TrialResult> = ts.iter().filter(|t| t.state == TrialState::Succeeded).collect();
            let est =
                |f: fn(&TrialResult) -> Option<f64>| estimate_of(&ok.iter().filter_map(|t| f(t)).collect::<Vec<_>>());
            Row {
                cell: (*ts[0].cell).clone(),
                seeds_total: ts.len() as u64,
                succeeded: ok.len() as u64,
                diverged: count(TrialState::Diverged),
                failed: count(TrialState::Failed),
                running: count(TrialState::Running),
                queued: count(TrialState::Queued),
                test_accuracy: est(|t| t.final_test_accuracy),
                train_loss: est(|t| t.final_train_loss),
                test_loss: est(|t| t.final_test_loss),
                best_test_accuracy: est(|t| t.best_test_accuracy),
                wall_seconds: est(|t| t.wall_seconds),
            }
        })
        .collect()
}

/// `mean ± half-width` (or just the mean with one seed, or `-` with none).
pub(super) fn pm(e: &Estimate, scale: f64, digits: usize) -> String {
    match (e.mean, e.ci95_lo, e.ci95_hi) {
        (Some(m), Some(lo), Some(hi)) => format!("{:.d$} ± {:.d$}", m * scale, (hi - lo) / 2.0 * scale, d = digits),
        (Some(m), _, _) => format!("{:.d$}", m * scale, d = digits),
        _ => "-".into(),
    }
}

/// The value columns after the factor columns.
const VALUE_HEADER: [&str; 6] =
    ["seeds done", "test acc % (95% CI)", "train loss (95% CI)", "best acc %", "diverged/failed", "wall s/trial"];

/// The table's header: one column per factor, then the values.
pub(super) fn header(design: &Design) -> Vec<String> {
    design.names().into_iter().map(str::to_owned).chain(VALUE_HEADER.iter().map(|s| (*s).to_owned())).collect()
}

/// One row as table cells.
pub(super) fn cells(design: &Design, r: &Row) -> Vec<String> {
    let mut out: Vec<String> =
        design.factors.iter().map(|f| r.cell.get(&f.name).map(Level::display).unwrap_or_default()).collect();
    out.extend([
        format!("{}/{}", r.succeeded, r.seeds_total),
        pm(&r.test_accuracy, 100.0, 2),
        pm(&r.train_loss, 1.0, 4),
        r.best_test_accuracy.mean.map(|m| format!("{:.2}", m * 100.0)).unwrap_or_else(|| "-".into()),
        format!("{}/{}", r.diverged, r.failed),
        r.wall_seconds.mean.map(|m| format!("{m:.1}")).unwrap_or_else(|| "-".into()),
    ]);
    out
}

/// A CSV field, quoted when it must be.
pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The cell rows as CSV: one column per factor (levels in their plain form),
/// then the documented value columns.
pub(super) fn cells_csv(design: &Design, rows: &[Row]) -> String {
    let mut out: String = design.names().iter().map(|n| format!("{},", csv_field(n))).collect();
    out += "seeds_total,succeeded,diverged,failed,running,queued,\
            test_accuracy_mean,test_accuracy_ci95_lo,test_accuracy_ci95_hi,\
            train_loss_mean,train_loss_ci95_lo,train_loss_ci95_hi,best_test_accuracy_mean,wall_seconds_mean\n";
    let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in rows {
        for factor in &design.factors {
            out += &csv_field(&r.cell.get(&factor.name).map(Level::to_string).unwrap_or_default());
            out.push(',');
        }
        out += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.seeds_total,
            r.succeeded,
            r.diverged,
            r.failed,
            r.running,
            r.queued,
            f(r.test_accuracy.mean),
            f(r.test_accuracy.ci95_lo),
            f(r.test_accuracy.ci95_hi),
            f(r.train_loss.mean),
            f(r.train_loss.ci95_lo),
            f(r.train_loss.ci95_hi),
            f(r.best_test_accuracy.mean),
            f(r.wall_seconds.mean),
        );
    }
    out
}
