//! `sweep report`: the per-cell table, factorial effects with 95% intervals,
//! paired comparisons, plain-words flags, and (with `--html`/`--out`) the
//! pictures. Rendered as a terminal table, markdown, CSV, JSON or LaTeX.
//!
//! Means come with 95% Student-t intervals over the cell's seeds (never
//! z = 1.96: with 3 seeds that would understate the interval by half). The
//! effects are computed by `sweep_core::effects` (see its docs for how
//! marginal means and their intervals are defined) from the trial rows the
//! coordinator's `Analyze` call returns; the coordinator only runs
//! set-based queries. The answer is converted to domain types
//! ([`SweepResults`]) on arrival; nothing below this module sees the wire.
//!
//! - `args`: the options; `design`: the factors the trials show;
//!   `cells`: the per-cell rows; `notes`: the flags; `render`: tables,
//!   JSON, CSV; `provenance`: where trials ran; `lesion`, `variance`,
//!   `landscape`: the analyses' sections; `grad_flow`: the gradient-flow
//!   rows; `plots`, `html`: pictures and the page.

mod args;
mod cells;
mod design;
mod grad_flow;
mod html;
mod landscape;
mod lesion;
mod notes;
mod plots;
mod provenance;
mod render;
mod variance;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use sweep_core::adaptive::{SeedPlan, Stratum};
use sweep_core::effects::{self, Analysis, Observation};
use sweep_core::{SweepResults, TrialState};
use sweep_proto::v1 as pb;

pub(crate) use args::{Measure, ReportArgs};
use cells::{cell_rows, Row};
use design::Design;
pub(crate) use render::render_full;

/// Everything a report shows, ready for every format.
#[derive(Debug)]
pub(crate) struct FullReport {
    pub sweep_id: String,
    pub design: Design,
    /// One row per cell (the documented JSON rows).
    pub cells: Vec<Row>,
    pub metric: Measure,
    pub analysis: Analysis,
    pub notes: Vec<String>,
    pub results: SweepResults,
    /// The picture options (`--x`, `--at`).
    pub x: Option<String>,
    pub at: BTreeMap<String, String>,
    /// The focus factors (their levels are the pictures' lines).
    pub focus: Vec<String>,
    /// The sweep's seed plan and its strata, as the coordinator judges
    /// them.
    pub seed_plan: Option<(SeedPlan, Vec<Stratum>)>,
}

/// Builds the report from the coordinator's results.
pub(crate) fn build(mut results: SweepResults, args: &ReportArgs) -> anyhow::Result<FullReport> {
    let design = Design::of(&results.trials);
    // Trials in display order: factor levels, then seed (the JSON `trials`).
    // Each distinct cell's place in that order, once (trials share cells).
    let cell_order =
        per_cell(&results.trials, |cell| design.factors.iter().map(|f| cell.get(&f.name).cloned()).collect::<Vec<_>>());
    let mut places: Vec<&Vec<Option<sweep_core::Level>>> = cell_order.values().collect();
    places.sort();
    places.dedup();
    let place: std::collections::HashMap<*const sweep_core::Cell, usize> =
        cell_order.iter().map(|(ptr, key)| (*ptr, places.partition_point(|p| *p < key))).collect();
    let mut keyed: Vec<((usize, u64), sweep_core::TrialResult)> =
        std::mem::take(&mut results.trials).into_iter().map(|t| ((place[&Arc::as_ptr(&t.cell)], t.seed), t)).collect();
    keyed.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.cell_key.cmp(&y.cell_key)));
    results.trials = keyed.into_iter().map(|(_, t)| t).collect();
    let mut baselines = BTreeMap::new();
    for b in &args.baseline {
        let (f, l) = design.parse_assignment("--baseline", b)?;
        baselines.insert(f, l);
    }
    for f in &args.by {
        design.known("--by", f, f)?;
    }
    let mut at = BTreeMap::new();
    for a in &args.at {
        let (f, l) = design.parse_assignment("--at", a)?;
        at.insert(f, l);
    }
    design.x_factor(args.x.as_deref())?;
    let focus = design.focus(&baselines);
    let metric = args.metric.unwrap_or_else(|| Measure::default_for(&results.trials));
    let done: Vec<&sweep_core::TrialResult> =
        results.trials.iter().filter(|t| t.state == TrialState::Succeeded).collect();
    if args.metric.is_some() && !done.is_empty() && !done.iter().any(|t| metric.value(t).is_some()) {
        let finals: std::collections::BTreeSet<&str> =
            done.iter().flat_map(|t| t.finals.keys().map(String::as_str)).collect();
        let choices = if finals.is_empty() {
            "test_accuracy, train_loss, test_loss, best_test_accuracy".to_owned()
        } else {
            format!(
                "the built-in ones or a final value the command reported: {}",
                finals.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        anyhow::bail!("no succeeded trial has a value of --metric {}; choose {choices}", metric.name());
    }
    let level_texts = per_cell(&results.trials, |cell| design.level_texts(cell));
    let obs: Vec<Observation> = results
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Succeeded)
        .filter_map(|t| {
            let value = metric.value(t)?;
            Some(Observation { levels: level_texts[&Arc::as_ptr(&t.cell)].clone(), seed: t.seed, value })
        })
        .collect();
    let factors: Vec<effects::Factor> = design
        .factors
        .iter()
        .map(|f| effects::Factor::new(&f.name, f.levels.iter().map(ToString::to_string)))
        .collect();
    let opts =
        effects::Options { intervals: args.intervals.option(), baselines, focus: focus.clone(), by: args.by.clone() };
    let analysis = effects::analyze(&factors, &obs, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cells = cell_rows(&design, &results.trials);
    let mut notes = notes::notes(&design, &results.trials, &cells, &analysis, metric);
    notes.extend(provenance::notes(&design, &results.trials));
    let seed_plan = results.adaptive.clone().map(|plan| (plan, results.strata.clone()));
    notes.extend(seed_plan.as_ref().map(|(plan, _)| crate::seed_plan::note(plan)));
    Ok(FullReport {
        sweep_id: results.sweep_id.clone(),
        design,
        cells,
        metric,
        analysis,
        notes,
        results,
        x: args.x.clone(),
        at,
        focus,
        seed_plan,
    })
}

/// `f` of each distinct cell of `trials`, keyed by the cell's address:
/// trials share their cells (see [`sweep_core::TrialResult`]), so work per
/// cell is done once, not once per trial. The trials borrowed keep every
/// key's cell alive.
fn per_cell<T>(
    trials: &[sweep_core::TrialResult],
    f: impl Fn(&sweep_core::Cell) -> T,
) -> std::collections::HashMap<*const sweep_core::Cell, T> {
    let mut out = std::collections::HashMap::new();
    for t in trials {
        out.entry(Arc::as_ptr(&t.cell)).or_insert_with(|| f(&t.cell));
    }
    out
}

/// The coordinator's answer with every string it carries made safe to print
/// (see [`crate::printable`]): the report shows them in every format.
fn escaped(mut r: SweepResults) -> SweepResults {
    fn fix(s: &mut String) {
        if let std::borrow::Cow::Owned(o) = crate::printable::printable(s) {
            *s = o;
        }
    }
    fn fix_cell(c: &mut sweep_core::Cell) {
        let fixed = std::mem::take(&mut c.0)
            .into_iter()
            .map(|(mut k, mut v)| {
                fix(&mut k);
                if let sweep_core::Level::Str(s) = &mut v {
                    fix(s);
                }
                (k, v)
            })
            .collect();
        c.0 = fixed;
    }
    fix(&mut r.sweep_id);
    // Trials share their cells: each is escaped once (the map keeps the
    // original alive, so its address names it until the end).
    let mut cells: std::collections::HashMap<*const sweep_core::Cell, (Arc<sweep_core::Cell>, Arc<sweep_core::Cell>)> =
        std::collections::HashMap::new();
    for t in &mut r.trials {
        let (_, fixed) = cells.entry(Arc::as_ptr(&t.cell)).or_insert_with(|| {
            let mut c = (*t.cell).clone();
            fix_cell(&mut c);
            (t.cell.clone(), Arc::new(c))
        });
        t.cell = fixed.clone();
        fix(&mut t.cell_key);
        fix(&mut t.device);
    }
    for c in &mut r.curves {
        fix_cell(&mut c.cell);
        fix(&mut c.metric);
    }
    for g in &mut r.grad_flow {
        fix_cell(&mut g.cell);
        fix(&mut g.block);
    }
    for s in &mut r.strata {
        fix_cell(&mut s.at);
        let levels = std::iter::once(&mut s.baseline).chain(s.effects.iter_mut().map(|e| &mut e.level));
        for level in levels {
            if let sweep_core::Level::Str(text) = level {
                fix(text);
            }
        }
    }
    if let Some(plan) = &mut r.adaptive {
        fix(&mut plan.contrast);
    }
    r
}

/// Connects to the coordinator's `AnalysisService` (with the token and TLS
/// settings every client command uses).
async fn analysis_client(
    url: &str,
) -> anyhow::Result<pb::analysis_service_client::AnalysisServiceClient<sweep_proto::client::AuthChannel>> {
    Ok(pb::analysis_service_client::AnalysisServiceClient::new(crate::commands::channel(url).await?)
        .max_decoding_message_size(256 * 1024 * 1024))
}

/// Fetches a sweep's results, as domain types.
/// The trial rows (and, for pictures, the loss curves and gradient flow)
/// first; the analyses' curves in a second call only when a trial ran an
/// analysis, so a sweep without one costs no query per analysis metric.
pub(crate) async fn fetch(sweep: &str, pictures: bool, url: &str) -> Result<SweepResults, crate::Failure> {
    let mut client = analysis_client(url).await?;
    let ask = |curve_metrics: Vec<String>, grad_flow: bool| pb::AnalyzeRequest {
        sweep_id: sweep.to_owned(),
        curve_metrics,
        grad_flow,
        live: false,
    };
    let first = if pictures { vec!["train_loss".to_owned()] } else { Vec::new() };
    let data = client.analyze(ask(first, pictures)).await.map_err(crate::commands::rpc)?.into_inner();
    let mut results = SweepResults::try_from(data).context("the coordinator's report data")?;
    if results.trials.iter().any(ran_an_analysis) {
        let metrics = lesion::METRICS.iter().chain(&variance::METRICS).chain(&landscape::METRICS);
        let more = ask(metrics.map(|m| (*m).to_owned()).collect(), false);
        let data = client.analyze(more).await.map_err(crate::commands::rpc)?.into_inner();
        let analyses = SweepResults::try_from(data).context("the coordinator's report data")?;
        results.curves.extend(analyses.curves);
    }
    Ok(escaped(results))
}

/// Whether `t`'s settings turn an analysis on (`[analysis]` keys are stored
/// only when not at their default).
fn ran_an_analysis(t: &sweep_core::TrialResult) -> bool {
    let schema = sweep_core::schema();
    t.settings.iter().any(|(name, level)| {
        schema.key(name).is_some_and(|k| k.place == sweep_core::schema::Place::Analysis)
            && level.as_bool() == Some(true)
    })
}

/// The self-contained page of `sweep report --html` (tables, notes and
/// pictures), for the dashboard.
pub(crate) fn page(report: &FullReport) -> anyhow::Result<String> {
    Ok(html::page(report, &plots::all(report)?))
}

/// The report's tables as HTML (the cell table first), for the dashboard.
pub(crate) fn tables_html(report: &FullReport) -> String {
    render::tables(report).iter().map(crate::tables::html).collect()
}

/// The JSON report (`sweep report --format json`).
pub(crate) fn json(report: &FullReport) -> serde_json::Value {
    render::json(report)
}

/// `sweep report`: fetch, compute, print; write the page and pictures.
pub(crate) async fn command(sweep: &str, args: &ReportArgs, url: &str) -> Result<(), crate::Failure> {
    let pictures = args.html.is_some() || args.out.is_some();
    let results = fetch(sweep, pictures, url).await?;
    let report = build(results, args)?;
    print!("{}", render_full(&report, args.format)?);
    if pictures {
        let pics = plots::all(&report)?;
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for p in &pics {
                let png = dir.join(format!("{}.png", p.name));
                std::fs::write(&png, &p.png).with_context(|| format!("writing {}", png.display()))?;
                let svg = dir.join(format!("{}.svg", p.name));
                std::fs::write(&svg, &p.svg).with_context(|| format!("writing {}", svg.display()))?;
            }
            for (name, text) in render::tables_csv(&report) {
                std::fs::write(dir.join(&name), text).with_context(|| format!("writing {name}"))?;
            }
            eprintln!("wrote {} pictures (PNG and SVG) and the tables as CSV to {}", pics.len(), dir.display());
        }
        if let Some(file) = &args.html {
            let page = html::page(&report, &pics);
            std::fs::write(file, page).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("wrote {}", file.display());
        }
    }
    Ok(())
}
