//! `loss-curve`: training loss against iterations, one curve per focus
//! level at the selected cell, mean over seeds with a 95% band.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{err, legend, thousands, title_area, FONT};
use super::{band, Point, Selection};
use crate::report::FullReport;

pub(super) struct Curve {
    label: String,
    color: RGBColor,
    /// (step, mean, lo, hi)
    points: Vec<(f64, f64, f64, f64)>,
}

pub(super) struct LossData {
    pub title: String,
    subtitle: String,
    curves: Vec<Curve>,
}

pub(super) fn data(r: &FullReport, sel: &Selection) -> Option<LossData> {
    let mut by_line: BTreeMap<usize, (Vec<Point>, u64)> = BTreeMap::new();
    for c in r.results.curves.iter().filter(|c| c.metric == "train_loss") {
        let Some(line) = sel.line_of(&c.cell) else { continue };
        let Some((m, lo, hi)) = band(c.n, c.sum, c.sum_sq) else { continue };
        let i = sel.lines.iter().position(|l| *l == line).unwrap_or(0);
        let e = by_line.entry(i).or_default();
        e.0.push((c.step as f64, m, lo, hi));
        e.1 = e.1.max(c.n);
    }
    if by_line.is_empty() {
        return None;
    }
    let curves = by_line
        .into_iter()
        .map(|(i, (points, n))| {
            let level = sel.lines.get(i).cloned().unwrap_or(sweep_core::Level::Bool(true));
            Curve {
                label: format!("{} ({} seed{})", sel.line_label(&level), n, if n == 1 { "" } else { "s" }),
                color: sel.color(&level),
                points,
            }
        })
        .collect();
    let mut subtitle = "mean over seeds, band = 95% t-interval".to_string();
    if !sel.fixed.is_empty() {
        subtitle += &format!("; {}", sel.fixed);
    }
    let title = format!("Training loss vs iterations{}", sel.x_at());
    Some(LossData { title, subtitle, curves })
}

pub(super) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &LossData) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (x_max, mut y_min, mut y_max) = d
        .curves
        .iter()
        .flat_map(|c| &c.points)
        .fold((1.0f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), p| (x.max(p.0), lo.min(p.2), hi.max(p.3)));
    if !(y_min.is_finite() && y_max.is_finite()) {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let (y_lo, y_hi) = ((y_min - pad).max(0.0), y_max + pad);
    let root = title_area(root, &d.title, &d.subtitle)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max * 1.02, y_lo..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("iterations (training batches)")
        .y_desc("training loss (cross-entropy)")
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .x_label_formatter(&|x| thousands(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(err)?;
    for c in &d.curves {
        if c.points.iter().any(|p| p.3 > p.2) {
            let mut poly: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.3)).collect();
            poly.extend(c.points.iter().rev().map(|p| (p.0, p.2)));
            chart.draw_series(std::iter::once(Polygon::new(poly, c.color.mix(0.18).filled()))).map_err(err)?;
        }
        let color = c.color;
        chart
            .draw_series(LineSeries::new(c.points.iter().map(|p| (p.0, p.1)), color.stroke_width(3)))
            .map_err(err)?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 28, y)], color.stroke_width(3)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}
