//! `gradient-flow`: the gradient norm of each layer group from input to
//! output, per focus level, at the first and last logged step.

use std::collections::{BTreeMap, BTreeSet};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{err, legend, lighter, log_label, thousands, title_area, FONT};
use super::{band, Point, Selection};
use crate::report::FullReport;

struct GradLine {
    label: String,
    color: RGBColor,
    start: bool,
    /// (block index, mean, lo, hi)
    points: Vec<(f64, f64, f64, f64)>,
}

pub(super) struct GradData {
    pub title: String,
    subtitle: String,
    blocks: Vec<String>,
    lines: Vec<GradLine>,
}

/// Input-to-output order of the layer groups: stem, block01.., fc1, fc2.
fn block_order(name: &str) -> (u32, u32, String) {
    if name == "stem" {
        (0, 0, String::new())
    } else if let Some(n) = name.strip_prefix("block").and_then(|n| n.parse::<u32>().ok()) {
        (1, n, String::new())
    } else if let Some(n) = name.strip_prefix("fc").and_then(|n| n.parse::<u32>().ok()) {
        (2, n, String::new())
    } else {
        (3, 0, name.to_owned())
    }
}

pub(super) fn data(r: &FullReport, sel: &Selection) -> Option<GradData> {
    let rows: Vec<(usize, &sweep_core::GradFlowSums)> = r
        .results
        .grad_flow
        .iter()
        .filter_map(|g| {
            let line = sel.line_of(&g.cell)?;
            Some((sel.lines.iter().position(|l| *l == line).unwrap_or(0), g))
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut blocks: Vec<String> =
        rows.iter().map(|(_, g)| g.block.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    blocks.sort_by_key(|b| block_order(b));
    let index: BTreeMap<&str, usize> = blocks.iter().enumerate().map(|(i, b)| (b.as_str(), i)).collect();
    let mut lines: BTreeMap<(usize, std::cmp::Reverse<bool>), (Vec<Point>, f64)> = BTreeMap::new();
    for (i, g) in rows {
        let Some((m, lo, hi)) = band(g.n, g.sum, g.sum_sq) else { continue };
        let e = lines.entry((i, std::cmp::Reverse(g.last))).or_default();
        e.0.push((index[g.block.as_str()] as f64, m, lo, hi));
        e.1 = e.1.max(g.mean_step);
    }
    let lines = lines
        .into_iter()
        .map(|((i, last), (mut points, step))| {
            let last = last.0;
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let level = sel.lines.get(i).cloned().unwrap_or(sweep_core::Level::Bool(true));
            let color = sel.color(&level);
            GradLine {
                label: format!(
                    "{}, {} of training (iteration {})",
                    sel.line_label(&level),
                    if last { "end" } else { "start" },
                    thousands(step)
                ),
                color: if last { color } else { lighter(color, 0.45) },
                start: !last,
                points,
            }
        })
        .collect();
    let mut subtitle =
        "L2 norm of the loss gradient per layer group, mean over seeds, bars = 95% t-interval".to_string();
    if !sel.fixed.is_empty() {
        subtitle += &format!("; {}", sel.fixed);
    }
    let title = format!("Gradient flow{}: input → output", sel.x_at());
    Some(GradData { title, subtitle, blocks, lines })
}

pub(super) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &GradData) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let pts = d.lines.iter().flat_map(|l| &l.points);
    let (lo, hi) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(if p.2 > 0.0 { p.2 } else { p.1 }), hi.max(p.3))
    });
    let (lo, hi) = if lo.is_finite() && hi.is_finite() && lo > 0.0 { (lo, hi) } else { (1e-6, 1.0) };
    let (y_lo, y_hi) = (lo / 2.0, hi * 2.0);
    let n = d.blocks.len().max(1);
    let root = title_area(root, &d.title, &d.subtitle)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .x_label_area_size(70)
        .y_label_area_size(100)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (y_lo..y_hi).log_scale())
        .map_err(err)?;
    let blocks = d.blocks.clone();
    // At most about 14 names fit under the axis; show every k-th.
    let every = n.div_ceil(14).max(1);
    let fmt = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6
            && i >= 0.0
            && (i as usize) < blocks.len()
            && ((i as usize).is_multiple_of(every) || i as usize == blocks.len() - 1)
        {
            blocks[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc("layer group, from input (stem) to output (fc2)")
        .y_desc("gradient norm (log scale)")
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 15))
        .x_labels(n)
        .x_label_formatter(&fmt)
        .y_label_formatter(&|y| log_label(*y))
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(err)?;
    for l in &d.lines {
        let color = l.color;
        let start = l.start;
        chart
            .draw_series(
                l.points
                    .iter()
                    .filter(|p| p.3 > p.2)
                    .map(|p| ErrorBar::new_vertical(p.0, p.2.max(y_lo), p.1, p.3, color.stroke_width(1), 8)),
            )
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                l.points.iter().map(|p| (p.0, p.1)),
                color.stroke_width(if start { 2 } else { 3 }),
            ))
            .map_err(err)?
            .label(l.label.clone())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (28, 0)], color.stroke_width(3))
                    + Circle::new((14, 0), 5, if start { WHITE.filled() } else { color.filled() })
                    + Circle::new((14, 0), 5, color.stroke_width(2))
            });
        chart
            .draw_series(
                l.points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 5, if start { WHITE.filled() } else { color.filled() })),
            )
            .map_err(err)?;
        chart.draw_series(l.points.iter().map(|p| Circle::new((p.0, p.1), 5, color.stroke_width(2)))).map_err(err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::block_order;

    #[test]
    fn blocks_sort_from_input_to_output() {
        let mut b = vec!["fc2", "block10", "stem", "fc1", "block02", "block01"];
        b.sort_by_key(|x| block_order(x));
        assert_eq!(b, ["stem", "block01", "block02", "block10", "fc1", "fc2"]);
    }
}
