//! The report's pictures, drawn with `plotters` as PNG and SVG:
//!
//! 1. `loss-curve` ([`curve`]): training loss against iterations, one curve
//!    per level of the focus factor (skip connections on vs off, the
//!    lecture's figure) at one cell of the other factors: mean over seeds
//!    with a 95% t-interval band.
//! 2. `<metric>-vs-<x>` ([`metric_vs`], e.g. `accuracy-vs-depth`,
//!    `accuracy-vs-lr`): the report's metric against an ordered factor, one
//!    line per focus level, with 95% interval bars; float factors spanning
//!    two decades or more on a log axis.
//! 3. `gradient-flow` ([`grad_flow`]): gradient norm per layer group from
//!    input to output, per focus level, at the start and end of training.
//! 4. With `[analysis] lesion = true`, `lesion-removed` and
//!    `lesion-blocks` ([`curve`], as the loss curve): test accuracy against
//!    the number of blocks removed and against the removed block, per
//!    focus level (Veit et al.'s Figures 5 and 3 in spirit).
//! 5. With `[analysis] variance = true`, `variance-forward` and
//!    `variance-backward` ([`curve`]): log10 of the measured variance per
//!    weight layer at initialisation, per focus level, with the lecture's
//!    prediction (Eqs. 5 and 6) dashed.
//! 6. With `[analysis] landscape = true`, `landscape-1d` ([`curve`]: the
//!    loss along one direction, per focus level) or `landscape-2d`
//!    ([`landscape`]: one heat map per focus level on one colour scale).
//!
//! Text is drawn with DejaVu Sans, embedded from the `dejavu` crate and
//! registered with plotters' `ab_glyph` renderer: no system fonts needed.

mod curve;
mod grad_flow;
mod landscape;
mod metric_vs;
mod style;

use std::collections::{BTreeMap, BTreeSet};

use sweep_core::stats::{t_interval, Moments};
use sweep_core::{Cell, Level};

use super::FullReport;
use style::{err, fonts, SIZE};

use plotters::prelude::*;

/// One picture in both formats.
pub(super) struct Pic {
    /// File stem: `loss-curve`, `accuracy-vs-depth`, `gradient-flow`.
    pub name: String,
    pub title: String,
    pub svg: String,
    pub png: Vec<u8>,
}

/// Renders one picture as SVG and PNG with the same (backend-generic)
/// drawing function.
macro_rules! both {
    ($name:expr, $data:expr, $draw:path) => {{
        fonts();
        let name: String = $name;
        let data = $data;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            $draw(&root, data)?;
            root.present().map_err(err)?;
        }
        let path = std::env::temp_dir().join(format!(
            "sweep-{name}-{}-{}.png",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        {
            let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
            $draw(&root, data)?;
            root.present().map_err(err)?;
        }
        let png = std::fs::read(&path).map_err(err)?;
        let _ = std::fs::remove_file(&path);
        Pic { name, title: data.title.clone(), svg, png }
    }};
}

/// Every picture the data allows (a picture without data is left out).
pub(super) fn all(r: &FullReport) -> anyhow::Result<Vec<Pic>> {
    let mut out = Vec::new();
    let sel = Selection::new(r);
    if let Some(d) = curve::data(r, &sel, &curve::LOSS) {
        out.push(both!(curve::LOSS.name.to_owned(), &d, curve::draw));
    }
    if let Some(d) = metric_vs::data(r, &sel)? {
        let name = format!("{}-vs-{}", r.metric.stem(), d.x_name);
        out.push(both!(name, &d, metric_vs::draw));
    }
    if let Some(d) = grad_flow::data(r, &sel) {
        out.push(both!("gradient-flow".to_owned(), &d, grad_flow::draw));
    }
    for kind in [&curve::LESION_REMOVED, &curve::LESION_BLOCKS, &curve::VARIANCE_FORWARD, &curve::VARIANCE_BACKWARD] {
        if let Some(d) = curve::data(r, &sel, kind) {
            out.push(both!(kind.name.to_owned(), &d, curve::draw));
        }
    }
    if let Some(cfg) = crate::report::landscape::config(&r.results).filter(|c| c.dims == 1) {
        let x_of = |step: i64| u32::try_from(step).ok().map(|i| cfg.coordinate(i));
        if let Some(d) = curve::data_mapped(r, &sel, &curve::LANDSCAPE_1D, &x_of) {
            out.push(both!(curve::LANDSCAPE_1D.name.to_owned(), &d, curve::draw));
        }
    }
    if let Some(d) = landscape::data(r, &sel) {
        out.push(both!("landscape-2d".to_owned(), &d, landscape::draw));
    }
    Ok(out)
}

/// What the pictures show: the focus factor's levels as lines, the x
/// factor, and (for the curve pictures) one level of every other factor.
pub(super) struct Selection {
    pub focus: Option<String>,
    /// The focus factor's levels in line order (on before off).
    pub lines: Vec<Level>,
    pub x: Option<String>,
    /// The cell of the curve pictures, without the focus factor.
    pub at: BTreeMap<String, Level>,
    /// Words for the subtitle: the held factors that vary, e.g.
    /// "init=default, batchnorm=off".
    pub fixed: String,
}

impl Selection {
    fn new(r: &FullReport) -> Selection {
        let d = &r.design;
        let focus = r.focus.first().cloned().filter(|f| d.factor(f).is_some());
        let x = d.x_factor(r.x.as_deref()).ok().flatten().map(|f| f.name.clone());
        let mut lines: Vec<Level> =
            focus.as_deref().and_then(|f| d.factor(f)).map(|f| f.levels.clone()).unwrap_or_default();
        if lines.iter().all(|l| matches!(l, Level::Bool(_))) {
            lines.reverse();
        }
        let level_of = |name: &str, text: &str| d.factor(name)?.levels.iter().find(|l| l.to_string() == text).cloned();
        let mut at = BTreeMap::new();
        let mut fixed = Vec::new();
        for f in &d.factors {
            if Some(&f.name) == focus.as_ref() || Some(&f.name) == x.as_ref() {
                continue;
            }
            let chosen =
                r.at.get(&f.name)
                    .or_else(|| r.analysis.baselines.get(&f.name))
                    .and_then(|t| level_of(&f.name, t))
                    .or_else(|| f.levels.first().cloned());
            if let Some(l) = chosen {
                if f.levels.len() > 1 {
                    fixed.push(format!("{}={}", f.name, l.display()));
                }
                at.insert(f.name.clone(), l);
            }
        }
        if let Some(xn) = &x {
            let chosen = r.at.get(xn).and_then(|t| level_of(xn, t)).or_else(|| {
                // The largest x level with curves for every line, else any.
                let mut seen: BTreeMap<Level, BTreeSet<Level>> = BTreeMap::new();
                for c in &r.results.curves {
                    if at.iter().all(|(k, v)| c.cell.get(k) == Some(v)) {
                        if let Some(xl) = c.cell.get(xn) {
                            let line = focus.as_ref().and_then(|f| c.cell.get(f)).cloned().unwrap_or(Level::Bool(true));
                            seen.entry(xl.clone()).or_default().insert(line);
                        }
                    }
                }
                let all_lines = lines.len().max(1);
                seen.iter()
                    .rev()
                    .find(|(_, s)| s.len() >= all_lines)
                    .or_else(|| seen.iter().next_back())
                    .map(|(l, _)| l.clone())
            });
            if let Some(l) = chosen {
                at.insert(xn.clone(), l);
            }
        }
        Selection { focus, lines, x, at, fixed: fixed.join(", ") }
    }

    /// Whether `cell` is one the curve pictures show; returns its line.
    pub(super) fn line_of(&self, cell: &Cell) -> Option<Level> {
        if !self.at.iter().all(|(k, v)| cell.get(k) == Some(v)) {
            return None;
        }
        match &self.focus {
            Some(f) => cell.get(f).cloned(),
            None => Some(Level::Bool(true)),
        }
    }

    /// `depth=32`: the x factor's held level, for titles.
    pub(super) fn x_at(&self) -> String {
        match &self.x {
            Some(x) => self.at.get(x).map(|l| format!(", {x}={}", l.display())).unwrap_or_default(),
            None => String::new(),
        }
    }

    /// A line's legend text, e.g. `skip on`.
    pub(super) fn line_label(&self, level: &Level) -> String {
        match &self.focus {
            Some(f) => format!("{f} {}", level.display()),
            None => "all trials".into(),
        }
    }

    /// A line's colour: its place among the focus levels.
    pub(super) fn color(&self, level: &Level) -> RGBColor {
        style::palette(self.lines.iter().position(|l| l == level).unwrap_or(0))
    }
}

/// A plotted point: (x, mean, interval low, interval high).
type Point = (f64, f64, f64, f64);

/// Mean and 95% interval from COUNT/SUM/SUM of squares.
fn band(n: u64, sum: f64, sum_sq: f64) -> Option<(f64, f64, f64)> {
    let s = Moments::from_sums(n, sum, sum_sq)?;
    let (lo, hi) = t_interval(&s, 0.95).unwrap_or((s.mean, s.mean));
    Some((s.mean, lo, hi))
}
