//! Rendering the per-cell report: terminal table, markdown, CSV or JSON.
//! Means come with 95% Student-t intervals over the cell's seeds (never
//! z = 1.96: with 3 seeds that would understate the interval by half).

use serde::Serialize;
use sweep_core::stats::{t_interval, Summary};
use sweep_proto::v1 as pb;

use crate::Format;

/// Mean, sd and 95% interval of one value over a cell's succeeded seeds.
#[derive(Debug, Serialize)]
pub struct Estimate {
    pub n: u64,
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub ci95_lo: Option<f64>,
    pub ci95_hi: Option<f64>,
}

fn estimate(m: Option<&pb::Moments>) -> Estimate {
    let Some(m) = m.filter(|m| m.n > 0) else {
        return Estimate { n: 0, mean: None, sd: None, ci95_lo: None, ci95_hi: None };
    };
    let s = Summary { n: m.n, mean: m.mean, sd: (m.n > 1).then_some(m.sd) };
    let ci = t_interval(&s, 0.95);
    Estimate { n: m.n, mean: Some(m.mean), sd: s.sd, ci95_lo: ci.map(|c| c.0), ci95_hi: ci.map(|c| c.1) }
}

/// One report row (the JSON format is an array of these; see the README).
#[derive(Debug, Serialize)]
pub struct Row {
    pub depth: u32,
    pub skip: bool,
    pub init: String,
    pub batchnorm: bool,
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

pub fn rows(resp: &pb::ReportResponse) -> Vec<Row> {
    resp.cells
        .iter()
        .map(|c| Row {
            depth: c.depth,
            skip: c.skip,
            init: c.init.clone(),
            batchnorm: c.batchnorm,
            seeds_total: c.seeds_total,
            succeeded: c.succeeded,
            diverged: c.diverged,
            failed: c.failed,
            running: c.running,
            queued: c.queued,
            test_accuracy: estimate(c.test_accuracy.as_ref()),
            train_loss: estimate(c.train_loss.as_ref()),
            test_loss: estimate(c.test_loss.as_ref()),
            best_test_accuracy: estimate(c.best_test_accuracy.as_ref()),
            wall_seconds: estimate(c.wall_seconds.as_ref()),
        })
        .collect()
}

/// `mean ± half-width` (or just the mean with one seed, or `-` with none).
fn pm(e: &Estimate, scale: f64, digits: usize) -> String {
    match (e.mean, e.ci95_lo, e.ci95_hi) {
        (Some(m), Some(lo), Some(hi)) => format!("{:.d$} ± {:.d$}", m * scale, (hi - lo) / 2.0 * scale, d = digits),
        (Some(m), _, _) => format!("{:.d$}", m * scale, d = digits),
        _ => "-".into(),
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

const HEADER: [&str; 10] = [
    "depth",
    "skip",
    "init",
    "batchnorm",
    "seeds done",
    "test acc % (95% CI)",
    "train loss (95% CI)",
    "best acc %",
    "diverged/failed",
    "wall s/trial",
];

fn cells(r: &Row) -> [String; 10] {
    [
        r.depth.to_string(),
        on_off(r.skip).into(),
        r.init.clone(),
        on_off(r.batchnorm).into(),
        format!("{}/{}", r.succeeded, r.seeds_total),
        pm(&r.test_accuracy, 100.0, 2),
        pm(&r.train_loss, 1.0, 4),
        r.best_test_accuracy.mean.map(|m| format!("{:.2}", m * 100.0)).unwrap_or_else(|| "-".into()),
        format!("{}/{}", r.diverged, r.failed),
        r.wall_seconds.mean.map(|m| format!("{m:.1}")).unwrap_or_else(|| "-".into()),
    ]
}

fn notes(rows: &[Row]) -> Vec<String> {
    let mut notes = Vec::new();
    let pending: u64 = rows.iter().map(|r| r.running + r.queued).sum();
    if pending > 0 {
        notes.push(format!("{pending} trials are still queued or running: these numbers will change."));
    }
    let diverged: u64 = rows.iter().map(|r| r.diverged).sum();
    if diverged > 0 {
        notes.push(format!("{diverged} trials diverged (loss became NaN/inf); they are counted in diverged/failed, not in the means."));
    }
    let failed: u64 = rows.iter().map(|r| r.failed).sum();
    if failed > 0 {
        notes.push(format!("{failed} trials failed after all their attempts; see `sweep status`."));
    }
    let done: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.succeeded).collect();
    if done.len() > 1 {
        notes.push("Cells have different numbers of finished seeds: intervals are not equally wide.".into());
    }
    notes.push("Intervals are 95% Student-t over the seeds of each cell; a cell with one seed has none.".into());
    notes
}

pub fn render(resp: &pb::ReportResponse, format: Format) -> anyhow::Result<String> {
    let rows = rows(resp);
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&serde_json::json!({
            "sweep_id": resp.sweep_id,
            "cells": rows,
        }))? + "\n",
        Format::Csv => {
            let mut out = String::from(
                "depth,skip,init,batchnorm,seeds_total,succeeded,diverged,failed,running,queued,\
                 test_accuracy_mean,test_accuracy_ci95_lo,test_accuracy_ci95_hi,\
                 train_loss_mean,train_loss_ci95_lo,train_loss_ci95_hi,best_test_accuracy_mean,wall_seconds_mean\n",
            );
            let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
            for r in &rows {
                out += &format!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                    r.depth,
                    r.skip,
                    r.init,
                    r.batchnorm,
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
        Format::Markdown => {
            let mut out = format!("## Sweep `{}`\n\n| {} |\n|{}\n", resp.sweep_id, HEADER.join(" | "), "---|".repeat(HEADER.len()));
            for r in &rows {
                out += &format!("| {} |\n", cells(r).join(" | "));
            }
            out += "\n";
            for n in notes(&rows) {
                out += &format!("- {n}\n");
            }
            out
        }
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            table.set_header(HEADER);
            for r in &rows {
                table.add_row(cells(r));
            }
            let mut out = format!("Sweep {}\n{table}\n", resp.sweep_id);
            for n in notes(&rows) {
                out += &format!("  * {n}\n");
            }
            out
        }
    })
}
