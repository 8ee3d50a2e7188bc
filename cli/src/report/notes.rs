//! The flags under the report's tables, in plain words: missing cells,
//! pending trials, unbalanced seeds, divergence, failures, mixed settings,
//! partially matched effects, single-seed cells.

use std::collections::BTreeSet;

use sweep_core::effects::{self, Analysis};
use sweep_core::TrialResult;

use super::args::Measure;
use super::cells::Row;
use super::design::Design;

fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join("; ")
    } else {
        format!("{}; and {} more", items[..max].join("; "), items.len() - max)
    }
}

/// The notes, in the order the report prints them.
pub(super) fn notes(
    design: &Design,
    trials: &[TrialResult],
    rows: &[Row],
    a: &Analysis,
    metric: Measure,
) -> Vec<String> {
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
            format!("{} ({})", design.cell_name(&r.cell), why.join(", "))
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
    if let (Some(lo), Some(hi)) = (done.first(), done.last()) {
        if lo != hi {
            notes.push(format!(
                "Unbalanced seeds: cells have between {lo} and {hi} finished seeds, so their intervals differ in \
                 width; marginal means and effects weight every cell equally (means of cell means), not every trial."
            ));
        }
    }
    let diverged: Vec<String> = rows
        .iter()
        .filter(|r| r.diverged > 0)
        .map(|r| format!("{} ({} of {})", design.cell_name(&r.cell), r.diverged, r.seeds_total))
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
                design.show(&c.factor, &c.level),
                design.show(&c.factor, &c.baseline),
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
    let blocked = a
        .main_effects
        .iter()
        .chain(&a.simple_effects)
        .filter_map(|c| c.effect.as_ref())
        .chain(a.groups.iter().filter_map(|g| g.mean.as_ref()))
        .any(|c| c.method == effects::Method::Blocked);
    if blocked {
        notes.push(format!(
            "Effects are on {}. Intervals are 95% Student-t: per cell over its seeds; an effect or group mean \
             marked (b) is blocked on seed (every cell it uses ran the same seeds, which fix initialisation and \
             data order, so the contrast is taken within each seed and its interval is over seeds, n - 1 df); \
             the others treat cells as independent (Welch–Satterthwaite df over the cell means). `--intervals independent` gives Welch everywhere. p-values (Holm) are \
             Holm-corrected within each table.",
            metric.label()
        ));
    } else {
        notes.push(format!(
            "Effects are on {}. Intervals are 95% Student-t: per cell over its seeds; for effects, Welch intervals \
             of differences of cell means (Welch–Satterthwaite df). p-values (Holm) are Holm-corrected within each \
             table.",
            metric.label()
        ));
    }
    let any_d = a.main_effects.iter().chain(&a.simple_effects).any(|c| c.standardized.is_some())
        || a.paired.iter().any(|p| p.standardized.is_some());
    if any_d {
        notes.push(STANDARDIZED_NOTE.to_owned());
    }
    notes
}

/// What the tables' `d` column is (one home for the words, which the
/// upgrade test also recognises).
pub(crate) const STANDARDIZED_NOTE: &str = "d: the effect in units of the seed-to-seed spread, the difference over      the pooled standard deviation across seeds within the cells compared (Cohen's d); unlike percentage points it      compares across metrics. About 0.2 is small, 0.8 large; a d of 10 means the seeds barely matter.";
