//! The lesion study's section (Veit, Wilber & Belongie, NeurIPS 2016), for
//! sweeps run with `[analysis] lesion = true`: test accuracy with SkipBlocks
//! replaced by the identity after training, per cell, mean over seeds with
//! a 95% t-interval. A residual network loses little when blocks go; a
//! plain one collapses.
//!
//! The trainer stores, per trial, `lesion/removed` at step k (k blocks
//! removed: 0 = intact, 1 = the mean over every single removable block,
//! k >= 2 = the mean over random sets, the same sets in every cell of a
//! depth), `lesion/block` at step = the removed block's position, and
//! `lesion/seconds`; the coordinator aggregates each per cell and step
//! (count, sum, sum of squares), as it does the loss curves.

use serde::Serialize;
use sweep_core::stats::{t_interval, Moments};
use sweep_core::{Cell, SweepResults};

use super::design::Design;
use crate::tables::Table;

/// The metrics the section reads (asked of the coordinator with every
/// report).
pub(super) const METRICS: [&str; 3] = [REMOVED, BLOCK, SECONDS];
pub(super) const REMOVED: &str = sweep_core::bmenet::analysis_metrics::LESION_REMOVED;
pub(super) const BLOCK: &str = sweep_core::bmenet::analysis_metrics::LESION_BLOCK;
const SECONDS: &str = sweep_core::bmenet::analysis_metrics::LESION_SECONDS;

/// One cell's mean over seeds, with its interval, at one step of an
/// analysis metric (the JSON rows of the lesion study and the landscape's
/// sharpness).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct LesionPoint {
    #[serde(flatten)]
    pub cell: Cell,
    /// Blocks removed (the lesion study's `removed`), the removed block's
    /// position (`blocks`), or 0 (a per-trial number such as sharpness).
    pub at: i64,
    /// Seeds measured.
    pub n: u64,
    pub mean: f64,
    pub ci95_lo: Option<f64>,
    pub ci95_hi: Option<f64>,
}

/// Every cell's points of `metric`, in the coordinator's order (cell, step).
pub(super) fn points(results: &SweepResults, metric: &str) -> Vec<LesionPoint> {
    results
        .curves
        .iter()
        .filter(|c| c.metric == metric)
        .filter_map(|c| {
            let m = Moments::from_sums(c.n, c.sum, c.sum_sq)?;
            let ci = t_interval(&m, 0.95);
            Some(LesionPoint {
                cell: c.cell.clone(),
                at: c.step,
                n: c.n,
                mean: m.mean,
                ci95_lo: ci.map(|c| c.0),
                ci95_hi: ci.map(|c| c.1),
            })
        })
        .collect()
}

/// The JSON section: `removed` and `blocks` point lists (empty without a
/// lesion study).
pub(super) fn json(results: &SweepResults) -> serde_json::Value {
    serde_json::json!({ "removed": points(results, REMOVED), "blocks": points(results, BLOCK) })
}

fn percent(p: &LesionPoint) -> String {
    match (p.ci95_lo, p.ci95_hi) {
        (Some(lo), Some(hi)) => format!("{:.2} ± {:.2}", p.mean * 100.0, (hi - lo) / 2.0 * 100.0),
        _ => format!("{:.2}", p.mean * 100.0),
    }
}

/// The table: one row per cell, one column per number of blocks removed;
/// `None` without a lesion study.
pub(super) fn table(design: &Design, results: &SweepResults) -> Option<Table> {
    let removed = points(results, REMOVED);
    let max_k = removed.iter().map(|p| p.at).max()?;
    let mut cells: Vec<&Cell> = Vec::new();
    for p in &removed {
        if !cells.contains(&&p.cell) {
            cells.push(&p.cell);
        }
    }
    let names = design.names();
    let mut header: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    header.push("seeds".into());
    header.extend((0..=max_k).map(|k| match k {
        0 => "intact".to_owned(),
        1 => "1 block (each)".to_owned(),
        k => format!("{k} blocks"),
    }));
    let rows = cells.into_iter().map(|cell| {
        let mut row: Vec<String> =
            names.iter().map(|n| cell.get(n).map(sweep_core::Level::display).unwrap_or_default()).collect();
        let of_cell: Vec<&LesionPoint> = removed.iter().filter(|p| &p.cell == cell).collect();
        row.push(of_cell.iter().map(|p| p.n).max().unwrap_or(0).to_string());
        row.extend((0..=max_k).map(|k| of_cell.iter().find(|p| p.at == k).map_or_else(|| "-".into(), |p| percent(p))));
        row
    });
    let seconds = points(results, SECONDS);
    let cost = if seconds.is_empty() {
        String::new()
    } else {
        let mean = seconds.iter().map(|p| p.mean * p.n as f64).sum::<f64>()
            / seconds.iter().map(|p| p.n as f64).sum::<f64>().max(1.0);
        format!(" The study took {mean:.1} s per trial on average (one test-set evaluation per lesion).")
    };
    Some(Table::new("Lesion study: test accuracy % with SkipBlocks removed after training", header, rows).caption(
        format!(
            "Veit et al. (2016): each removed block is replaced by the identity at test time (only blocks whose \
                 input and output shapes match). \"1 block (each)\" is the mean over removing every such block \
                 alone; k blocks, the mean over 4 distinct random sets of k (all of them where there are at most 4), \
                 the same sets in every cell of a depth. Mean \
                 over seeds ± half the 95% t-interval.{cost}"
        ),
    ))
}
