//! The report's sections as tables (terminal, markdown, LaTeX, HTML), the
//! JSON document and the CSV files.

use std::collections::BTreeSet;

use sweep_core::effects;

use super::args::Measure;
use super::cells::{cells, cells_csv, csv_field, header};
use super::FullReport;
use crate::Format;

fn signed(v: f64, scale: f64, digits: usize) -> String {
    format!("{:+.d$}", v * scale, d = digits)
}

/// The mark of a blocked interval in the tables (explained in a caption
/// and a note wherever one appears).
pub(super) const BLOCKED_MARK: &str = " (b)";

fn mark(c: &effects::Contrast) -> &'static str {
    match c.method {
        effects::Method::Blocked => BLOCKED_MARK,
        effects::Method::Independent => "",
    }
}

fn effect_text(c: &Option<effects::Contrast>, metric: Measure) -> String {
    let (scale, digits, unit) = metric.scale();
    match c {
        None => "-".into(),
        Some(c) => match (c.ci95_lo, c.ci95_hi) {
            (Some(lo), Some(hi)) => format!(
                "{}{unit} [{}, {}]{}",
                signed(c.estimate, scale, digits),
                signed(lo, scale, digits),
                signed(hi, scale, digits),
                mark(c)
            ),
            _ => format!("{}{unit} (no interval)", signed(c.estimate, scale, digits)),
        },
    }
}

/// A standardised effect (Cohen's d), e.g. `+1.42`.
fn d_text(d: Option<f64>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{d:+.2}"))
}

fn p_text(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(p) if p < 0.001 => "<0.001".into(),
        Some(p) => format!("{p:.3}"),
    }
}

fn mean_text(m: Option<f64>, metric: Measure) -> String {
    let (scale, digits, _) = metric.scale();
    m.map(|m| format!("{:.d$}", m * scale, d = digits)).unwrap_or_else(|| "-".into())
}

const WELCH: &str = "a Welch 95% interval";

/// What a table's intervals are: "a Welch 95% interval" when none is
/// blocked (the words reports always had), else which are which.
fn interval_words<'a>(contrasts: impl Iterator<Item = &'a effects::Contrast>) -> &'static str {
    let methods: BTreeSet<bool> = contrasts.map(|c| c.method == effects::Method::Blocked).collect();
    match (methods.contains(&true), methods.contains(&false)) {
        (false, _) => WELCH,
        (true, false) => "a 95% interval blocked on seed (b: the contrast within each seed, Student's t over seeds)",
        (true, true) => {
            "a 95% interval blocked on seed where every cell ran the same seeds (b: the contrast within each seed, \
             Student's t over seeds), else Welch's over cell means"
        }
    }
}

/// Every section as a table.
pub(super) fn tables(r: &FullReport) -> Vec<crate::tables::Table> {
    use crate::tables::Table;
    let m = r.metric;
    let mut out = Vec::new();
    if r.analysis.groups.is_empty() {
        out.push(Table::new(
            format!("Sweep {}: cells", r.sweep_id),
            header(&r.design),
            r.cells.iter().map(|c| cells(&r.design, c)),
        ));
    } else {
        let by: Vec<&str> = r.analysis.groups[0].levels.keys().map(std::string::String::as_str).collect();
        let mut header: Vec<String> = Vec::new();
        let order: Vec<&str> = r.design.names().into_iter().filter(|f| by.contains(f)).collect();
        header.extend(order.iter().map(std::string::ToString::to_string));
        header.extend(["cells".into(), "trials".into(), format!("{} (95% CI)", m.label())]);
        let (scale, digits, _) = m.scale();
        out.push(
            Table::new(
                format!("Sweep {}: {} by {}", r.sweep_id, m.label(), order.join(", ")),
                header,
                r.analysis.groups.iter().map(|g| {
                    let mut row: Vec<String> = order.iter().map(|f| r.design.show(f, &g.levels[*f])).collect();
                    row.push(g.cells.to_string());
                    row.push(g.n.to_string());
                    row.push(match g.mean {
                        Some(c) => match (c.ci95_lo, c.ci95_hi) {
                            (Some(lo), Some(hi)) => format!(
                                "{:.d$} ± {:.d$}{}",
                                c.estimate * scale,
                                (hi - lo) / 2.0 * scale,
                                mark(&c),
                                d = digits
                            ),
                            _ => format!("{:.d$}", c.estimate * scale, d = digits),
                        },
                        None => "-".into(),
                    });
                    row
                }),
            )
            .caption(
                if r.analysis
                    .groups
                    .iter()
                    .filter_map(|g| g.mean.as_ref())
                    .any(|c| c.method == effects::Method::Blocked)
                {
                    "Means of cell means over the factors not listed, each cell weighted equally; (b): the interval is \
                 blocked on seed (the mean within each seed, Student's t over seeds), since the cells share seeds."
                } else {
                    "Means of cell means over the factors not listed, each cell weighted equally."
                },
            ),
        );
    }
    if !r.analysis.main_effects.is_empty() {
        out.push(
            Table::new(
                format!("Main effects on {}", m.label()),
                [
                    "factor",
                    "level vs baseline",
                    "level mean",
                    "baseline mean",
                    "effect [95% CI]",
                    "d",
                    "p",
                    "p (Holm)",
                    "matched cell pairs",
                ],
                r.analysis.main_effects.iter().map(|c| {
                    vec![
                        c.factor.clone(),
                        format!("{} vs {}", r.design.show(&c.factor, &c.level), r.design.show(&c.factor, &c.baseline)),
                        mean_text(c.level_mean, m),
                        mean_text(c.baseline_mean, m),
                        effect_text(&c.effect, m),
                        d_text(c.standardized),
                        p_text(c.effect.and_then(|e| e.p_value)),
                        p_text(c.p_holm),
                        c.strata_used.to_string(),
                    ]
                }),
            )
            .caption(format!(
                "Effect = difference of marginal means (means of cell means over the other factors, matched cells \
                 only), with {}.",
                interval_words(r.analysis.main_effects.iter().filter_map(|c| c.effect.as_ref()))
            )),
        );
    }
    let focus: BTreeSet<(&str, &str, &str)> =
        r.analysis.simple_effects.iter().map(|c| (c.factor.as_str(), c.level.as_str(), c.baseline.as_str())).collect();
    for (f, l, b) in focus {
        out.push(
            Table::new(
                format!(
                    "Interactions: effect of {f} {} vs {} at each level of the other factors",
                    r.design.show(f, l),
                    r.design.show(f, b)
                ),
                ["at", "with", "without", "effect [95% CI]", "d", "p"],
                r.analysis.simple_effects.iter().filter(|c| c.factor == f && c.level == l).map(|c| {
                    vec![
                        r.design.show_at(&c.at),
                        mean_text(c.level_mean, m),
                        mean_text(c.baseline_mean, m),
                        effect_text(&c.effect, m),
                        d_text(c.standardized),
                        p_text(c.effect.and_then(|e| e.p_value)),
                    ]
                }),
            )
            .caption(format!(
                "\"with\" = {f} {}, \"without\" = {f} {}; means of cell means over the factors not held fixed{}. \
                 p-values here are not corrected for multiple comparisons.",
                r.design.show(f, l),
                r.design.show(f, b),
                match interval_words(
                    r.analysis
                        .simple_effects
                        .iter()
                        .filter(|c| c.factor == f && c.level == l)
                        .filter_map(|c| c.effect.as_ref()),
                ) {
                    WELCH => String::new(),
                    words => format!(", with {words}"),
                }
            )),
        );
    }
    if !r.analysis.paired.is_empty() {
        let (scale, digits, unit) = m.scale();
        let f = &r.analysis.paired[0];
        out.push(
            Table::new(
                format!(
                    "Paired comparison on shared seeds: {} {} minus {} within each cell",
                    f.factor,
                    r.design.show(&f.factor, &f.level),
                    r.design.show(&f.factor, &f.baseline)
                ),
                ["cell", "shared seeds", "mean difference [95% CI]", "d", "t", "p", "p (Holm)"],
                r.analysis.paired.iter().map(|p| {
                    let (diff, t) = match &p.test {
                        Some(t) => (
                            format!(
                                "{}{unit} [{}, {}]",
                                signed(t.mean_diff, scale, digits),
                                signed(t.ci95.0, scale, digits),
                                signed(t.ci95.1, scale, digits)
                            ),
                            format!("{:.2}", t.t),
                        ),
                        None => ("- (fewer than 2 shared seeds)".into(), "-".into()),
                    };
                    vec![
                        r.design.show_at(&p.at),
                        p.shared_seeds.len().to_string(),
                        diff,
                        d_text(p.standardized),
                        t,
                        p_text(p.test.map(|t| t.p_two_sided)),
                        p_text(p.p_holm),
                    ]
                }),
            )
            .caption("Paired t-test on per-seed differences; p (Holm) is corrected across all rows of this table."),
        );
    }
    out.extend(r.seed_plan.as_ref().map(|(plan, strata)| crate::seed_plan::table(plan, strata, r.design.schema)));
    out.extend(super::lesion::table(&r.design, &r.results));
    out.extend(super::variance::table(&r.design, &r.results));
    out.extend(super::landscape::table(&r.design, &r.results));
    out
}

/// The report in `format` (CSV: the cell rows, as before).
pub(crate) fn render_full(r: &FullReport, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json(r))? + "\n",
        Format::Csv => cells_csv(&r.design, &r.cells),
        _ => crate::tables::render(&tables(r), &r.notes, format),
    })
}

/// The JSON document (documented in the README): the legacy `sweep_id` and
/// `cells`, then the effects sections.
pub(super) fn json(r: &FullReport) -> serde_json::Value {
    let a = &r.analysis;
    let mut out = serde_json::json!({
        "sweep_id": r.sweep_id,
        "cells": r.cells,
        "metric": r.metric,
        "factors": a.factors,
        "baselines": a.baselines,
        "main_effects": a.main_effects,
        "interactions": a.simple_effects,
        "paired": a.paired,
        "groups": a.groups,
        "notes": r.notes,
        "trials": super::provenance::trial_rows(&r.design, &r.results.trials),
        "lesion": super::lesion::json(&r.results),
        "variance": super::variance::rows(&r.results),
        "landscape": super::landscape::json(&r.results),
    });
    // Sections only some reports have: a sweep with a seed plan, a report
    // that fetched the pictures' gradient norms.
    if let Some(doc) = out.as_object_mut() {
        if let Some((plan, strata)) = &r.seed_plan {
            doc.insert("adaptive".into(), crate::seed_plan::json(plan, strata));
        }
        if let Some(rows) = super::grad_flow::json(&r.results) {
            doc.insert("gradient_flow".into(), rows);
        }
    }
    out
}

/// The tables as CSV files (for `--out`).
pub(super) fn tables_csv(r: &FullReport) -> Vec<(String, String)> {
    let mut files = vec![("cells.csv".to_owned(), cells_csv(&r.design, &r.cells))];
    let q = csv_field;
    let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut eff = String::from(
        "kind,factor,level,baseline,at,level_mean,baseline_mean,effect,ci95_lo,ci95_hi,df,p_value,p_holm,method,d\n",
    );
    for (kind, list) in [("main", &r.analysis.main_effects), ("simple", &r.analysis.simple_effects)] {
        for c in list {
            let e = c.effect;
            eff += &format!(
                "{kind},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                q(&c.factor),
                q(&c.level),
                q(&c.baseline),
                q(&r.design.show_at(&c.at)),
                f(c.level_mean),
                f(c.baseline_mean),
                f(e.map(|e| e.estimate)),
                f(e.and_then(|e| e.ci95_lo)),
                f(e.and_then(|e| e.ci95_hi)),
                f(e.and_then(|e| e.df)),
                f(e.and_then(|e| e.p_value)),
                f(c.p_holm),
                match e.map(|e| e.method) {
                    Some(sweep_core::effects::Method::Blocked) => "blocked",
                    Some(sweep_core::effects::Method::Independent) => "independent",
                    None => "",
                },
                f(c.standardized),
            );
        }
    }
    files.push(("effects.csv".into(), eff));
    let mut paired =
        String::from("factor,level,baseline,at,shared_seeds,mean_diff,ci95_lo,ci95_hi,t,df,p_value,p_holm,d\n");
    for p in &r.analysis.paired {
        let t = p.test;
        paired += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            q(&p.factor),
            q(&p.level),
            q(&p.baseline),
            q(&r.design.show_at(&p.at)),
            p.shared_seeds.len(),
            f(t.map(|t| t.mean_diff)),
            f(t.map(|t| t.ci95.0)),
            f(t.map(|t| t.ci95.1)),
            f(t.map(|t| t.t)),
            f(t.map(|t| t.df)),
            f(t.map(|t| t.p_two_sided)),
            f(p.p_holm),
            f(p.standardized),
        );
    }
    files.push(("paired.csv".into(), paired));
    files
}
