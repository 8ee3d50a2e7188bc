//! `landscape-2d`: the training loss on the grid around the trained weights
//! (Li et al.'s Figure 5 in spirit), one panel per focus level (skip on vs
//! off) at the selected cell, side by side on one colour scale (log10 of
//! the loss, mean over seeds), the trained weights marked at the centre.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{err, title_area, FONT};
use super::Selection;
use crate::report::landscape::{config, coordinates, LOSS};
use crate::report::FullReport;

pub(super) struct Panel {
    label: String,
    /// (a, b, log10 loss)
    cells: Vec<(f64, f64, f64)>,
}

pub(super) struct LandscapeData {
    pub title: String,
    subtitle: String,
    panels: Vec<Panel>,
    span: f64,
    /// Half a grid step (each point is drawn as a square of this radius).
    half: f64,
    range: (f64, f64),
}

/// The 2-D picture's data; `None` for a 1-D or absent landscape.
pub(super) fn data(r: &FullReport, sel: &Selection) -> Option<LandscapeData> {
    let cfg = config(&r.results).filter(|c| c.dims == 2)?;
    let mut panels: Vec<(usize, Panel)> = Vec::new();
    for c in r.results.curves.iter().filter(|c| c.metric == LOSS && c.n > 0) {
        let Some(line) = sel.line_of(&c.cell) else { continue };
        let mean = c.sum / c.n as f64;
        if mean <= 0.0 || !mean.is_finite() {
            continue;
        }
        let (a, b) = coordinates(&cfg, c.step);
        let i = sel.lines.iter().position(|l| *l == line).unwrap_or(0);
        match panels.iter_mut().find(|(j, _)| *j == i) {
            Some((_, p)) => p.cells.push((a, b.unwrap_or(0.0), mean.log10())),
            None => panels
                .push((i, Panel { label: sel.line_label(&line), cells: vec![(a, b.unwrap_or(0.0), mean.log10())] })),
        }
    }
    if panels.is_empty() {
        return None;
    }
    panels.sort_by_key(|(i, _)| *i);
    let values = panels.iter().flat_map(|(_, p)| p.cells.iter().map(|c| c.2));
    let range = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut subtitle = format!(
        "log10 training loss, mean over seeds; {} points per direction, one colour scale ({:.2} to {:.2})",
        cfg.resolution, range.0, range.1
    );
    if !sel.fixed.is_empty() {
        subtitle += &format!("; {}", sel.fixed);
    }
    Some(LandscapeData {
        title: format!("Loss landscape around the trained weights{}", sel.x_at()),
        subtitle,
        panels: panels.into_iter().map(|(_, p)| p).collect(),
        span: cfg.span,
        half: cfg.span / f64::from(cfg.resolution - 1).max(1.0),
        range,
    })
}

pub(super) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &LandscapeData) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let root = title_area(root, &d.title, &d.subtitle)?;
    let areas = root.split_evenly((1, d.panels.len()));
    let (lo, hi) = d.range;
    let extent = d.span + d.half;
    for (area, panel) in areas.iter().zip(&d.panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.label, (FONT, 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(-extent..extent, -extent..extent)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("direction 1")
            .y_desc("direction 2")
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 14))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(panel.cells.iter().map(|&(a, b, v)| {
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                let color = viridis(t);
                Rectangle::new([(a - d.half, b - d.half), (a + d.half, b + d.half)], color.filled())
            }))
            .map_err(err)?;
        chart.draw_series(std::iter::once(Cross::new((0.0, 0.0), 8, WHITE.stroke_width(3)))).map_err(err)?;
    }
    Ok(())
}

/// The viridis colour map (perceptually uniform, readable in grey), from
/// five of its anchor colours, for `t` in 0..=1.
fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(f64, f64, f64); 5] =
        [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let x = t.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f64;
    let i = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}
