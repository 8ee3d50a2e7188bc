//! Comparisons: Welch's difference of two independent groups, the paired
//! t-test, and Holm's correction for multiple comparisons.

use serde::{Deserialize, Serialize};

use super::moments::{t_interval, Moments};
use super::student::{critical, p_two_sided, welch_satterthwaite};

/// The difference of two independent means, `a.mean - b.mean`, with Welch's
/// unequal-variance standard error and Welch–Satterthwaite degrees of
/// freedom: the comparison behind a main effect (one factor level's marginal
/// mean against another's, or against a baseline level).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WelchDiff {
    pub diff: f64,
    pub se: f64,
    pub df: f64,
    pub t: f64,
    pub p_two_sided: f64,
    /// The interval at the requested level.
    pub ci: (f64, f64),
}

/// Welch's comparison of two groups at confidence `level`. `None` when
/// either group has fewer than 2 samples or the level is out of range.
///
/// When both groups are constant the standard error is 0 and the
/// Welch–Satterthwaite df is 0/0; the pooled df `n_a + n_b - 2` is used
/// then, the interval collapses to the difference, and `t` is ±inf (p = 0)
/// or, for equal constants, 0 (p = 1).
pub fn welch_diff(a: &Moments, b: &Moments, level: f64) -> Option<WelchDiff> {
    let (sa, sb) = (a.sd?, b.sd?);
    let (na, nb) = (a.n as f64, b.n as f64);
    let (se, df) = welch_satterthwaite(&[(sa / na.sqrt(), na - 1.0), (sb / nb.sqrt(), nb - 1.0)])?;
    let diff = a.mean - b.mean;
    let half = critical(level, df)? * se;
    let t = ratio(diff, se);
    Some(WelchDiff { diff, se, df, t, p_two_sided: p_two_sided(t, df), ci: (diff - half, diff + half) })
}

/// `num / den`, with 0/0 taken as 0: no difference and no noise is no
/// evidence of a difference.
fn ratio(num: f64, den: f64) -> f64 {
    if num == 0.0 && den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// A paired t-test on per-seed differences (e.g. skip on minus skip off
/// for the same seed and cell).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedT {
    pub n: u64,
    pub mean_diff: f64,
    /// Sample sd of the differences.
    pub sd: f64,
    pub t: f64,
    pub df: f64,
    pub p_two_sided: f64,
    /// 95% interval for the mean difference.
    pub ci95: (f64, f64),
}

/// Paired t-test of `diffs` against a mean difference of 0. `None` for
/// fewer than 2 pairs. Constant differences give t = ±inf (p = 0), or t = 0
/// (p = 1) when they are all zero.
pub fn paired_t(diffs: &[f64]) -> Option<PairedT> {
    let s = Moments::from_samples(diffs)?;
    let sd = s.sd?;
    let se = s.se()?;
    let df = (s.n - 1) as f64;
    let t = ratio(s.mean, se);
    let ci95 = t_interval(&s, 0.95)?;
    Some(PairedT { n: s.n, mean_diff: s.mean, sd, t, df, p_two_sided: p_two_sided(t, df), ci95 })
}

/// Holm's step-down adjustment of p-values for multiple comparisons, in the
/// input order.
///
/// The k-th smallest of m p-values is multiplied by m - k + 1; a running
/// maximum keeps the adjusted values in the same order as the raw ones, and
/// they are capped at 1. As in R's `p.adjust`, NaN entries stay NaN and do
/// not count towards m.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len()).filter(|&i| !p_values[i].is_nan()).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        running = running.max((m - k) as f64 * p_values[i]).min(1.0);
        adjusted[i] = running;
    }
    adjusted
}
