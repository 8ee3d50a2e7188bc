//! Shared drawing pieces: sizes, fonts, colours, the title strip, legends
//! and tick labels.

use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

pub(super) const SIZE: (u32, u32) = (1100, 680);
pub(super) const FONT: &str = "sans-serif";

/// Line colours in order (the first two are the lecture's: blue for skip
/// connections on, red for off).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub(super) fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

pub(super) fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub(super) fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a picture: {e}")
}

/// A lighter shade of `c` (towards white by `f`).
pub(super) fn lighter(c: RGBColor, f: f64) -> RGBColor {
    let m = |x: u8| (x as f64 + (255.0 - x as f64) * f).round() as u8;
    RGBColor(m(c.0), m(c.1), m(c.2))
}

/// Draws the title and subtitle and returns the area below them.
pub(super) fn title_area<DB: DrawingBackend>(
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

pub(super) fn legend<
    'a,
    DB: DrawingBackend + 'a,
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
>(
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
pub(super) fn log_label(y: f64) -> String {
    if (1e-3..1e4).contains(&y) {
        let s = format!("{y:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{y:.0e}")
    }
}

/// 12345 -> "12,345".
pub(super) fn thousands(x: f64) -> String {
    let v = x.round() as i64;
    let s = v.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
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
    pub(super) fn thousands_separators() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(thousands(0.0), "0");
    }
}
