//! `<metric>-vs-<x>`: the report's metric against an ordered factor, one
//! line per focus level (means of cell means over the other factors), with
//! 95% interval bars. Integer factors (depth 8, 16, 32, 64) are evenly
//! spaced categories; float factors whose levels span two decades or more
//! (learning rates) are placed on a log axis, other floats linearly.

use std::collections::BTreeMap;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use sweep_core::effects::{self, Observation};
use sweep_core::{Level, TrialState};

use super::style::{err, legend, title_area, FONT};
use super::Selection;
use crate::report::FullReport;

/// How x levels are placed on the axis.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Axis {
    /// Evenly spaced, in level order.
    Categories,
    /// log10 of the value.
    Log,
    Linear,
}

struct Line {
    label: String,
    color: RGBColor,
    /// (x level, mean, lo, hi) in the metric's display scale.
    points: Vec<(f64, f64, f64, f64)>,
}

pub(super) struct MetricData {
    pub title: String,
    pub x_name: String,
    subtitle: String,
    y_desc: String,
    /// The x levels (as numbers) in order.
    xs: Vec<f64>,
    axis: Axis,
    /// Whether the values are percentages (0..100).
    percent: bool,
    lines: Vec<Line>,
}

pub(super) fn data(r: &FullReport, sel: &Selection) -> anyhow::Result<Option<MetricData>> {
    let Some(x) = sel.x.clone() else { return Ok(None) };
    let d = &r.design;
    let factors: Vec<effects::Factor> = r.analysis.factors.clone();
    let obs: Vec<Observation> = r
        .results
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Succeeded)
        .filter_map(|t| Some(Observation { levels: d.level_texts(&t.cell), seed: t.seed, value: r.metric.value(t)? }))
        .collect();
    if obs.is_empty() {
        return Ok(None);
    }
    let mut by = vec![x.clone()];
    by.extend(sel.focus.iter().filter(|f| **f != x).cloned());
    let opts = effects::Options { by: by.clone(), ..Default::default() };
    let a = effects::analyze(&factors, &obs, &opts).map_err(|e| anyhow!("{e}"))?;
    let (scale, _, _) = r.metric.scale();
    let x_levels: Vec<Level> = d.factor(&x).map(|f| f.levels.clone()).unwrap_or_default();
    let value_of = |text: &str| x_levels.iter().find(|l| l.to_string() == text).and_then(Level::as_f64);
    let mut lines: BTreeMap<usize, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
    for g in &a.groups {
        let (Some(c), Some(xv)) = (g.mean, value_of(&g.levels[&x])) else { continue };
        let line = match by.get(1) {
            Some(f) => {
                let level = d.factor(f).and_then(|df| df.levels.iter().find(|l| l.to_string() == g.levels[f]));
                level.and_then(|l| sel.lines.iter().position(|x| x == l)).unwrap_or(0)
            }
            None => 0,
        };
        let (lo, hi) = (c.ci95_lo.unwrap_or(c.estimate), c.ci95_hi.unwrap_or(c.estimate));
        lines.entry(line).or_default().push((xv, c.estimate * scale, lo * scale, hi * scale));
    }
    let lines = lines
        .into_iter()
        .map(|(i, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let level = sel.lines.get(i).cloned().unwrap_or(Level::Bool(true));
            Line { label: sel.line_label(&level), color: sel.color(&level), points }
        })
        .collect();
    let xs: Vec<f64> = x_levels.iter().filter_map(Level::as_f64).collect();
    let floats = x_levels.iter().any(|l| matches!(l, Level::Float(_)));
    let (min, max) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let axis = if !floats {
        Axis::Categories
    } else if min > 0.0 && max / min >= 100.0 {
        Axis::Log
    } else {
        Axis::Linear
    };
    let averaged: Vec<&str> =
        d.factors.iter().filter(|f| f.levels.len() > 1 && !by.contains(&f.name)).map(|f| f.name.as_str()).collect();
    let mut subtitle = "mean over seeds, bars = 95% t-interval".to_string();
    if !averaged.is_empty() {
        subtitle += &format!("; averaged over {} (mean of cell means)", averaged.join(", "));
    }
    let label = r.metric.label();
    let title = format!("{}{} vs {x}", label[..1].to_uppercase(), label[1..].trim_end_matches(" (%)"));
    Ok(Some(MetricData {
        title,
        x_name: x.clone(),
        subtitle,
        y_desc: label.to_owned(),
        xs,
        axis,
        percent: scale == 100.0,
        lines,
    }))
}

impl MetricData {
    /// Where a level sits on the axis.
    fn place(&self, v: f64) -> f64 {
        match self.axis {
            Axis::Categories => self.xs.iter().position(|&x| x == v).unwrap_or(0) as f64,
            Axis::Log => v.log10(),
            Axis::Linear => v,
        }
    }
}

pub(super) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &MetricData) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let pts = d.lines.iter().flat_map(|l| &l.points);
    let (mut lo, mut hi) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.2), hi.max(p.3)));
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (0.0, if d.percent { 100.0 } else { 1.0 });
    }
    let pad = ((hi - lo) * 0.1).max(if d.percent { 0.5 } else { 1e-3 });
    let (y_lo, y_hi) = if d.percent { ((lo - pad).max(0.0), (hi + pad).min(100.0)) } else { (lo - pad, hi + pad) };
    let placed: Vec<f64> = d.xs.iter().map(|&v| d.place(v)).collect();
    let (x_min, x_max) = placed.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (x_min, x_max) = if x_min.is_finite() { (x_min, x_max) } else { (0.0, 1.0) };
    let x_pad = if d.axis == Axis::Categories { 0.5 } else { ((x_max - x_min) * 0.08).max(0.5) };
    let root = title_area(root, &d.title, &d.subtitle)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d((x_min - x_pad)..(x_max + x_pad), y_lo..y_hi)
        .map_err(err)?;
    // Tick labels only at the levels: the value written as the grid wrote it.
    let ticks: Vec<(f64, String)> = d.xs.iter().zip(&placed).map(|(&v, &p)| (p, Level::Float(v).to_string())).collect();
    let categories = d.axis == Axis::Categories;
    let fmt = move |x: &f64| {
        ticks
            .iter()
            .find(|(p, _)| (p - x).abs() < 1e-6)
            .map(|(_, t)| if categories { t.trim_end_matches(".0").to_owned() } else { t.clone() })
            .unwrap_or_default()
    };
    let x_desc = match d.axis {
        Axis::Log => format!("{} (log scale)", d.x_name),
        _ => d.x_name.clone(),
    };
    let y_fmt = |y: &f64| if d.percent { format!("{y:.0}") } else { format!("{y:.3}") };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(d.y_desc.clone())
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .x_labels(if categories { d.xs.len().max(1) } else { 200 })
        .x_label_formatter(&fmt)
        .y_label_formatter(&y_fmt)
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(err)?;
    let k = d.lines.len().max(1) as f64;
    let dodge = if categories { 0.06 } else { (x_max - x_min).max(1.0) * 0.006 };
    for (i, l) in d.lines.iter().enumerate() {
        let dx = (i as f64 - (k - 1.0) / 2.0) * dodge;
        let x = |v: f64| d.place(v) + dx;
        let color = l.color;
        chart
            .draw_series(
                l.points.iter().map(|p| ErrorBar::new_vertical(x(p.0), p.2, p.1, p.3, color.stroke_width(2), 12)),
            )
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(l.points.iter().map(|p| (x(p.0), p.1)), color.stroke_width(3)))
            .map_err(err)?
            .label(l.label.clone())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (28, 0)], color.stroke_width(3))
                    + Circle::new((14, 0), 6, color.filled())
            });
        chart.draw_series(l.points.iter().map(|p| Circle::new((x(p.0), p.1), 6, color.filled()))).map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    Ok(())
}
