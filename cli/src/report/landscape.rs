//! The loss-landscape section (Li et al., NeurIPS 2018), for sweeps run
//! with `[analysis] landscape = true`.
//!
//! The trainer stores, per trial, `landscape/loss` and `landscape/accuracy`
//! at step = grid point (row-major: `i * resolution + j`, `i` along the
//! first direction), `landscape/sharpness` (the mean loss rise at distance
//! span/2 on the axes) and `landscape/seconds`. The grid (resolution, span,
//! dims) comes from the trials' settings.

use serde::Serialize;
use sweep_core::bmenet::LandscapeConfig;
use sweep_core::{Cell, SweepResults};

use super::design::Design;
use super::lesion::LesionPoint;
use crate::tables::Table;

pub(super) const LOSS: &str = sweep_core::bmenet::analysis_metrics::LANDSCAPE_LOSS;
pub(super) const ACCURACY: &str = sweep_core::bmenet::analysis_metrics::LANDSCAPE_ACCURACY;
const SHARPNESS: &str = sweep_core::bmenet::analysis_metrics::LANDSCAPE_SHARPNESS;
const SECONDS: &str = sweep_core::bmenet::analysis_metrics::LANDSCAPE_SECONDS;
/// The metrics the section reads.
pub(super) const METRICS: [&str; 4] = [LOSS, ACCURACY, SHARPNESS, SECONDS];

/// The grid the sweep's trials asked for (the first trial that asked).
pub(super) fn config(results: &SweepResults) -> Option<LandscapeConfig> {
    results.trials.iter().find_map(|t| LandscapeConfig::of(&t.settings))
}

/// One grid point of one cell: means over seeds (the JSON rows).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct GridPoint {
    #[serde(flatten)]
    pub cell: Cell,
    /// Coordinates along the first and (2-D) second direction.
    pub a: f64,
    pub b: Option<f64>,
    pub n: u64,
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
}

/// The (a, b) coordinates of grid point `step`.
pub(super) fn coordinates(cfg: &LandscapeConfig, step: i64) -> (f64, Option<f64>) {
    let r = i64::from(cfg.resolution);
    if cfg.dims == 2 {
        (cfg.coordinate((step / r) as u32), Some(cfg.coordinate((step % r) as u32)))
    } else {
        (cfg.coordinate(step as u32), None)
    }
}

/// Every cell's grid points.
pub(super) fn points(results: &SweepResults, cfg: &LandscapeConfig) -> Vec<GridPoint> {
    let mut out: Vec<GridPoint> = Vec::new();
    for c in results.curves.iter().filter(|c| (c.metric == LOSS || c.metric == ACCURACY) && c.n > 0) {
        let (a, b) = coordinates(cfg, c.step);
        let i = match out.iter().position(|p| p.cell == c.cell && p.a == a && p.b == b) {
            Some(i) => i,
            None => {
                out.push(GridPoint { cell: c.cell.clone(), a, b, n: 0, loss: None, accuracy: None });
                out.len() - 1
            }
        };
        let mean = Some(c.sum / c.n as f64);
        out[i].n = out[i].n.max(c.n);
        if c.metric == LOSS {
            out[i].loss = mean;
        } else {
            out[i].accuracy = mean;
        }
    }
    out
}

/// Each cell's sharpness over seeds (the JSON rows and the table; `at`
/// is always 0).
fn sharpness(results: &SweepResults) -> Vec<LesionPoint> {
    super::lesion::points(results, SHARPNESS)
}

/// The JSON section (`null` without the analysis).
pub(super) fn json(results: &SweepResults) -> serde_json::Value {
    match config(results) {
        None => serde_json::Value::Null,
        Some(cfg) => serde_json::json!({
            "resolution": cfg.resolution,
            "span": cfg.span,
            "images": cfg.images,
            "dims": cfg.dims,
            "points": points(results, &cfg),
            "sharpness": sharpness(results),
        }),
    }
}

/// The table: per cell, the loss at the trained weights and the sharpness
/// with its interval over seeds; `None` without the analysis.
pub(super) fn table(design: &Design, results: &SweepResults) -> Option<Table> {
    let cfg = config(results)?;
    let sharp = sharpness(results);
    if sharp.is_empty() {
        return None;
    }
    let pts = points(results, &cfg);
    let names = design.names();
    let mut header: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    header.extend(["seeds", "loss at the trained weights", "sharpness (95% CI)"].map(str::to_owned));
    let rows = sharp.iter().map(|s| {
        let mut row: Vec<String> =
            names.iter().map(|n| s.cell.get(n).map(sweep_core::Level::display).unwrap_or_default()).collect();
        row.push(s.n.to_string());
        let origin = pts.iter().find(|p| p.cell == s.cell && p.a == 0.0 && p.b.is_none_or(|b| b == 0.0));
        row.push(origin.and_then(|p| p.loss).map_or_else(|| "-".into(), |l| format!("{l:.4}")));
        row.push(match (s.ci95_lo, s.ci95_hi) {
            (Some(lo), Some(hi)) => format!("{:.4} [{lo:.4}, {hi:.4}]", s.mean),
            _ => format!("{:.4}", s.mean),
        });
        row
    });
    let seconds: Vec<f64> =
        results.curves.iter().filter(|c| c.metric == SECONDS && c.n > 0).map(|c| c.sum / c.n as f64).collect();
    let cost = if seconds.is_empty() {
        String::new()
    } else {
        format!(" It took {:.1} s per trial on average.", seconds.iter().sum::<f64>() / seconds.len() as f64)
    };
    Some(Table::new("Loss landscape (Li et al.): training loss around the trained weights", header, rows).caption(
        format!(
            "{} filter-normalised random direction{} (each filter scaled to the trained filter's norm; biases and \
             batch norm left alone), {} points per direction over [-{span}, {span}], loss on the first {} training \
             images with batch norm's running statistics: {} evaluations per trial.{cost} Sharpness: the mean loss \
             rise at distance {half} along the axes; lower is flatter. Pictures: landscape-{}d.",
            cfg.dims,
            if cfg.dims == 1 { "" } else { "s" },
            cfg.resolution,
            cfg.images,
            cfg.points(),
            cfg.dims,
            span = cfg.span,
            half = cfg.span / 2.0,
        ),
    ))
}
