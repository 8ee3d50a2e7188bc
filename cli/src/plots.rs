//! The report's pictures, drawn with `plotters` as PNG and SVG:
//!
//! 1. `loss-curve`: training loss against iterations, skip connections on
//!    vs off at one depth (the lecture's figure): mean curve over seeds with
//!    a 95% t-interval band.
//! 2. `accuracy-vs-depth`: final test accuracy against depth, one line per
//!    skip setting (and per batch-norm setting), with 95% interval bars.
//! 3. `gradient-flow`: gradient norm per layer group from input to output,
//!    skip on vs off, at the start and end of training, on a log scale.
//!
//! Text is drawn with DejaVu Sans, embedded from the `dejavu` crate and
//! registered with plotters' `ab_glyph` renderer: no system fonts needed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use sweep_core::effects::{self, Factor, Observation};
use sweep_core::stats::{t_interval, Summary};
use sweep_proto::v1 as pb;

use crate::report::FullReport;

/// One picture in both formats.
pub struct Pic {
    /// File stem: `loss-curve`, `accuracy-vs-depth`, `gradient-flow`.
    pub name: &'static str,
    pub title: String,
    pub svg: String,
    pub png: Vec<u8>,
}

const SIZE: (u32, u32) = (1100, 680);
const FONT: &str = "sans-serif";
const SKIP_ON: RGBColor = RGBColor(31, 119, 180);
const SKIP_OFF: RGBColor = RGBColor(214, 39, 40);

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a picture: {e}")
}

fn skip_color(skip: bool) -> RGBColor {
    if skip {
        SKIP_ON
    } else {
        SKIP_OFF
    }
}

/// A lighter shade of `c` (towards white by `f`).
fn lighter(c: RGBColor, f: f64) -> RGBColor {
    let m = |x: u8| (x as f64 + (255.0 - x as f64) * f).round() as u8;
    RGBColor(m(c.0), m(c.1), m(c.2))
}

type Cell = (u32, bool, String, bool);

fn cell_of(c: Option<&pb::AnalysisCell>) -> Cell {
    let c = c.cloned().unwrap_or_default();
    (c.depth, c.skip, c.init, c.batchnorm)
}

/// Renders one picture as SVG and PNG with the same drawing function.
macro_rules! both {
    ($name:expr, $title:expr, $draw:ident, $data:expr) => {{
        fonts();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            $draw(&root, $data)?;
            root.present().map_err(err)?;
        }
        let path = std::env::temp_dir().join(format!(
            "sweep-{}-{}-{}.png",
            $name,
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        {
            let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
            $draw(&root, $data)?;
            root.present().map_err(err)?;
        }
        let png = std::fs::read(&path).map_err(err)?;
        let _ = std::fs::remove_file(&path);
        Pic { name: $name, title: $title, svg, png }
    }};
}

/// Every picture the data allows (a picture without data is left out).
pub fn all(r: &FullReport) -> anyhow::Result<Vec<Pic>> {
    let mut out = Vec::new();
    let sel = Selection::new(r);
    if let Some(d) = loss_data(r, &sel) {
        let title = d.title.clone();
        out.push(both!("loss-curve", title, draw_loss, &d));
    }
    if let Some(d) = accuracy_data(r)? {
        let title = d.title.clone();
        out.push(both!("accuracy-vs-depth", title, draw_accuracy, &d));
    }
    if let Some(d) = grad_data(r, &sel) {
        let title = d.title.clone();
        out.push(both!("gradient-flow", title, draw_grad, &d));
    }
    Ok(out)
}

/// Which cells the skip on/off pictures show: one depth, and one init and
/// batch-norm setting (the baselines) when those vary.
struct Selection {
    depth: Option<u32>,
    init: String,
    batchnorm: bool,
    /// Words for the subtitle, e.g. "init=default, batchnorm=off".
    fixed: String,
}

impl Selection {
    fn new(r: &FullReport) -> Selection {
        let b = &r.analysis.baselines;
        let init = b.get("init").cloned().unwrap_or_else(|| "default".into());
        let batchnorm = b.get("batchnorm").map(|l| l == "true").unwrap_or(true);
        let varies = |f: &str| r.analysis.factors.iter().any(|x| x.name == f && x.levels.len() > 1);
        let mut fixed = Vec::new();
        if varies("init") {
            fixed.push(format!("init={init}"));
        }
        if varies("batchnorm") {
            fixed.push(format!("batchnorm={}", if batchnorm { "on" } else { "off" }));
        }
        // Default depth: the deepest with train-loss curves for both skips.
        let mut skips: BTreeMap<u32, BTreeSet<bool>> = BTreeMap::new();
        for c in &r.data.curves {
            let k = cell_of(c.cell.as_ref());
            if k.2 == init && k.3 == batchnorm {
                skips.entry(k.0).or_default().insert(k.1);
            }
        }
        let depth = r.curve_depth.or_else(|| {
            skips.iter().rev().find(|(_, s)| s.len() == 2).or_else(|| skips.iter().next_back()).map(|(d, _)| *d)
        });
        Selection { depth, init, batchnorm, fixed: fixed.join(", ") }
    }

    fn matches(&self, k: &Cell) -> bool {
        Some(k.0) == self.depth && k.2 == self.init && k.3 == self.batchnorm
    }
}

/// Mean and 95% interval from COUNT/SUM/SUM of squares.
fn band(n: u64, sum: f64, sum_sq: f64) -> Option<(f64, f64, f64)> {
    let s = Summary::from_sums(n, sum, sum_sq)?;
    let (lo, hi) = t_interval(&s, 0.95).unwrap_or((s.mean, s.mean));
    Some((s.mean, lo, hi))
}

// ----------------------------------------------------------------- loss curve

struct Curve {
    label: String,
    color: RGBColor,
    /// (step, mean, lo, hi)
    points: Vec<(f64, f64, f64, f64)>,
}

struct LossData {
    title: String,
    subtitle: String,
    curves: Vec<Curve>,
}

fn loss_data(r: &FullReport, sel: &Selection) -> Option<LossData> {
    let depth = sel.depth?;
    let mut by_skip: BTreeMap<bool, (Vec<(f64, f64, f64, f64)>, u64)> = BTreeMap::new();
    for c in r.data.curves.iter().filter(|c| c.metric == "train_loss") {
        let k = cell_of(c.cell.as_ref());
        if !sel.matches(&k) {
            continue;
        }
        let Some((m, lo, hi)) = band(c.n, c.sum, c.sum_sq) else { continue };
        let e = by_skip.entry(k.1).or_default();
        e.0.push((c.step as f64, m, lo, hi));
        e.1 = e.1.max(c.n);
    }
    if by_skip.is_empty() {
        return None;
    }
    let curves = by_skip
        .into_iter()
        .rev()
        .map(|(skip, (points, n))| Curve {
            label: format!(
                "skip connections {} ({} seed{})",
                if skip { "on" } else { "off" },
                n,
                if n == 1 { "" } else { "s" }
            ),
            color: skip_color(skip),
            points,
        })
        .collect();
    let mut subtitle = "mean over seeds, band = 95% t-interval".to_string();
    if !sel.fixed.is_empty() {
        subtitle += &format!("; {}", sel.fixed);
    }
    Some(LossData { title: format!("Training loss vs iterations, BMEnet depth {depth}"), subtitle, curves })
}

fn draw_loss<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &LossData) -> anyhow::Result<()> {
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

// ---------------------------------------------------------- accuracy vs depth

struct Line {
    label: String,
    color: RGBColor,
    filled: bool,
    /// (depth, mean %, lo %, hi %)
    points: Vec<(f64, f64, f64, f64)>,
}

struct AccData {
    title: String,
    subtitle: String,
    depths: Vec<u32>,
    lines: Vec<Line>,
}

fn accuracy_data(r: &FullReport) -> anyhow::Result<Option<AccData>> {
    let factors: Vec<Factor> = r.analysis.factors.clone();
    let obs: Vec<Observation> = r
        .data
        .trials
        .iter()
        .filter(|t| t.state == "succeeded")
        .filter_map(|t| {
            let k = cell_of(t.cell.as_ref());
            Some(Observation {
                levels: vec![k.0.to_string(), k.1.to_string(), k.2, k.3.to_string()],
                seed: t.seed,
                value: t.final_test_accuracy?,
            })
        })
        .collect();
    if obs.is_empty() {
        return Ok(None);
    }
    let opts = effects::Options { by: vec!["depth".into(), "skip".into(), "batchnorm".into()], ..Default::default() };
    let a = effects::analyze(&factors, &obs, &opts).map_err(|e| anyhow!("{e}"))?;
    let bn_varies = factors.iter().any(|f| f.name == "batchnorm" && f.levels.len() > 1);
    let init_varies = factors.iter().any(|f| f.name == "init" && f.levels.len() > 1);
    let mut lines: BTreeMap<(bool, bool), Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
    let mut depths = BTreeSet::new();
    for g in &a.groups {
        let Some(c) = g.mean else { continue };
        let depth: u32 = g.levels["depth"].parse().unwrap_or(0);
        let key = (g.levels["skip"] == "true", g.levels["batchnorm"] == "true");
        depths.insert(depth);
        let (lo, hi) = (c.ci95_lo.unwrap_or(c.estimate), c.ci95_hi.unwrap_or(c.estimate));
        lines.entry(key).or_default().push((depth as f64, c.estimate * 100.0, lo * 100.0, hi * 100.0));
    }
    let lines = lines
        .into_iter()
        .rev()
        .map(|((skip, bn), points)| {
            let mut label = format!("skip {}", if skip { "on" } else { "off" });
            if bn_varies {
                label += &format!(", batchnorm {}", if bn { "on" } else { "off" });
            }
            let color = if bn_varies && !bn { lighter(skip_color(skip), 0.45) } else { skip_color(skip) };
            Line { label, color, filled: bn || !bn_varies, points }
        })
        .collect();
    let mut subtitle = "mean over seeds, bars = 95% t-interval".to_string();
    if init_varies {
        subtitle += "; averaged over init schemes (mean of cell means)";
    }
    Ok(Some(AccData {
        title: "Final test accuracy vs depth".into(),
        subtitle,
        depths: depths.into_iter().collect(),
        lines,
    }))
}

fn draw_accuracy<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &AccData) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let pts = d.lines.iter().flat_map(|l| &l.points);
    let (mut lo, mut hi) = pts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.2), hi.max(p.3)));
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (0.0, 100.0);
    }
    let pad = ((hi - lo) * 0.1).max(0.5);
    let (y_lo, y_hi) = ((lo - pad).max(0.0), (hi + pad).min(100.0));
    // Depths as evenly spaced categories (8, 16, 32, 64 would crowd the left
    // of a linear axis); lines are dodged sideways so bars do not overlap.
    let n = d.depths.len().max(1);
    let root = title_area(root, &d.title, &d.subtitle)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y_lo..y_hi)
        .map_err(err)?;
    let depths = d.depths.clone();
    let fmt = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < depths.len() {
            depths[i as usize].to_string()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc("network depth (BMEnet depth parameter)")
        .y_desc("final test accuracy (%)")
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .x_labels(n)
        .x_label_formatter(&fmt)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(err)?;
    let k = d.lines.len().max(1) as f64;
    for (i, l) in d.lines.iter().enumerate() {
        let dx = (i as f64 - (k - 1.0) / 2.0) * 0.06;
        let x = |depth: f64| d.depths.iter().position(|&v| v as f64 == depth).unwrap_or(0) as f64 + dx;
        let color = l.color;
        let filled = l.filled;
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
                    + Circle::new((14, 0), 6, if filled { color.filled() } else { color.stroke_width(2) })
            });
        chart
            .draw_series(
                l.points
                    .iter()
                    .map(|p| Circle::new((x(p.0), p.1), 6, if filled { color.filled() } else { WHITE.filled() })),
            )
            .map_err(err)?;
        if !filled {
            chart
                .draw_series(l.points.iter().map(|p| Circle::new((x(p.0), p.1), 6, color.stroke_width(2))))
                .map_err(err)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    Ok(())
}

// -------------------------------------------------------------- gradient flow

struct GradLine {
    label: String,
    color: RGBColor,
    start: bool,
    /// (block index, mean, lo, hi)
    points: Vec<(f64, f64, f64, f64)>,
}

struct GradData {
    title: String,
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

fn grad_data(r: &FullReport, sel: &Selection) -> Option<GradData> {
    let depth = sel.depth?;
    let rows: Vec<&pb::GradFlowAggregate> =
        r.data.grad_flow.iter().filter(|g| sel.matches(&cell_of(g.cell.as_ref()))).collect();
    if rows.is_empty() {
        return None;
    }
    let mut blocks: Vec<String> = rows.iter().map(|g| g.block.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    blocks.sort_by_key(|b| block_order(b));
    let index: BTreeMap<&str, usize> = blocks.iter().enumerate().map(|(i, b)| (b.as_str(), i)).collect();
    let mut lines: BTreeMap<(bool, bool), (Vec<(f64, f64, f64, f64)>, f64, u64)> = BTreeMap::new();
    for g in rows {
        let skip = cell_of(g.cell.as_ref()).1;
        let Some((m, lo, hi)) = band(g.n, g.sum, g.sum_sq) else { continue };
        let e = lines.entry((skip, g.last)).or_default();
        e.0.push((index[g.block.as_str()] as f64, m, lo, hi));
        e.1 = e.1.max(g.mean_step);
        e.2 = e.2.max(g.n);
    }
    let lines = lines
        .into_iter()
        .rev()
        .map(|((skip, last), (mut points, step, _n))| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            GradLine {
                label: format!(
                    "skip {}, {} of training (iteration {})",
                    if skip { "on" } else { "off" },
                    if last { "end" } else { "start" },
                    thousands(step)
                ),
                color: if last { skip_color(skip) } else { lighter(skip_color(skip), 0.45) },
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
    Some(GradData { title: format!("Gradient flow, BMEnet depth {depth}: input → output"), subtitle, blocks, lines })
}

fn draw_grad<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, d: &GradData) -> anyhow::Result<()> {
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
            && (i as usize % every == 0 || i as usize == blocks.len() - 1)
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

// ------------------------------------------------------------------- helpers

/// Draws the title and subtitle and returns the area below them.
fn title_area<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
) -> anyhow::Result<DrawingArea<DB, Shift>> {
    let (top, rest) = root.split_vertically(78);
    top.draw(&Text::new(title.to_owned(), (24, 14), (FONT, 28).into_font().style(FontStyle::Bold).color(&BLACK)))
        .map_err(err)?;
    top.draw(&Text::new(subtitle.to_owned(), (24, 50), (FONT, 17).into_font().color(&RGBColor(80, 80, 80))))
        .map_err(err)?;
    Ok(rest)
}

fn legend<'a, DB: DrawingBackend + 'a, X: plotters::coord::ranged1d::Ranged, Y: plotters::coord::ranged1d::Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    pos: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(pos)
        .margin(14)
        .legend_area_size(40)
        .label_font((FONT, 17))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(err)
}

/// Tick labels of a log axis: plain decimals where they are short.
fn log_label(y: f64) -> String {
    if (1e-3..1e4).contains(&y) {
        let s = format!("{y:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{y:.0e}")
    }
}

/// 12345 -> "12,345".
fn thousands(x: f64) -> String {
    let v = x.round() as i64;
    let s = v.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_sort_from_input_to_output() {
        let mut b = vec!["fc2", "block10", "stem", "fc1", "block02", "block01"];
        b.sort_by_key(|x| block_order(x));
        assert_eq!(b, ["stem", "block01", "block02", "block10", "fc1", "fc2"]);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(thousands(0.0), "0");
    }
}
