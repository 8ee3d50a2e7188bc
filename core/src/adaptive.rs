//! Adaptive seeds: `[run] target_halfwidth`, `max_seeds` and `contrast`.
//!
//! A sweep's planned seeds are run first. Then, within each *stratum* (a
//! combination of the other factors' levels), the contrast factor's paired
//! effect (each level against the baseline, per seed, the report's paired
//! comparison) is judged once every trial of the stratum has finished:
//!
//! - **resolved**: every effect's 95% interval excludes zero;
//! - **below target**: every effect that is not resolved has an interval
//!   half-width at or below `target_halfwidth`;
//! - **max seeds**: the stratum already ran `max_seeds` seeds;
//! - **no pairs**: no seed gave a value at both levels of any effect (every
//!   trial on one side diverged or failed), so more seeds would not help
//!   (an effect without a pair is settled the same way beside others);
//! - otherwise one more seed (the smallest unused number) is added to every
//!   cell of the stratum, and the stratum is judged again when it finishes.
//!
//! The coordinator applies [`review`] in the transaction that finishes a
//! trial, so a sweep is never seen finished while a seed is still due; the
//! report applies the same function to the same results to say why each
//! stratum stopped. Everything here is pure.
//!
//! A Student-t interval computed on a sample whose size depended on the
//! data is not exact: stopping when the interval excludes zero favours
//! samples that overstate the effect. `core/tests/adaptive_coverage.rs`
//! measures how much coverage this costs (docs/adaptive-seeds.md).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cell::Cell;
use crate::level::Level;
use crate::schema::Schema;
use crate::stats::{paired_t, PairedT};

/// `[run]`'s adaptive-seed plan. Not part of any trial's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedPlan {
    /// The 95% half-width that is precise enough, in the units of final test
    /// accuracy as a fraction (0.02: two percentage points).
    pub target_halfwidth: f64,
    /// The most seeds any cell gets, the planned ones included.
    pub max_seeds: u32,
    /// The factor whose paired effect is judged within each stratum.
    pub contrast: String,
}

impl SeedPlan {
    /// The plan's own rules, those that need no grid (the target width and
    /// the seed bound); a grid's validation also checks the contrast.
    pub fn validate(&self) -> Result<(), crate::GridError> {
        crate::grid_validate::validate_plan(self)
    }
}

/// Where one trial stands, as far as the plan cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Queued or running.
    Pending,
    /// Finished with this final test accuracy.
    Value(f64),
    /// Finished without one (diverged, failed or cancelled).
    NoValue,
}

impl Outcome {
    /// A trial's outcome from its state and final test accuracy.
    pub fn of(state: crate::TrialState, final_test_accuracy: Option<f64>) -> Outcome {
        use crate::TrialState as S;
        match (state, final_test_accuracy) {
            (S::Queued | S::Running, _) => Outcome::Pending,
            (S::Succeeded, Some(v)) if v.is_finite() => Outcome::Value(v),
            _ => Outcome::NoValue,
        }
    }
}

/// One trial: its cell, seed and outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub cell: Cell,
    pub seed: u64,
    pub outcome: Outcome,
}

/// Why a stratum gets no more seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    Resolved,
    BelowTarget,
    MaxSeeds,
    NoPairs,
}

impl Stop {
    /// Words for tables: what the stop means.
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Resolved => "resolved: the interval excludes 0",
            Stop::BelowTarget => "interval below the target width",
            Stop::MaxSeeds => "max_seeds reached",
            Stop::NoPairs => "no paired results (every seed diverged or failed on one side)",
        }
    }
}

/// What happens next to a stratum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Some of its trials are still queued or running.
    Waiting,
    /// Every trial finished and an effect is still open: this seed is due
    /// (the coordinator queues it in the transaction that finished the
    /// stratum's last trial; it stays due only in a cancelled sweep).
    SeedDue(u64),
    Stopped(Stop),
}

/// One non-baseline level of the contrast factor against the baseline,
/// paired within seed (the report's paired comparison).
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub level: Level,
    /// Seeds finished with a value at both levels.
    pub pairs: u64,
    /// Mean of the per-seed differences (`None` without a pair).
    pub estimate: Option<f64>,
    /// Its 95% Student-t interval (`None` below two pairs).
    pub ci95: Option<(f64, f64)>,
}

impl Effect {
    fn of(level: Level, diffs: &[f64]) -> Effect {
        let test: Option<PairedT> = paired_t(diffs);
        Effect {
            level,
            pairs: diffs.len() as u64,
            estimate: (!diffs.is_empty()).then(|| diffs.iter().sum::<f64>() / diffs.len() as f64),
            ci95: test.map(|t| t.ci95),
        }
    }

    /// Half the width of the 95% interval.
    pub fn halfwidth(&self) -> Option<f64> {
        self.ci95.map(|(lo, hi)| (hi - lo) / 2.0)
    }

    /// The interval excludes zero.
    pub fn resolved(&self) -> bool {
        self.ci95.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0)
    }
}

/// A combination of the other factors' levels and its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Stratum {
    /// The cell without the contrast factor.
    pub at: Cell,
    /// Distinct seeds its trials ran (or are running).
    pub seeds: BTreeSet<u64>,
    pub baseline: Level,
    pub effects: Vec<Effect>,
    pub next: Next,
}

/// Every stratum of `runs` (the trials of one sweep, or only those of some
/// strata) under `plan`, in the order of their cells. A stratum whose runs
/// show fewer than two levels of the contrast factor is left out: it has no
/// effect to judge.
pub fn review(plan: &SeedPlan, schema: &Schema, runs: &[Run]) -> Vec<Stratum> {
    // stratum -> contrast level -> seed -> outcome
    let mut strata: BTreeMap<Cell, BTreeMap<Level, BTreeMap<u64, Outcome>>> = BTreeMap::new();
    for r in runs {
        let Some(level) = r.cell.get(&plan.contrast) else { continue };
        let mut at = r.cell.clone();
        at.0.remove(&plan.contrast);
        strata.entry(at).or_default().entry(level.clone()).or_default().insert(r.seed, r.outcome);
    }
    strata
        .into_iter()
        .filter(|(_, levels)| levels.len() >= 2)
        .map(|(at, levels)| judge(plan, schema, at, levels))
        .collect()
}

fn judge(plan: &SeedPlan, schema: &Schema, at: Cell, levels: BTreeMap<Level, BTreeMap<u64, Outcome>>) -> Stratum {
    let mut order: Vec<&Level> = levels.keys().collect();
    order.sort_by_key(|l| schema.level_rank(&plan.contrast, l));
    let baseline = order[0].clone();
    let base = &levels[&baseline];
    let seeds: BTreeSet<u64> = levels.values().flat_map(|s| s.keys().copied()).collect();
    let effects: Vec<Effect> = order[1..]
        .iter()
        .map(|&level| {
            let diffs: Vec<f64> = levels[level]
                .iter()
                .filter_map(|(seed, o)| match (o, base.get(seed)) {
                    (Outcome::Value(a), Some(Outcome::Value(b))) => Some(a - b),
                    _ => None,
                })
                .collect();
            Effect::of(level.clone(), &diffs)
        })
        .collect();
    let pending = levels.values().flat_map(|s| s.values()).any(|o| *o == Outcome::Pending);
    // An effect with no pair after every seed finished (one side always
    // diverged or failed) is settled: more of the same would not help.
    let paired: Vec<&Effect> = effects.iter().filter(|e| e.pairs > 0).collect();
    let settled = |e: &&Effect| e.resolved() || e.halfwidth().is_some_and(|h| h <= plan.target_halfwidth);
    let next = if pending {
        Next::Waiting
    } else if paired.is_empty() {
        Next::Stopped(Stop::NoPairs)
    } else if paired.iter().all(|e| e.resolved()) {
        Next::Stopped(Stop::Resolved)
    } else if paired.iter().all(settled) {
        Next::Stopped(Stop::BelowTarget)
    } else if seeds.len() as u64 >= u64::from(plan.max_seeds) {
        Next::Stopped(Stop::MaxSeeds)
    } else {
        Next::SeedDue(next_seed(&seeds))
    };
    Stratum { at, seeds, baseline, effects, next }
}

/// The seed a stratum gets next: the smallest number it has not run (the
/// same for every stratum that ran the same seeds, so strata keep sharing
/// seeds and the report's blocked intervals still apply).
pub fn next_seed(seeds: &BTreeSet<u64>) -> u64 {
    (0..).find(|s| !seeds.contains(s)).expect("a finite set leaves a number unused")
}

/// The cells of `stratum` (one per level of the contrast factor): the
/// trials a new seed adds.
pub fn cells_of(stratum: &Cell, contrast: &str, levels: &[Level]) -> Vec<Cell> {
    levels
        .iter()
        .map(|l| {
            let mut c = stratum.clone();
            c.insert(contrast, l.clone());
            c
        })
        .collect()
}
