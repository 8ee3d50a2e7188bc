//! Factorial effects for ablation reports: per-cell statistics, main effects,
//! two-way (simple) effects, and paired comparisons on shared seeds.
//!
//! # How means and intervals are computed
//!
//! A sweep is a full factorial grid of *cells* (one combination of factor
//! levels), each run with several seeds. The unit of analysis is the cell:
//!
//! - **Cell statistics**: mean, sample sd and 95% Student-t interval over the
//!   cell's observations (its finished seeds).
//! - **Marginal means are means of cell means**, each cell weighted equally
//!   (the "unweighted" or least-squares marginal mean of a factorial design),
//!   not the mean over all trials at that level. With unbalanced seed counts
//!   a trial-weighted mean would let the cells with more seeds dominate and
//!   would mix the factor's effect with the other factors' effects.
//! - **Effects are contrasts of cell means over matched strata.** The effect
//!   of level `a` of factor F against level `b` is the mean, over every
//!   combination `s` of the other factors (a *stratum*) where both cells
//!   `(a, s)` and `(b, s)` have observations, of `mean(a, s) - mean(b, s)`.
//!   Strata where one side has no finished run are left out (and counted in
//!   [`Comparison::strata_unmatched`]), so a missing cell never makes one
//!   level look better only because it was averaged over easier conditions.
//! - **Blocked intervals (the default where they apply).** Every cell of a
//!   sweep runs the same seed numbers, and a seed fixes the initialisation
//!   and the data order, so the cells' results are correlated through the
//!   seed: treating cell means as independent makes a mean over cells look
//!   surer than it is (about 84% actual coverage for a nominal 95% when the
//!   seed effect is as large as the noise) and an effect look less sure. So
//!   when every cell a contrast uses ran exactly the same seeds (at least
//!   two), the contrast is computed within each seed, `d_s = sum_i w_i *
//!   y_{i,s}`, and its interval is Student's t over the seeds (`n - 1` df):
//!   seed as a block, the paired t-test generalised to any contrast
//!   ([`blocked_contrast`]; [`Method::Blocked`]). Otherwise, or with
//!   [`Intervals::Independent`], the independent interval below
//!   ([`Method::Independent`]); each [`Contrast`] says which it is.
//! - **Independent intervals of contrasts** treat the cell means as independent with
//!   their own variances (no pooled variance: a deep network without skips
//!   varies far more across seeds than a shallow one). For a contrast
//!   `sum_i w_i * mean_i` the standard error is `sqrt(sum_i w_i^2 s_i^2 / n_i)`
//!   and the degrees of freedom are Welch–Satterthwaite's,
//!   `se^4 / sum_i (w_i^2 s_i^2 / n_i)^2 / (n_i - 1)`; the interval uses
//!   Student's t with those df. For two cells this is exactly Welch's
//!   two-sample interval ([`crate::stats::welch_diff`]). A contrast that
//!   involves a cell with one observation has an estimate but no interval.
//!   The seeds of different cells are treated as independent samples, which
//!   is why it is used only where the blocked interval cannot be.
//! - **Simple effects** ("skip at each depth") are the same contrast with the
//!   second factor held at one level.
//! - **Paired comparisons**: within each cell of the other factors, the
//!   per-seed differences between two levels on the seeds both ran, tested
//!   with a paired t-test; the p-values are Holm-adjusted across all paired
//!   comparisons reported. Main-effect p-values are Holm-adjusted across the
//!   main effects, separately.
//!
//! - **Non-finite values are refused**: [`analyze`] returns
//!   [`EffectsError::NonFinite`] naming the cell and seed of a NaN or
//!   infinite value rather than letting it turn a cell's spread and every
//!   effect it enters into NaN. A diverged trial has no final value and is
//!   left out by the caller (and counted as diverged).
//! - **Any scale**: values near 1e±80 (or 1e±300) give the same df, t and p
//!   as the unscaled data (see [`crate::stats`]).
//!
//! Everything here is pure: the caller hands in observations (typically one
//! per succeeded trial) and gets plain data back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::stats::{holm, p_two_sided, paired_t, t_interval, t_quantile, welch_satterthwaite, Moments, PairedT};

/// Confidence level of every interval in an [`Analysis`].
pub const LEVEL: f64 = 0.95;

/// A factor of the design and its levels, in display order. The first level
/// is the default baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factor {
    pub name: String,
    pub levels: Vec<String>,
}

impl Factor {
    pub fn new(name: impl Into<String>, levels: impl IntoIterator<Item = impl Into<String>>) -> Factor {
        Factor { name: name.into(), levels: levels.into_iter().map(Into::into).collect() }
    }
}

/// One value of one trial: its cell (a level of every factor, in the order of
/// the factors) and seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub levels: Vec<String>,
    pub seed: u64,
    pub value: f64,
}

/// Which intervals contrasts get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Intervals {
    /// Blocked on seed where every cell of the contrast ran the same seeds
    /// (two or more), independent elsewhere.
    #[default]
    Auto,
    /// Always independent (Welch–Satterthwaite over cell means): what
    /// reports showed before blocked intervals existed.
    Independent,
}

/// What to compute, beyond the per-cell statistics and main effects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Blocked or independent intervals.
    pub intervals: Intervals,
    /// Baseline level per factor name; factors not named use their first level.
    pub baselines: BTreeMap<String, String>,
    /// Factors whose simple effects at each level of every other factor, and
    /// whose paired comparisons, are reported (e.g. `["skip"]`).
    pub focus: Vec<String>,
    /// Factors to group the table by (means of cell means over the others).
    /// Empty: no grouping.
    pub by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EffectsError {
    #[error("unknown factor {0:?}")]
    UnknownFactor(String),
    #[error("factor {factor:?} has no level {level:?} (levels: {levels})")]
    UnknownLevel { factor: String, level: String, levels: String },
    #[error("an observation has {got} levels for {expected} factors")]
    Shape { got: usize, expected: usize },
    /// A NaN or infinite value: it has no place in a mean, and would turn
    /// every statistic of its cell and of the effects it enters into NaN.
    #[error(
        "the value of seed {seed} in cell {levels} is {value}, not a finite number; \
         leave the trial out (a diverged trial has no final value)"
    )]
    NonFinite { levels: String, seed: u64, value: f64 },
}

/// How a [`Contrast`]'s interval was computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Cell means as independent samples (Welch–Satterthwaite df).
    #[default]
    Independent,
    /// Within each seed, over the seeds every cell ran (`n - 1` df).
    Blocked,
}

/// A linear contrast of cell means, `sum_i w_i * mean_i`, with its
/// interval (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Contrast {
    pub estimate: f64,
    /// Which interval (and p-value) this is.
    #[serde(default)]
    pub method: Method,
    /// `None` when a cell in the contrast has a single observation.
    pub se: Option<f64>,
    pub df: Option<f64>,
    pub ci95_lo: Option<f64>,
    pub ci95_hi: Option<f64>,
    /// Two-sided p-value for "the contrast is 0".
    pub p_value: Option<f64>,
}

/// The contrast `sum w_i * mean_i` of independent cell summaries at
/// confidence `level`. `None` when there are no terms.
///
/// When every cell is constant the standard error is 0 and the
/// Welch–Satterthwaite df is 0/0; the pooled df `sum (n_i - 1)` is used then,
/// as [`crate::stats::welch_diff`] does. The df is computed from normalised
/// variances ([`welch_satterthwaite`]), so it exists at any data scale.
pub fn contrast(terms: &[(f64, Moments)], level: f64) -> Option<Contrast> {
    if terms.is_empty() {
        return None;
    }
    let estimate: f64 = terms.iter().map(|(w, s)| w * s.mean).sum();
    let parts: Option<Vec<(f64, f64)>> = terms
        .iter()
        .filter(|(w, _)| *w != 0.0)
        .map(|(w, s)| s.sd.map(|sd| (w.abs() * sd / (s.n as f64).sqrt(), (s.n - 1) as f64)))
        .collect();
    let Some((se, df)) = parts.and_then(|p| welch_satterthwaite(&p)) else {
        return Some(Contrast {
            estimate,
            method: Method::Independent,
            se: None,
            df: None,
            ci95_lo: None,
            ci95_hi: None,
            p_value: None,
        });
    };
    Some(with_interval(estimate, Method::Independent, se, df, level))
}

/// `estimate` with its t-interval and two-sided p-value at `level`.
fn with_interval(estimate: f64, method: Method, se: f64, df: f64, level: f64) -> Contrast {
    let half = t_quantile(0.5 + level / 2.0, df).map(|q| q * se).filter(|h| h.is_finite());
    let t = if estimate == 0.0 && se == 0.0 { 0.0 } else { estimate / se };
    let p = p_two_sided(t, df);
    Contrast {
        estimate,
        method,
        se: Some(se),
        df: Some(df),
        ci95_lo: half.map(|h| estimate - h),
        ci95_hi: half.map(|h| estimate + h),
        p_value: (!p.is_nan()).then_some(p),
    }
}

/// The contrast `sum w_i * y_i` with seed as a block: computed within each
/// seed (`d_s = sum_i w_i * y_{i,s}`), its interval Student's t over the
/// seeds. `None` unless every cell (seed -> value) ran exactly the same
/// seeds, at least two (then the estimate is `sum w_i * mean_i`, as for the
/// independent contrast).
pub fn blocked_contrast(terms: &[(f64, &BTreeMap<u64, f64>)], level: f64) -> Option<Contrast> {
    let (_, first) = terms.first()?;
    if first.len() < 2 || terms.iter().any(|(_, c)| c.len() != first.len() || !c.keys().eq(first.keys())) {
        return None;
    }
    let per_seed: Vec<f64> = first.keys().map(|s| terms.iter().map(|(w, c)| w * c[s]).sum()).collect();
    let m = Moments::from_samples(&per_seed)?;
    let se = m.sd? / (m.n as f64).sqrt();
    Some(with_interval(m.mean, Method::Blocked, se, (m.n - 1) as f64, level))
}

/// Statistics of one cell over its observations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellStat {
    /// One level per factor, in factor order.
    pub levels: Vec<String>,
    pub n: u64,
    pub mean: f64,
    pub sd: Option<f64>,
    pub ci95_lo: Option<f64>,
    pub ci95_hi: Option<f64>,
}

/// A comparison of one level of a factor against its baseline, over matched
/// strata of the other factors (those in `at` held fixed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub factor: String,
    pub level: String,
    pub baseline: String,
    /// Factors held at one level (empty for a main effect).
    pub at: BTreeMap<String, String>,
    /// Mean of the cell means at `level` over the matched strata.
    pub level_mean: Option<f64>,
    /// Mean of the cell means at `baseline` over the matched strata.
    pub baseline_mean: Option<f64>,
    /// `level_mean - baseline_mean`, with its interval; `None` when no
    /// stratum has runs at both levels.
    pub effect: Option<Contrast>,
    /// Holm-adjusted p-value (main effects: across all main effects).
    pub p_holm: Option<f64>,
    /// The effect over the pooled within-cell sd of the cells it compares
    /// (Cohen's d: a size comparable across metrics); `None` without an
    /// effect or a spread.
    pub standardized: Option<f64>,
    /// Strata (combinations of the other free factors) with runs at both levels.
    pub strata_used: usize,
    /// Strata with runs at only one of the two levels (left out).
    pub strata_unmatched: usize,
}

/// The paired comparison of a level against the baseline within one cell of
/// the other factors, on the seeds both ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    pub factor: String,
    pub level: String,
    pub baseline: String,
    /// The other factors' levels (the cell).
    pub at: BTreeMap<String, String>,
    /// Seeds finished at both levels.
    pub shared_seeds: Vec<u64>,
    /// Paired t-test on `value(level, seed) - value(baseline, seed)`; `None`
    /// for fewer than two shared seeds.
    pub test: Option<PairedT>,
    /// Holm-adjusted across every paired comparison with a test.
    pub p_holm: Option<f64>,
    /// The mean difference over the pooled within-cell sd of the two cells
    /// (Cohen's d, as for [`Comparison::standardized`]).
    pub standardized: Option<f64>,
}

/// A row of the grouped view: the mean of the cell means of one combination
/// of the `by` factors, over the other factors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub levels: BTreeMap<String, String>,
    /// Cells with observations in the group.
    pub cells: usize,
    /// Observations (trials) in those cells.
    pub n: u64,
    /// Mean of cell means with its interval (`estimate` is the mean).
    pub mean: Option<Contrast>,
}

/// Everything [`analyze`] computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub factors: Vec<Factor>,
    pub baselines: BTreeMap<String, String>,
    /// Cells with at least one observation, in factor-level order.
    pub cells: Vec<CellStat>,
    /// Every non-baseline level of every factor with two or more levels.
    pub main_effects: Vec<Comparison>,
    /// Focus factors' effects at each level of each other factor.
    pub simple_effects: Vec<Comparison>,
    pub paired: Vec<Paired>,
    pub groups: Vec<Group>,
}

type Key = Vec<usize>;

struct Data<'a> {
    factors: &'a [Factor],
    intervals: Intervals,
    /// cell -> seed -> value (a repeated seed keeps its last value).
    cells: BTreeMap<Key, BTreeMap<u64, f64>>,
    summaries: BTreeMap<Key, Moments>,
}

fn factor_index(factors: &[Factor], name: &str) -> Result<usize, EffectsError> {
    factors.iter().position(|f| f.name == name).ok_or_else(|| EffectsError::UnknownFactor(name.to_owned()))
}

fn level_index(f: &Factor, level: &str) -> Result<usize, EffectsError> {
    f.levels.iter().position(|l| l == level).ok_or_else(|| EffectsError::UnknownLevel {
        factor: f.name.clone(),
        level: level.to_owned(),
        levels: f.levels.join(", "),
    })
}

impl Data<'_> {
    /// `sum w_i * mean_i` over the cells `keys` (each with observations):
    /// blocked where it can be and [`Intervals::Auto`] allows, else
    /// independent.
    fn contrast_of(&self, terms: &[(f64, &Key)]) -> Option<Contrast> {
        let blocked = match self.intervals {
            Intervals::Auto => {
                let cells: Option<Vec<(f64, &BTreeMap<u64, f64>)>> =
                    terms.iter().map(|(w, k)| self.cells.get(*k).map(|c| (*w, c))).collect();
                cells.and_then(|c| blocked_contrast(&c, LEVEL))
            }
            Intervals::Independent => None,
        };
        blocked.or_else(|| {
            let moments: Vec<(f64, Moments)> =
                terms.iter().filter_map(|(w, k)| self.summaries.get(*k).map(|s| (*w, *s))).collect();
            contrast(&moments, LEVEL)
        })
    }

    /// Every cell key with the factors in `fixed` at the given levels.
    fn strata(&self, free: &[usize], fixed: &[(usize, usize)]) -> Vec<Key> {
        let mut out = vec![vec![usize::MAX; self.factors.len()]];
        for &(f, l) in fixed {
            out[0][f] = l;
        }
        for &f in free {
            out = out
                .into_iter()
                .flat_map(|k| {
                    (0..self.factors[f].levels.len()).map(move |l| {
                        let mut k = k.clone();
                        k[f] = l;
                        k
                    })
                })
                .collect();
        }
        out
    }

    fn compare(&self, f: usize, level: usize, baseline: usize, at: &[(usize, usize)]) -> Comparison {
        let free: Vec<usize> =
            (0..self.factors.len()).filter(|&g| g != f && !at.iter().any(|&(a, _)| a == g)).collect();
        let (mut used, mut keys, mut unmatched) = (Vec::new(), Vec::new(), 0);
        for mut k in self.strata(&free, at) {
            k[f] = level;
            let (a, ka) = (self.summaries.get(&k).copied(), k.clone());
            k[f] = baseline;
            let b = self.summaries.get(&k).copied();
            match (a, b) {
                (Some(a), Some(b)) => {
                    used.push((a, b));
                    keys.push((ka, k));
                }
                (None, None) => {}
                _ => unmatched += 1,
            }
        }
        let n = used.len() as f64;
        let terms: Vec<(f64, &Key)> = keys.iter().flat_map(|(a, b)| [(1.0 / n, a), (-1.0 / n, b)]).collect();
        let effect = self.contrast_of(&terms);
        let mean = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        Comparison {
            factor: self.factors[f].name.clone(),
            level: self.factors[f].levels[level].clone(),
            baseline: self.factors[f].levels[baseline].clone(),
            at: at.iter().map(|&(g, l)| (self.factors[g].name.clone(), self.factors[g].levels[l].clone())).collect(),
            level_mean: mean(used.iter().map(|(a, _)| a.mean).collect()),
            baseline_mean: mean(used.iter().map(|(_, b)| b.mean).collect()),
            standardized: effect.and_then(|e| standardized(e.estimate, used.iter().flat_map(|(a, b)| [a, b]))),
            effect,
            p_holm: None,
            strata_used: used.len(),
            strata_unmatched: unmatched,
        }
    }
}

/// `difference` over the pooled sd of `cells` (`sqrt(sum (n_i - 1) s_i^2 /
/// sum (n_i - 1))` over the cells with a spread): Cohen's d. `None` when
/// no cell has a spread, or it is 0.
fn standardized<'a>(difference: f64, cells: impl Iterator<Item = &'a Moments>) -> Option<f64> {
    let (ss, df) = cells
        .filter_map(|m| m.sd.map(|sd| ((m.n - 1) as f64, sd)))
        .fold((0.0, 0.0), |(ss, df), (d, sd)| (ss + d * sd * sd, df + d));
    let pooled = (ss / df).sqrt();
    (df > 0.0 && pooled > 0.0 && pooled.is_finite()).then(|| difference / pooled)
}

/// Cell statistics, main effects, simple effects of the focus factors,
/// paired comparisons and the grouped view; see the module docs for how.
pub fn analyze(factors: &[Factor], obs: &[Observation], opts: &Options) -> Result<Analysis, EffectsError> {
    let mut cells: BTreeMap<Key, BTreeMap<u64, f64>> = BTreeMap::new();
    for o in obs {
        if o.levels.len() != factors.len() {
            return Err(EffectsError::Shape { got: o.levels.len(), expected: factors.len() });
        }
        let key = factors.iter().zip(&o.levels).map(|(f, l)| level_index(f, l)).collect::<Result<Key, _>>()?;
        if !o.value.is_finite() {
            return Err(EffectsError::NonFinite {
                levels: factors
                    .iter()
                    .zip(&o.levels)
                    .map(|(f, l)| format!("{}={}", f.name, l))
                    .collect::<Vec<_>>()
                    .join(" "),
                seed: o.seed,
                value: o.value,
            });
        }
        cells.entry(key).or_default().insert(o.seed, o.value);
    }
    let summaries: BTreeMap<Key, Moments> = cells
        .iter()
        .filter_map(|(k, v)| Moments::from_samples(&v.values().copied().collect::<Vec<_>>()).map(|s| (k.clone(), s)))
        .collect();
    let data = Data { factors, intervals: opts.intervals, cells, summaries };

    let mut baselines = vec![0usize; factors.len()];
    for (name, level) in &opts.baselines {
        let f = factor_index(factors, name)?;
        baselines[f] = level_index(&factors[f], level)?;
    }
    let focus = opts.focus.iter().map(|n| factor_index(factors, n)).collect::<Result<Vec<_>, _>>()?;
    let by = opts.by.iter().map(|n| factor_index(factors, n)).collect::<Result<Vec<_>, _>>()?;
    let varying: Vec<usize> = (0..factors.len()).filter(|&f| factors[f].levels.len() > 1).collect();

    let cell_stats = data
        .summaries
        .iter()
        .map(|(k, s)| {
            let ci = t_interval(s, LEVEL);
            CellStat {
                levels: k.iter().zip(factors).map(|(&l, f)| f.levels[l].clone()).collect(),
                n: s.n,
                mean: s.mean,
                sd: s.sd,
                ci95_lo: ci.map(|c| c.0),
                ci95_hi: ci.map(|c| c.1),
            }
        })
        .collect();

    let mut main_effects: Vec<Comparison> = Vec::new();
    for &f in &varying {
        for l in (0..factors[f].levels.len()).filter(|&l| l != baselines[f]) {
            main_effects.push(data.compare(f, l, baselines[f], &[]));
        }
    }
    set_holm(main_effects.iter_mut().map(|c| (c.effect.and_then(|e| e.p_value), &mut c.p_holm)));

    let mut simple_effects = Vec::new();
    let mut paired = Vec::new();
    for &f in focus.iter().filter(|f| varying.contains(f)) {
        for l in (0..factors[f].levels.len()).filter(|&l| l != baselines[f]) {
            for &g in varying.iter().filter(|&&g| g != f) {
                for gl in 0..factors[g].levels.len() {
                    simple_effects.push(data.compare(f, l, baselines[f], &[(g, gl)]));
                }
            }
            let others: Vec<usize> = (0..factors.len()).filter(|&g| g != f).collect();
            for mut k in data.strata(&others, &[]) {
                k[f] = l;
                let (a, a_spread) = (data.cells.get(&k), data.summaries.get(&k));
                k[f] = baselines[f];
                let (b, b_spread) = (data.cells.get(&k), data.summaries.get(&k));
                let (Some(a), Some(b)) = (a, b) else { continue };
                let shared: Vec<u64> = a.keys().filter(|s| b.contains_key(s)).copied().collect();
                let diffs: Vec<f64> = shared.iter().map(|s| a[s] - b[s]).collect();
                let test = paired_t(&diffs);
                let spread = [a_spread, b_spread];
                paired.push(Paired {
                    standardized: test.and_then(|t| standardized(t.mean_diff, spread.into_iter().flatten())),
                    factor: factors[f].name.clone(),
                    level: factors[f].levels[l].clone(),
                    baseline: factors[f].levels[baselines[f]].clone(),
                    at: others.iter().map(|&g| (factors[g].name.clone(), factors[g].levels[k[g]].clone())).collect(),
                    shared_seeds: shared,
                    test,
                    p_holm: None,
                });
            }
        }
    }
    set_holm(paired.iter_mut().map(|p| (p.test.map(|t| t.p_two_sided), &mut p.p_holm)));

    let mut groups = Vec::new();
    if !by.is_empty() {
        let rest: Vec<usize> = (0..factors.len()).filter(|g| !by.contains(g)).collect();
        for fixed in data.strata(&by, &[]) {
            let members: Vec<Key> = data
                .strata(&rest, &by.iter().map(|&g| (g, fixed[g])).collect::<Vec<_>>())
                .into_iter()
                .filter(|k| data.summaries.contains_key(k))
                .collect();
            if members.is_empty() {
                continue;
            }
            let w = 1.0 / members.len() as f64;
            let terms: Vec<(f64, &Key)> = members.iter().map(|k| (w, k)).collect();
            groups.push(Group {
                levels: by.iter().map(|&g| (factors[g].name.clone(), factors[g].levels[fixed[g]].clone())).collect(),
                cells: members.len(),
                n: members.iter().map(|k| data.summaries[k].n).sum(),
                mean: data.contrast_of(&terms),
            });
        }
    }

    Ok(Analysis {
        factors: factors.to_vec(),
        baselines: factors.iter().zip(&baselines).map(|(f, &b)| (f.name.clone(), f.levels[b].clone())).collect(),
        cells: cell_stats,
        main_effects,
        simple_effects,
        paired,
        groups,
    })
}

/// Holm-adjusts the given p-values (entries without one do not count towards
/// the number of comparisons) and writes the results back.
fn set_holm<'a>(items: impl Iterator<Item = (Option<f64>, &'a mut Option<f64>)>) {
    let (ps, slots): (Vec<f64>, Vec<&mut Option<f64>>) = items.map(|(p, slot)| (p.unwrap_or(f64::NAN), slot)).unzip();
    for (adj, slot) in holm(&ps).into_iter().zip(slots) {
        *slot = (!adj.is_nan()).then_some(adj);
    }
}

/// The distinct values, in their natural order, as level names.
pub fn levels_sorted<T: Ord + ToString>(values: impl IntoIterator<Item = T>) -> Vec<String> {
    values.into_iter().collect::<BTreeSet<T>>().into_iter().map(|v| v.to_string()).collect()
}
