//! A metric against its step, one curve per focus level at the selected
//! cell, mean over seeds with a 95% band: `loss-curve` (training loss
//! against iterations) and the lesion study's `lesion-removed` (accuracy
//! against blocks removed) and `lesion-blocks` (accuracy against the
//! removed block). [`Kind`] says which.

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
    /// The reference metric's (x, mean), drawn dashed.
    reference: Vec<(f64, f64)>,
}

/// What a curve picture shows.
pub(super) struct Kind {
    /// File stem, e.g. `loss-curve`.
    pub name: &'static str,
    pub metric: &'static str,
    /// The title before the held x level, e.g. "Training loss vs iterations".
    pub title: &'static str,
    pub x_desc: &'static str,
    pub y_desc: &'static str,
    /// Values are fractions shown as percentages.
    pub percent: bool,
    /// The x axis counts from 0 (blocks removed) rather than 1.
    pub x_from_zero: bool,
    /// A point's x from its step; `None` leaves the point out.
    pub x_of: fn(i64) -> Option<f64>,
    /// Plot log10 of the mean (no band: the values span decades).
    pub log10: bool,
    /// A second metric drawn dashed in each line's colour (a prediction).
    pub reference: Option<&'static str>,
}

fn step_as_x(step: i64) -> Option<f64> {
    Some(step as f64)
}

/// The layer of a `variance/*` step at initialisation (epoch 0).
fn layer_at_init(step: i64) -> Option<f64> {
    (step < sweep_core::bmenet::VARIANCE_STEPS).then_some(step as f64)
}

pub(super) const LOSS: Kind = Kind {
    name: "loss-curve",
    metric: "train_loss",
    title: "Training loss vs iterations",
    x_desc: "iterations (training batches)",
    y_desc: "training loss (cross-entropy)",
    percent: false,
    x_from_zero: false,
    x_of: step_as_x,
    log10: false,
    reference: None,
};

pub(super) const LESION_REMOVED: Kind = Kind {
    name: "lesion-removed",
    metric: crate::report::lesion::REMOVED,
    title: "Lesion: test accuracy vs blocks removed",
    x_desc: "SkipBlocks replaced by the identity after training",
    y_desc: "test accuracy (%)",
    percent: true,
    x_from_zero: true,
    x_of: step_as_x,
    log10: false,
    reference: None,
};

pub(super) const LESION_BLOCKS: Kind = Kind {
    name: "lesion-blocks",
    metric: crate::report::lesion::BLOCK,
    title: "Lesion: test accuracy with one block removed",
    x_desc: "position of the removed block (input to output)",
    x_from_zero: false,
    ..LESION_REMOVED
};

pub(super) const LANDSCAPE_1D: Kind = Kind {
    name: "landscape-1d",
    metric: crate::report::landscape::LOSS,
    title: "Loss landscape along a filter-normalised direction",
    x_desc: "distance along the direction (0: the trained weights)",
    ..LOSS
};

pub(super) const VARIANCE_FORWARD: Kind = Kind {
    name: "variance-forward",
    metric: crate::report::variance::FORWARD,
    title: "Forward variance per layer at initialisation (solid: measured, dashed: Eq. 5)",
    x_desc: "weight layer (input to output)",
    y_desc: "log10 variance of the layer's input",
    percent: false,
    x_from_zero: false,
    x_of: layer_at_init,
    log10: true,
    reference: Some(crate::report::variance::FORWARD_PREDICTED),
};

pub(super) const VARIANCE_BACKWARD: Kind = Kind {
    name: "variance-backward",
    metric: crate::report::variance::BACKWARD,
    title: "Gradient variance per layer at initialisation (solid: measured, dashed: Eq. 6)",
    y_desc: "log10 variance of dLoss/d(layer output)",
    reference: Some(crate::report::variance::BACKWARD_PREDICTED),
    ..VARIANCE_FORWARD
};

pub(super) struct CurveData {
    pub title: String,
    subtitle: String,
    curves: Vec<Curve>,
    x_desc: &'static str,
    y_desc: &'static str,
    percent: bool,
    x_from_zero: bool,
    log10: bool,
}

/// Each line's points of `metric` (index into the focus levels -> points,
/// most seeds).
fn lines(
    r: &FullReport,
    sel: &Selection,
    kind: &Kind,
    metric: &str,
    x_of: &dyn Fn(i64) -> Option<f64>,
) -> BTreeMap<usize, (Vec<Point>, u64)> {
    let mut by_line: BTreeMap<usize, (Vec<Point>, u64)> = BTreeMap::new();
    let scale = if kind.percent { 100.0 } else { 1.0 };
    for c in r.results.curves.iter().filter(|c| c.metric == metric) {
        let Some(line) = sel.line_of(&c.cell) else { continue };
        let Some(x) = x_of(c.step) else { continue };
        let Some((m, lo, hi)) = band(c.n, c.sum, c.sum_sq) else { continue };
        let point = if kind.log10 {
            if m <= 0.0 {
                continue;
            }
            (x, m.log10(), m.log10(), m.log10())
        } else {
            (x, m * scale, lo * scale, hi * scale)
        };
        let i = sel.lines.iter().position(|l| *l == line).unwrap_or(0);
        let e = by_line.entry(i).or_default();
        e.0.push(point);
        e.1 = e.1.max(c.n);
    }
    by_line
}

pub(super) fn data(r: &FullReport, sel: &Selection, kind: &Kind) -> Option<CurveData> {
    data_mapped(r, sel, kind, &kind.x_of)
}

/// [`data`] with the steps mapped to x by `x_of` (for an axis that depends
/// on the sweep's settings).
pub(super) fn data_mapped(
    r: &FullReport,
    sel: &Selection,
    kind: &Kind,
    x_of: &dyn Fn(i64) -> Option<f64>,
) -> Option<CurveData> {
    let by_line = lines(r, sel, kind, kind.metric, x_of);
    if by_line.is_empty() {
        return None;
    }
    let mut references = kind.reference.map(|m| lines(r, sel, kind, m, x_of)).unwrap_or_default();
    let curves = by_line
        .into_iter()
        .map(|(i, (points, n))| {
            let level = sel.lines.get(i).cloned().unwrap_or(sweep_core::Level::Bool(true));
            Curve {
                label: format!("{} ({} seed{})", sel.line_label(&level), n, if n == 1 { "" } else { "s" }),
                color: sel.color(&level),
                points,
                reference: references
                    .remove(&i)
                    .map(|(p, _)| p.iter().map(|p| (p.0, p.1)).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let mut subtitle =
        if kind.log10 { "mean over seeds".to_string() } else { "mean over seeds, band = 95% t-interval".to_string() };
    if !sel.fixed.is_empty() {
        subtitle += &format!("; {}", sel.fixed);
    }
    let title = format!("{}{}", kind.title, sel.x_at());
    Some(CurveData {
        title,
        subtitle,
        curves,
        x_desc: kind.x_desc,
        y_desc: kind.y_desc,
        percent: kind.percent,
        x_from_zero: kind.x_from_zero,
        log10: kind.log10,
    })
}

pub(super) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &CurveData) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (x_max, mut y_min, mut y_max) = d
        .curves
        .iter()
        .flat_map(|c| c.points.iter().copied().chain(c.reference.iter().map(|&(x, y)| (x, y, y, y))))
        .fold((1.0f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), p| (x.max(p.0), lo.min(p.2), hi.max(p.3)));
    if !(y_min.is_finite() && y_max.is_finite()) {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let y_lo = if d.log10 { y_min - pad } else { (y_min - pad).max(0.0) };
    let mut y_hi = y_max + pad;
    if d.percent {
        y_hi = y_hi.min(100.0);
    }
    let x_data_min = d.curves.iter().flat_map(|c| &c.points).map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_min = if d.x_from_zero { 0.0 } else { 1.0f64.min(x_max) }.min(x_data_min);
    let x_pad = if d.x_from_zero { 0.1 * x_max.max(1.0) } else { 0.02 * x_max };
    let root = title_area(root, &d.title, &d.subtitle)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d((x_min - x_pad).min(0.0)..x_max + x_pad, y_lo..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(d.x_desc)
        .y_desc(d.y_desc)
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
        if !c.reference.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(c.reference.iter().copied(), 8, 6, color.stroke_width(2)))
                .map_err(err)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}
