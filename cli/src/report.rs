//! `sweep report`: the per-cell table, factorial effects with 95% intervals,
//! paired comparisons, plain-words flags, and (with `--html`/`--out`) the
//! pictures. Rendered as a terminal table, markdown, CSV, JSON or LaTeX.
//!
//! Means come with 95% Student-t intervals over the cell's seeds (never
//! z = 1.96: with 3 seeds that would understate the interval by half). The
//! effects are computed by `sweep_core::effects` (see its docs for how
//! marginal means and their intervals are defined) from the trial rows the
//! coordinator's `Analyze` call returns; the coordinator only runs
//! set-based queries.

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

/// The estimate over samples (a cell's succeeded seeds).
pub fn estimate_of(xs: &[f64]) -> Estimate {
    match Summary::from_samples(xs) {
        None => Estimate { n: 0, mean: None, sd: None, ci95_lo: None, ci95_hi: None },
        Some(s) => {
            let ci = t_interval(&s, 0.95);
            Estimate { n: s.n, mean: Some(s.mean), sd: s.sd, ci95_lo: ci.map(|c| c.0), ci95_hi: ci.map(|c| c.1) }
        }
    }
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

/// `mean ± half-width` (or just the mean with one seed, or `-` with none).
pub fn pm(e: &Estimate, scale: f64, digits: usize) -> String {
    match (e.mean, e.ci95_lo, e.ci95_hi) {
        (Some(m), Some(lo), Some(hi)) => format!("{:.d$} ± {:.d$}", m * scale, (hi - lo) / 2.0 * scale, d = digits),
        (Some(m), _, _) => format!("{:.d$}", m * scale, d = digits),
        _ => "-".into(),
    }
}

pub fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

pub const HEADER: [&str; 10] = [
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

pub fn cells(r: &Row) -> [String; 10] {
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

/// The cell rows as CSV (the columns are a documented contract).
pub fn cells_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "depth,skip,init,batchnorm,seeds_total,succeeded,diverged,failed,running,queued,\
         test_accuracy_mean,test_accuracy_ci95_lo,test_accuracy_ci95_hi,\
         train_loss_mean,train_loss_ci95_lo,train_loss_ci95_hi,best_test_accuracy_mean,wall_seconds_mean\n",
    );
    let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in rows {
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

// ---------------------------------------------------------------------------
// The factorial report: `sweep report SWEEP [--baseline ..] [--metric ..] ...`
// ---------------------------------------------------------------------------

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context;
use sweep_core::effects::{self, Analysis, Factor, Observation};

/// The value the effects are computed on (the cell table always shows test
/// accuracy and train loss).
#[derive(Clone, Copy, clap::ValueEnum, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Metric {
    /// Test accuracy after the last epoch.
    TestAccuracy,
    /// Mean training loss of the last logged window.
    TrainLoss,
    /// Test loss after the last epoch.
    TestLoss,
    /// Best test accuracy over the epochs.
    BestTestAccuracy,
}

impl Metric {
    fn value(self, t: &pb::TrialFinal) -> Option<f64> {
        match self {
            Metric::TestAccuracy => t.final_test_accuracy,
            Metric::TrainLoss => t.final_train_loss,
            Metric::TestLoss => t.final_test_loss,
            Metric::BestTestAccuracy => t.best_test_accuracy,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Metric::TestAccuracy => "final test accuracy (%)",
            Metric::TrainLoss => "final train loss",
            Metric::TestLoss => "final test loss",
            Metric::BestTestAccuracy => "best test accuracy (%)",
        }
    }
    /// Accuracies are shown in percent (effects in percentage points).
    fn scale(self) -> (f64, usize, &'static str) {
        match self {
            Metric::TestAccuracy | Metric::BestTestAccuracy => (100.0, 2, " pp"),
            Metric::TrainLoss | Metric::TestLoss => (1.0, 4, ""),
        }
    }
}

/// `sweep report`'s options.
#[derive(clap::Args, Clone, Debug)]
pub struct ReportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Baseline level of a factor for its effects, e.g. `skip=false` (default:
    /// each factor's first level: smallest depth, skip off, init default,
    /// batchnorm off). Comma-separated or repeated. The factors named here
    /// are the report's focus: their effect at each level of every other
    /// factor, and paired comparisons on shared seeds (default focus: skip).
    #[arg(long, value_delimiter = ',', value_name = "FACTOR=LEVEL")]
    pub baseline: Vec<String>,
    /// The value the effects are computed on.
    #[arg(long, value_enum, default_value_t = Metric::TestAccuracy)]
    pub metric: Metric,
    /// Group the table by these factors (means of cell means over the
    /// others), e.g. `--by depth,skip`. Default: one row per cell.
    #[arg(long, value_delimiter = ',', value_name = "FACTORS")]
    pub by: Vec<String>,
    /// Write one self-contained HTML page (tables and pictures) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the pictures (PNG and SVG) and the tables as CSV into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Depth of the loss-curve and gradient-flow pictures (default: the
    /// deepest with curves for both skip settings).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub curve_depth: Option<u32>,
}

impl Default for ReportArgs {
    fn default() -> Self {
        ReportArgs {
            format: Format::Table,
            baseline: Vec::new(),
            metric: Metric::TestAccuracy,
            by: Vec::new(),
            html: None,
            out: None,
            curve_depth: None,
        }
    }
}

pub const FACTORS: [&str; 4] = ["depth", "skip", "init", "batchnorm"];

type CellKey = (u32, bool, String, bool);

fn key_of(c: Option<&pb::AnalysisCell>) -> CellKey {
    let c = c.cloned().unwrap_or_default();
    (c.depth, c.skip, c.init, c.batchnorm)
}

fn levels_of(k: &CellKey) -> Vec<String> {
    vec![k.0.to_string(), k.1.to_string(), k.2.clone(), k.3.to_string()]
}

/// A level as people read it: skip/batchnorm `on`/`off`.
pub fn show_level(factor: &str, level: &str) -> String {
    match (factor, level) {
        ("skip" | "batchnorm", "true") => "on".into(),
        ("skip" | "batchnorm", "false") => "off".into(),
        _ => level.to_owned(),
    }
}

fn show_at(at: &BTreeMap<String, String>) -> String {
    let mut parts: Vec<(usize, String)> = at
        .iter()
        .map(|(f, l)| (FACTORS.iter().position(|x| x == f).unwrap_or(9), format!("{f}={}", show_level(f, l))))
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(" ")
}

/// Everything a report shows, ready for every format.
#[derive(Debug)]
pub struct FullReport {
    pub sweep_id: String,
    /// One row per cell (the documented JSON rows).
    pub cells: Vec<Row>,
    pub metric: Metric,
    pub analysis: Analysis,
    pub notes: Vec<String>,
    pub data: pb::AnalyzeResponse,
    pub curve_depth: Option<u32>,
}

/// The factors and their levels present in the trials, in display order
/// (depths ascending, off before on, init in the grid's canonical order).
fn design(trials: &[pb::TrialFinal]) -> Vec<Factor> {
    let keys: Vec<CellKey> = trials.iter().map(|t| key_of(t.cell.as_ref())).collect();
    let depth: BTreeSet<u32> = keys.iter().map(|k| k.0).collect();
    let skip: BTreeSet<bool> = keys.iter().map(|k| k.1).collect();
    let init: BTreeSet<String> = keys.iter().map(|k| k.2.clone()).collect();
    let bn: BTreeSet<bool> = keys.iter().map(|k| k.3).collect();
    let mut inits: Vec<String> = init.into_iter().collect();
    inits.sort_by_key(|i| sweep_core::InitScheme::ALL.iter().position(|s| s.as_str() == i).unwrap_or(usize::MAX));
    vec![
        Factor::new("depth", depth.iter().map(|d| d.to_string())),
        Factor::new("skip", skip.iter().map(|b| b.to_string())),
        Factor::new("init", inits),
        Factor::new("batchnorm", bn.iter().map(|b| b.to_string())),
    ]
}

fn parse_baselines(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let (f, l) =
            a.split_once('=').with_context(|| format!("--baseline {a:?}: expected FACTOR=LEVEL, e.g. skip=false"))?;
        let f = f.trim();
        if !FACTORS.contains(&f) {
            anyhow::bail!("--baseline {a:?}: unknown factor {f:?} (factors: {})", FACTORS.join(", "));
        }
        let l = match (f, l.trim()) {
            ("skip" | "batchnorm", "on" | "true") => "true".to_owned(),
            ("skip" | "batchnorm", "off" | "false") => "false".to_owned(),
            (_, l) => l.to_owned(),
        };
        out.insert(f.to_owned(), l);
    }
    Ok(out)
}

/// Builds the report from the coordinator's `Analyze` answer.
pub fn build(data: pb::AnalyzeResponse, args: &ReportArgs) -> anyhow::Result<FullReport> {
    let factors = design(&data.trials);
    let baselines = parse_baselines(&args.baseline)?;
    for f in &args.by {
        if !FACTORS.contains(&f.as_str()) {
            anyhow::bail!("--by {f:?}: unknown factor (factors: {})", FACTORS.join(", "));
        }
    }
    let varying = |name: &str| factors.iter().any(|f| f.name == name && f.levels.len() > 1);
    let focus: Vec<String> = if !baselines.is_empty() {
        baselines.keys().cloned().collect()
    } else if varying("skip") {
        vec!["skip".into()]
    } else {
        factors.iter().find(|f| f.levels.len() > 1).map(|f| vec![f.name.clone()]).unwrap_or_default()
    };
    let obs: Vec<Observation> = data
        .trials
        .iter()
        .filter(|t| t.state == "succeeded")
        .filter_map(|t| {
            let v = args.metric.value(t)?;
            Some(Observation { levels: levels_of(&key_of(t.cell.as_ref())), seed: t.seed, value: v })
        })
        .collect();
    let opts = effects::Options { baselines, focus, by: args.by.clone() };
    let analysis = effects::analyze(&factors, &obs, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cells = cell_rows(&data.trials);
    let mut notes = report_notes(&data.trials, &cells, &analysis, args.metric);
    notes.extend(crate::provenance::notes(&data.trials));
    Ok(FullReport {
        sweep_id: data.sweep_id.clone(),
        cells,
        metric: args.metric,
        analysis,
        notes,
        data,
        curve_depth: args.curve_depth,
    })
}

fn cell_rows(trials: &[pb::TrialFinal]) -> Vec<Row> {
    let mut by: BTreeMap<(u32, std::cmp::Reverse<bool>, String, std::cmp::Reverse<bool>), Vec<&pb::TrialFinal>> =
        BTreeMap::new();
    for t in trials {
        let k = key_of(t.cell.as_ref());
        by.entry((k.0, std::cmp::Reverse(k.1), k.2, std::cmp::Reverse(k.3))).or_default().push(t);
    }
    by.into_iter()
        .map(|((depth, skip, init, bn), ts)| {
            let count = |s: &str| ts.iter().filter(|t| t.state == s).count() as u64;
            let ok: Vec<&&pb::TrialFinal> = ts.iter().filter(|t| t.state == "succeeded").collect();
            let est = |f: fn(&pb::TrialFinal) -> Option<f64>| {
                estimate_of(&ok.iter().filter_map(|t| f(t)).collect::<Vec<_>>())
            };
            Row {
                depth,
                skip: skip.0,
                init,
                batchnorm: bn.0,
                seeds_total: ts.len() as u64,
                succeeded: ok.len() as u64,
                diverged: count("diverged"),
                failed: count("failed"),
                running: count("running"),
                queued: count("queued"),
                test_accuracy: est(|t| t.final_test_accuracy),
                train_loss: est(|t| t.final_train_loss),
                test_loss: est(|t| t.final_test_loss),
                best_test_accuracy: est(|t| t.best_test_accuracy),
                wall_seconds: est(|t| t.wall_seconds),
            }
        })
        .collect()
}

fn cell_name(r: &Row) -> String {
    format!("depth={} skip={} init={} batchnorm={}", r.depth, on_off(r.skip), r.init, on_off(r.batchnorm))
}

fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join("; ")
    } else {
        format!("{}; and {} more", items[..max].join("; "), items.len() - max)
    }
}

/// The flags under the tables, in plain words.
fn report_notes(trials: &[pb::TrialFinal], rows: &[Row], a: &Analysis, metric: Metric) -> Vec<String> {
    let mut notes = Vec::new();
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| r.succeeded == 0)
        .map(|r| {
            let mut why = Vec::new();
            for (n, w) in [(r.running, "running"), (r.queued, "queued"), (r.diverged, "diverged"), (r.failed, "failed")]
            {
                if n > 0 {
                    why.push(format!("{n} {w}"));
                }
            }
            format!("{} ({})", cell_name(r), why.join(", "))
        })
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "{} of {} cells have no finished seed yet and are missing from the means and effects: {}.",
            missing.len(),
            rows.len(),
            list(&missing, 6)
        ));
    }
    let pending: u64 = rows.iter().map(|r| r.running + r.queued).sum();
    if pending > 0 {
        let cells = rows.iter().filter(|r| r.running + r.queued > 0).count();
        notes
            .push(format!("{pending} trials in {cells} cells are still queued or running: these numbers will change."));
    }
    let done: BTreeSet<u64> = rows.iter().filter(|r| r.succeeded > 0).map(|r| r.succeeded).collect();
    if done.len() > 1 {
        notes.push(format!(
            "Unbalanced seeds: cells have between {} and {} finished seeds, so their intervals differ in width; \
             marginal means and effects weight every cell equally (means of cell means), not every trial.",
            done.first().unwrap(),
            done.last().unwrap()
        ));
    }
    let diverged: Vec<String> = rows
        .iter()
        .filter(|r| r.diverged > 0)
        .map(|r| format!("{} ({} of {})", cell_name(r), r.diverged, r.seeds_total))
        .collect();
    if !diverged.is_empty() {
        let n: u64 = rows.iter().map(|r| r.diverged).sum();
        notes.push(format!(
            "{n} trials diverged (loss became NaN or infinite) in {} cells: {}. They are NOT counted in the means, \
             intervals or effects, which describe only the runs that trained; a cell where seeds diverged looks \
             better than its setting is.",
            diverged.len(),
            list(&diverged, 6)
        ));
    }
    let failed: u64 = rows.iter().map(|r| r.failed).sum();
    if failed > 0 {
        notes.push(format!("{failed} trials failed after all their attempts and are not counted; see `sweep status`."));
    }
    let keys: BTreeSet<&str> = trials.iter().map(|t| t.cell_key.as_str()).collect();
    if keys.len() > rows.len() {
        notes.push(
            "This sweep holds trials of the same cells with different [train]/[data] settings (the grid was \
             resubmitted with changes); they are reported together."
                .into(),
        );
    }
    let partial: Vec<String> = a
        .main_effects
        .iter()
        .filter(|c| c.strata_unmatched > 0)
        .map(|c| {
            format!(
                "{} {} vs {} uses {} of {} combinations of the other factors",
                c.factor,
                show_level(&c.factor, &c.level),
                show_level(&c.factor, &c.baseline),
                c.strata_used,
                c.strata_used + c.strata_unmatched
            )
        })
        .collect();
    if !partial.is_empty() {
        notes.push(format!(
            "Effects compare matched cells only: {} (the others have finished runs at just one of the two levels).",
            list(&partial, 4)
        ));
    }
    if a.cells.iter().any(|c| c.n == 1) {
        notes.push(
            "Cells with a single finished seed have a mean but no interval, and so have the effects that use them."
                .into(),
        );
    }
    notes.push(format!(
        "Effects are on {}. Intervals are 95% Student-t: per cell over its seeds; for effects, Welch intervals of \
         differences of cell means (Welch–Satterthwaite df). p-values (Holm) are Holm-corrected within each table.",
        metric.label()
    ));
    notes
}

fn signed(v: f64, scale: f64, digits: usize) -> String {
    format!("{:+.d$}", v * scale, d = digits)
}

fn effect_text(c: &Option<effects::Contrast>, metric: Metric) -> String {
    let (scale, digits, unit) = metric.scale();
    match c {
        None => "-".into(),
        Some(c) => match (c.ci95_lo, c.ci95_hi) {
            (Some(lo), Some(hi)) => format!(
                "{}{unit} [{}, {}]",
                signed(c.estimate, scale, digits),
                signed(lo, scale, digits),
                signed(hi, scale, digits)
            ),
            _ => format!("{}{unit} (no interval)", signed(c.estimate, scale, digits)),
        },
    }
}

fn p_text(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(p) if p < 0.001 => "<0.001".into(),
        Some(p) => format!("{p:.3}"),
    }
}

fn mean_text(m: Option<f64>, metric: Metric) -> String {
    let (scale, digits, _) = metric.scale();
    m.map(|m| format!("{:.d$}", m * scale, d = digits)).unwrap_or_else(|| "-".into())
}

/// Every section as a table.
pub fn tables(r: &FullReport) -> Vec<crate::tables::Table> {
    use crate::tables::Table;
    let m = r.metric;
    let mut out = Vec::new();
    if r.analysis.groups.is_empty() {
        out.push(Table::new(format!("Sweep {}: cells", r.sweep_id), HEADER, r.cells.iter().map(|c| cells(c).to_vec())));
    } else {
        let by: Vec<&str> = r.analysis.groups[0].levels.keys().map(|s| s.as_str()).collect();
        let mut header: Vec<String> = Vec::new();
        let mut order: Vec<&str> = FACTORS.iter().copied().filter(|f| by.contains(f)).collect();
        order.retain(|f| by.contains(f));
        header.extend(order.iter().map(|s| s.to_string()));
        header.extend(["cells".into(), "trials".into(), format!("{} (95% CI)", m.label())]);
        let (scale, digits, _) = m.scale();
        out.push(
            Table::new(
                format!("Sweep {}: {} by {}", r.sweep_id, m.label(), order.join(", ")),
                header,
                r.analysis.groups.iter().map(|g| {
                    let mut row: Vec<String> = order.iter().map(|f| show_level(f, &g.levels[*f])).collect();
                    row.push(g.cells.to_string());
                    row.push(g.n.to_string());
                    row.push(match g.mean {
                        Some(c) => match (c.ci95_lo, c.ci95_hi) {
                            (Some(lo), Some(hi)) => {
                                format!("{:.d$} ± {:.d$}", c.estimate * scale, (hi - lo) / 2.0 * scale, d = digits)
                            }
                            _ => format!("{:.d$}", c.estimate * scale, d = digits),
                        },
                        None => "-".into(),
                    });
                    row
                }),
            )
            .caption("Means of cell means over the factors not listed, each cell weighted equally."),
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
                    "p",
                    "p (Holm)",
                    "matched cell pairs",
                ],
                r.analysis.main_effects.iter().map(|c| {
                    vec![
                        c.factor.clone(),
                        format!("{} vs {}", show_level(&c.factor, &c.level), show_level(&c.factor, &c.baseline)),
                        mean_text(c.level_mean, m),
                        mean_text(c.baseline_mean, m),
                        effect_text(&c.effect, m),
                        p_text(c.effect.and_then(|e| e.p_value)),
                        p_text(c.p_holm),
                        c.strata_used.to_string(),
                    ]
                }),
            )
            .caption(
                "Effect = difference of marginal means (means of cell means over the other factors, matched cells \
                 only), with a Welch 95% interval.",
            ),
        );
    }
    let focus: BTreeSet<(&str, &str, &str)> =
        r.analysis.simple_effects.iter().map(|c| (c.factor.as_str(), c.level.as_str(), c.baseline.as_str())).collect();
    for (f, l, b) in focus {
        out.push(
            Table::new(
                format!(
                    "Interactions: effect of {f} {} vs {} at each level of the other factors",
                    show_level(f, l),
                    show_level(f, b)
                ),
                ["at", "with", "without", "effect [95% CI]", "p"],
                r.analysis.simple_effects.iter().filter(|c| c.factor == f && c.level == l).map(|c| {
                    vec![
                        show_at(&c.at),
                        mean_text(c.level_mean, m),
                        mean_text(c.baseline_mean, m),
                        effect_text(&c.effect, m),
                        p_text(c.effect.and_then(|e| e.p_value)),
                    ]
                }),
            )
            .caption(format!(
                "\"with\" = {f} {}, \"without\" = {f} {}; means of cell means over the factors not held fixed. \
                 p-values here are not corrected for multiple comparisons.",
                show_level(f, l),
                show_level(f, b)
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
                    show_level(&f.factor, &f.level),
                    show_level(&f.factor, &f.baseline)
                ),
                ["cell", "shared seeds", "mean difference [95% CI]", "t", "p", "p (Holm)"],
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
                        show_at(&p.at),
                        p.shared_seeds.len().to_string(),
                        diff,
                        t,
                        p_text(p.test.map(|t| t.p_two_sided)),
                        p_text(p.p_holm),
                    ]
                }),
            )
            .caption("Paired t-test on per-seed differences; p (Holm) is corrected across all rows of this table."),
        );
    }
    out
}

/// The report in `format` (CSV: the cell rows, as before).
pub fn render_full(r: &FullReport, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&json(r))? + "\n",
        Format::Csv => cells_csv(&r.cells),
        _ => crate::tables::render(&tables(r), &r.notes, format),
    })
}

/// The JSON document (documented in the README): the legacy `sweep_id` and
/// `cells`, then the effects sections.
pub fn json(r: &FullReport) -> serde_json::Value {
    let a = &r.analysis;
    serde_json::json!({
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
        "trials": crate::provenance::trial_rows(&r.data.trials),
    })
}

/// The tables as CSV files (for `--out`).
pub fn tables_csv(r: &FullReport) -> Vec<(String, String)> {
    let mut files = vec![("cells.csv".to_owned(), cells_csv(&r.cells))];
    let q =
        |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() };
    let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut eff = String::from(
        "kind,factor,level,baseline,at,level_mean,baseline_mean,effect,ci95_lo,ci95_hi,df,p_value,p_holm\n",
    );
    for (kind, list) in [("main", &r.analysis.main_effects), ("simple", &r.analysis.simple_effects)] {
        for c in list.iter() {
            let e = c.effect;
            eff += &format!(
                "{kind},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                q(&c.factor),
                q(&c.level),
                q(&c.baseline),
                q(&show_at(&c.at)),
                f(c.level_mean),
                f(c.baseline_mean),
                f(e.map(|e| e.estimate)),
                f(e.and_then(|e| e.ci95_lo)),
                f(e.and_then(|e| e.ci95_hi)),
                f(e.and_then(|e| e.df)),
                f(e.and_then(|e| e.p_value)),
                f(c.p_holm),
            );
        }
    }
    files.push(("effects.csv".into(), eff));
    let mut paired =
        String::from("factor,level,baseline,at,shared_seeds,mean_diff,ci95_lo,ci95_hi,t,df,p_value,p_holm\n");
    for p in &r.analysis.paired {
        let t = p.test;
        paired += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            q(&p.factor),
            q(&p.level),
            q(&p.baseline),
            q(&show_at(&p.at)),
            p.shared_seeds.len(),
            f(t.map(|t| t.mean_diff)),
            f(t.map(|t| t.ci95.0)),
            f(t.map(|t| t.ci95.1)),
            f(t.map(|t| t.t)),
            f(t.map(|t| t.df)),
            f(t.map(|t| t.p_two_sided)),
            f(p.p_holm),
        );
    }
    files.push(("paired.csv".into(), paired));
    files
}

/// The coordinator's answer with every string it carries made safe to print
/// (see [`crate::printable`]): the report shows them in every format.
fn escaped(mut d: pb::AnalyzeResponse) -> pb::AnalyzeResponse {
    fn fix(s: &mut String) {
        let owned = match crate::printable::printable(s) {
            std::borrow::Cow::Owned(o) => Some(o),
            std::borrow::Cow::Borrowed(_) => None,
        };
        if let Some(o) = owned {
            *s = o;
        }
    }
    fn fix_cell(c: &mut Option<pb::AnalysisCell>) {
        if let Some(c) = c {
            fix(&mut c.init);
        }
    }
    fix(&mut d.sweep_id);
    for t in &mut d.trials {
        fix_cell(&mut t.cell);
        fix(&mut t.state);
        fix(&mut t.cell_key);
        fix(&mut t.device);
    }
    for c in &mut d.curves {
        fix_cell(&mut c.cell);
        fix(&mut c.metric);
    }
    for g in &mut d.grad_flow {
        fix_cell(&mut g.cell);
        fix(&mut g.block);
    }
    d
}

/// Connects to the coordinator's `AnalysisService` (with the token and TLS
/// settings every client command uses).
async fn analysis_client(
    url: &str,
) -> anyhow::Result<pb::analysis_service_client::AnalysisServiceClient<sweep_proto::client::AuthChannel>> {
    Ok(pb::analysis_service_client::AnalysisServiceClient::new(crate::commands::channel(url).await?)
        .max_decoding_message_size(256 * 1024 * 1024))
}

/// `sweep report`: fetch, compute, print; write the page and pictures.
pub async fn command(sweep: &str, args: &ReportArgs, url: &str) -> Result<(), crate::Failure> {
    let pictures = args.html.is_some() || args.out.is_some();
    let mut client = analysis_client(url).await?;
    let data = client
        .analyze(pb::AnalyzeRequest {
            sweep_id: sweep.to_owned(),
            curve_metrics: if pictures { vec!["train_loss".into()] } else { Vec::new() },
            grad_flow: pictures,
        })
        .await
        .map_err(crate::commands::rpc)?
        .into_inner();
    let report = build(escaped(data), args)?;
    print!("{}", render_full(&report, args.format)?);
    if pictures {
        let pics = crate::plots::all(&report)?;
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for p in &pics {
                let png = dir.join(format!("{}.png", p.name));
                std::fs::write(&png, &p.png).with_context(|| format!("writing {}", png.display()))?;
                let svg = dir.join(format!("{}.svg", p.name));
                std::fs::write(&svg, &p.svg).with_context(|| format!("writing {}", svg.display()))?;
            }
            for (name, text) in tables_csv(&report) {
                std::fs::write(dir.join(&name), text).with_context(|| format!("writing {name}"))?;
            }
            eprintln!("wrote {} pictures (PNG and SVG) and the tables as CSV to {}", pics.len(), dir.display());
        }
        if let Some(file) = &args.html {
            let page = crate::html::page(&report, &pics);
            std::fs::write(file, page).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(())
}
