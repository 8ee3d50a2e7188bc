//! Statistics for reports: means, t-intervals, paired t-tests, Holm correction.
//!
//! Sweeps have few seeds per cell (often 3), so every interval uses Student's
//! t with the right degrees of freedom rather than the normal z = 1.96, which
//! for 3 seeds understates the half-width by more than half (t = 4.30).
//!
//! Functions return `None` where the statistic does not exist (one sample has
//! no spread, so no interval) instead of a NaN that would leak into tables.
//!
//! Non-finite inputs are refused the same way: a NaN or infinite sample has
//! no mean or spread, so [`Moments::from_samples`] returns `None` for it
//! (before, NaN went through `max(0)` and came out as "sd 0"). Callers that
//! must say which value was bad check first (as
//! [`crate::effects::analyze`] does, with an error naming the cell and seed).
//!
//! Scale: data anywhere in the finite range works. Samples are divided by a
//! power of two near their largest magnitude before squaring (exact, so the
//! results are bit-for-bit those of the unscaled formula wherever that one
//! does not overflow), and the Welch–Satterthwaite degrees of freedom are
//! computed from variances normalised by the largest one, so fourth powers
//! of tiny or huge standard errors neither underflow nor overflow.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The mean and spread of one group of samples (e.g. one cell's seeds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    /// Sample standard deviation (divisor n - 1); `None` when n = 1.
    pub sd: Option<f64>,
}

impl Moments {
    /// From the samples themselves; `None` when there are none.
    ///
    /// Uses the corrected two-pass algorithm (Chan, Golub & LeVeque 1983):
    /// the second term removes most of the rounding error left in the mean.
    ///
    /// `None` also when a sample is NaN or infinite: such a group has no
    /// summary (see the module docs).
    pub fn from_samples(xs: &[f64]) -> Option<Moments> {
        let n = xs.len();
        if n == 0 || xs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let scale = pow2_scale(xs.iter().fold(0.0f64, |m, x| m.max(x.abs())));
        let mean = xs.iter().map(|x| x / scale).sum::<f64>() / n as f64;
        let (dev, dev_sq) =
            xs.iter().map(|x| x / scale).fold((0.0, 0.0), |(s, s2), x| (s + (x - mean), s2 + (x - mean) * (x - mean)));
        let m2 = dev_sq - dev * dev / n as f64;
        let s = Moments::from_m2(n as u64, mean + dev / n as f64, m2)?;
        Some(Moments { n: s.n, mean: s.mean * scale, sd: s.sd.map(|sd| sd * scale) })
    }

    /// From the aggregates a SQL query returns: `COUNT(x)`, `SUM(x)` and
    /// `SUM(x * x)`.
    ///
    /// `SUM(x*x) - SUM(x)^2/n` cancels catastrophically when the spread is
    /// tiny next to the mean (accuracies of 0.91 ± 0.001 lose about 6 of 16
    /// digits). Where that matters, aggregate deviations from a value near
    /// the data instead and use [`Moments::from_shifted_sums`].
    pub fn from_sums(n: u64, sum: f64, sum_sq: f64) -> Option<Moments> {
        Moments::from_shifted_sums(n, 0.0, sum, sum_sq)
    }

    /// From `COUNT(x)`, `SUM(x - shift)` and `SUM((x - shift) * (x - shift))`
    /// for a `shift` close to the data (e.g. a cell's first value, or 0.5 for
    /// accuracies): the sums are then of small numbers and the cancellation
    /// in the variance is harmless.
    ///
    /// `None` when `n` is 0 or an aggregate is not finite (a NaN or infinite
    /// value went into it, or a square overflowed: values beyond about
    /// 1e154 need [`Moments::from_samples`]).
    pub fn from_shifted_sums(n: u64, shift: f64, sum: f64, sum_sq: f64) -> Option<Moments> {
        if n == 0 || !(shift.is_finite() && sum.is_finite() && sum_sq.is_finite()) {
            return None;
        }
        let nf = n as f64;
        let dev_mean = sum / nf;
        let m2 = sum_sq - sum * dev_mean;
        Moments::from_m2(n, shift + dev_mean, m2)
    }

    /// `m2` is the sum of squared deviations from the mean. Rounding can make
    /// it slightly negative for constant data; that is a spread of zero.
    /// `None` rather than a NaN or infinite mean or spread.
    fn from_m2(n: u64, mean: f64, m2: f64) -> Option<Moments> {
        if !(mean.is_finite() && m2.is_finite()) {
            return None;
        }
        let sd = (n > 1).then(|| (m2.max(0.0) / (n - 1) as f64).sqrt());
        Some(Moments { n, mean, sd })
    }

    /// Standard error of the mean; `None` when n = 1.
    pub fn se(&self) -> Option<f64> {
        self.sd.map(|sd| sd / (self.n as f64).sqrt())
    }
}

/// The power of two at or just below `m` (for `m` > 0 and finite; 1
/// otherwise), so that dividing by it is exact.
fn pow2_scale(m: f64) -> f64 {
    if !(m.is_finite() && m > 0.0) {
        return 1.0;
    }
    let biased = ((m.to_bits() >> 52) & 0x7ff) as i64; // 0 for subnormals
    let e = (biased - 1023).clamp(-1022, 1023);
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// The standard error and Welch–Satterthwaite degrees of freedom of a sum of
/// independent estimates, each given as `(its standard error, its df)`:
/// `se = sqrt(sum se_i^2)` and `df = se^4 / sum(se_i^4 / df_i)`.
///
/// Every `se_i` is divided by the largest before squaring (the df is a ratio
/// of homogeneous polynomials, so the scale cancels): with standard errors
/// near 1e-80 the fourth powers would underflow to 0 and give 0/0, near 1e80
/// overflow to inf/inf. When every `se_i` is 0 the df is 0/0; the pooled
/// `sum df_i` is used then. `None` when there are no terms or a term is not
/// finite.
pub fn welch_satterthwaite(terms: &[(f64, f64)]) -> Option<(f64, f64)> {
    if terms.is_empty() || terms.iter().any(|&(se, df)| !(se.is_finite() && se >= 0.0 && df > 0.0 && df.is_finite())) {
        return None;
    }
    let top = terms.iter().fold(0.0f64, |m, &(se, _)| m.max(se));
    if top == 0.0 {
        return Some((0.0, terms.iter().map(|&(_, df)| df).sum()));
    }
    let (var, den) = terms.iter().fold((0.0, 0.0), |(var, den), &(se, df)| {
        let v = (se / top) * (se / top);
        (var + v, den + v * v / df)
    });
    Some((top * f64::sqrt(var), var * var / den))
}

/// The `p` quantile of Student's t with `df` degrees of freedom (`df` may be
/// fractional, as Welch's is). `None` unless 0 < p < 1 and df > 0.
pub fn t_quantile(p: f64, df: f64) -> Option<f64> {
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    Some(student_t(df)?.inverse_cdf(p))
}

/// Two-sided p-value of a t statistic with `df` degrees of freedom (NaN when
/// `t` is NaN or `df` is not a positive finite number).
pub fn p_two_sided(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    match student_t(df) {
        // The survival function keeps precision for tiny p-values, where
        // 1 - cdf would round to 0.
        Some(dist) => (2.0 * dist.sf(t.abs())).min(1.0),
        None => f64::NAN,
    }
}

fn student_t(df: f64) -> Option<StudentsT> {
    if !(df > 0.0 && df.is_finite()) {
        return None;
    }
    StudentsT::new(0.0, 1.0, df).ok()
}

/// Half-width multiplier of a two-sided interval at `level` (e.g. 0.95).
fn critical(level: f64, df: f64) -> Option<f64> {
    if !(level > 0.0 && level < 1.0) {
        return None;
    }
    t_quantile(0.5 + level / 2.0, df)
}

/// The two-sided Student t confidence interval for the mean at `level`
/// (e.g. 0.95), as `(lo, hi)`. `None` when n = 1 (no spread to scale by),
/// the level is not strictly between 0 and 1, or a bound overflows.
pub fn t_interval(summary: &Moments, level: f64) -> Option<(f64, f64)> {
    let se = summary.se()?;
    let half = critical(level, (summary.n - 1) as f64)? * se;
    let (lo, hi) = (summary.mean - half, summary.mean + half);
    (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative closeness, for comparisons against reference constants.
    #[track_caller]
    fn close(actual: f64, expected: f64, rel: f64) {
        let err = (actual - expected).abs() / expected.abs().max(1e-300);
        assert!(err <= rel, "{actual} vs {expected}: relative error {err:e} > {rel:e}");
    }

    // Student t quantiles, from mpmath 1.4.1 at 40 digits (root of
    // 1 - betainc(ν/2, 1/2, 0, ν/(ν+t²), regularized)/2 = p; for ν = 1, 2
    // also the closed forms tan(π(p-½)) and (2p-1)/sqrt(2p(1-p)), which agree),
    // rounded to f64. scipy.stats 1.17.1 `t.ppf` agrees with each to 1e-15.
    // (The often-quoted 4.302652729911275 for ν = 2 is off by 1.6e-10.)
    const T_975_1: f64 = 12.706204736174705; // 12.70620473617470464602...
    const T_975_2: f64 = 4.302652729749464; // 4.30265272974946385232...
    const T_975_4: f64 = 2.776445105197794; // 2.77644510519779435780...
    const T_95_10: f64 = 1.812461122811676; // 1.81246112281167641362...
    const T_995_30: f64 = 2.749995653567225; // 2.74999565356722533240...
    const T_975_17_776: f64 = 2.1028213103802217; // 2.10282131038022168612...

    #[test]
    fn t_quantiles_match_reference_values() {
        close(t_quantile(0.975, 1.0).unwrap(), T_975_1, 1e-12);
        close(t_quantile(0.975, 2.0).unwrap(), T_975_2, 1e-12);
        close(t_quantile(0.975, 4.0).unwrap(), T_975_4, 1e-12);
        close(t_quantile(0.95, 10.0).unwrap(), T_95_10, 1e-12);
        close(t_quantile(0.995, 30.0).unwrap(), T_995_30, 1e-12);
        close(t_quantile(0.975, 17.776).unwrap(), T_975_17_776, 1e-12);
        close(-t_quantile(0.025, 4.0).unwrap(), T_975_4, 1e-12);
        assert_eq!(t_quantile(0.0, 4.0), None);
        assert_eq!(t_quantile(1.0, 4.0), None);
        assert_eq!(t_quantile(f64::NAN, 4.0), None);
        assert_eq!(t_quantile(0.5, 0.0), None);
    }

    // Samples and intervals: scipy.stats 1.17.1,
    // `t.interval(level, n-1, loc=mean, scale=sem)` and `np.std(ddof=1)`.
    const X: [f64; 3] = [0.61, 0.64, 0.58];
    const X_SD: f64 = 0.030000000000000027;
    const X_CI95: (f64, f64) = (0.53547586864749, 0.68452413135251);
    const Y: [f64; 5] = [0.912, 0.905, 0.921, 0.917, 0.899];
    const Y_MEAN: f64 = 0.9108;
    const Y_SD: f64 = 0.008899438184514804;
    const Y_CI95: (f64, f64) = (0.8997498880020481, 0.921850111997952);
    const Y_CI99: (f64, f64) = (0.892475933775039, 0.9291240662249611);

    // Student's sleep data (Cushny & Peebles; R's `sleep` data set): extra
    // hours of sleep for 10 patients under two drugs.
    const SLEEP_1: [f64; 10] = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
    const SLEEP_2: [f64; 10] = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];
    // scipy.stats 1.17.1 `ttest_ind(SLEEP_1, SLEEP_2, equal_var=False)`, its
    // `.df` and `.confidence_interval(0.95 / 0.90)`. They match, to the printed
    // digits, the output of R's `t.test(extra ~ group, data = sleep)` as
    // shown in R's documentation: t = -1.8608, df = 17.776, p = 0.07939.
    const WELCH_T: f64 = -1.8608134674868526;
    const WELCH_DF: f64 = 17.776473516178488;
    const WELCH_P: f64 = 0.0793941401873583;
    const WELCH_CI95: (f64, f64) = (-3.3654832307117104, 0.20548323071171137);
    const WELCH_CI90: (f64, f64) = (-3.053381497331607, -0.10661850266839323);
    // scipy.stats 1.17.1 `ttest_rel(SLEEP_1, SLEEP_2)` and its
    // `.confidence_interval(0.95)` (R's paired `t.test` on `sleep` prints
    // t = -4.0621, df = 9, p-value = 0.002833).
    // By hand: mean diff = -15.8/10 = -1.58, sd = 1.22999548..., t =
    // -1.58 / (1.22999548 / sqrt(10)).
    const PAIRED_T: f64 = -4.062127683382037;
    const PAIRED_P: f64 = 0.002832890197384273;
    const PAIRED_SD: f64 = 1.2299954832798732;
    const PAIRED_CI95: (f64, f64) = (-2.459885763276983, -0.7001142367230175);

    #[track_caller]
    fn close_pair(actual: (f64, f64), expected: (f64, f64), rel: f64) {
        close(actual.0, expected.0, rel);
        close(actual.1, expected.1, rel);
    }

    #[test]
    fn summaries_and_t_intervals() {
        let x = Moments::from_samples(&X).unwrap();
        assert_eq!(x.n, 3);
        close(x.mean, 0.61, 1e-15);
        close(x.sd.unwrap(), X_SD, 1e-12);
        close_pair(t_interval(&x, 0.95).unwrap(), X_CI95, 1e-12);

        let y = Moments::from_samples(&Y).unwrap();
        close(y.mean, Y_MEAN, 1e-15);
        close(y.sd.unwrap(), Y_SD, 1e-12);
        close_pair(t_interval(&y, 0.95).unwrap(), Y_CI95, 1e-12);
        close_pair(t_interval(&y, 0.99).unwrap(), Y_CI99, 1e-12);
        assert_eq!(t_interval(&y, 1.0), None);
        assert_eq!(t_interval(&y, 0.0), None);
    }

    #[test]
    fn one_sample_has_no_spread_and_none_has_no_summary() {
        let one = Moments::from_samples(&[0.5]).unwrap();
        assert_eq!(one, Moments { n: 1, mean: 0.5, sd: None });
        assert_eq!(t_interval(&one, 0.95), None);
        assert_eq!(Moments::from_samples(&[]), None);
        assert_eq!(Moments::from_sums(0, 0.0, 0.0), None);
        assert_eq!(Moments::from_sums(1, 0.5, 0.25).unwrap().sd, None);
        assert_eq!(paired_t(&[1.0]), None);
    }

    #[test]
    fn sql_sums_agree_with_samples() {
        let sum: f64 = Y.iter().sum();
        let sum_sq: f64 = Y.iter().map(|v| v * v).sum();
        let s = Moments::from_sums(5, sum, sum_sq).unwrap();
        close(s.mean, Y_MEAN, 1e-15);
        // Unshifted sums lose digits here (spread 0.009 on a mean of 0.91).
        close(s.sd.unwrap(), Y_SD, 1e-9);
        let shift = 0.9;
        let sum: f64 = Y.iter().map(|v| v - shift).sum();
        let sum_sq: f64 = Y.iter().map(|v| (v - shift) * (v - shift)).sum();
        let s = Moments::from_shifted_sums(5, shift, sum, sum_sq).unwrap();
        close(s.mean, Y_MEAN, 1e-15);
        close(s.sd.unwrap(), Y_SD, 1e-13);
    }

    #[test]
    fn large_offsets_need_the_shift_and_never_give_nan() {
        // 1e9 + {1, 2, 3}: mean 1e9 + 2, sd exactly 1.
        let xs = [1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0];
        let s = Moments::from_samples(&xs).unwrap();
        assert_eq!((s.mean, s.sd), (1e9 + 2.0, Some(1.0)));
        let s = Moments::from_shifted_sums(3, 1e9, 6.0, 14.0).unwrap();
        assert_eq!((s.mean, s.sd), (1e9 + 2.0, Some(1.0)));
        // Constant data: rounding may push the raw variance below zero.
        for v in [0.1, 0.7, 1e9 + 0.1] {
            let s = Moments::from_sums(3, 3.0 * v, 3.0 * v * v).unwrap();
            let sd = s.sd.unwrap();
            assert!(sd >= 0.0 && sd.is_finite(), "{v}: {sd}");
            assert_eq!(Moments::from_samples(&[v, v, v]).unwrap().sd, Some(0.0));
        }
    }

    #[test]
    fn welch_difference_matches_scipy_and_r() {
        let a = Moments::from_samples(&SLEEP_1).unwrap();
        let b = Moments::from_samples(&SLEEP_2).unwrap();
        let w = welch_diff(&a, &b, 0.95).unwrap();
        close(w.diff, -1.58, 1e-13);
        close(w.t, WELCH_T, 1e-12);
        close(w.df, WELCH_DF, 1e-12);
        close(w.p_two_sided, WELCH_P, 1e-10);
        close_pair(w.ci, WELCH_CI95, 1e-11);
        close_pair(welch_diff(&a, &b, 0.90).unwrap().ci, WELCH_CI90, 1e-11);
        // Swapping the groups flips the sign, nothing else.
        let r = welch_diff(&b, &a, 0.95).unwrap();
        close(r.t, -WELCH_T, 1e-12);
        close(r.p_two_sided, WELCH_P, 1e-10);
        let one = Moments::from_samples(&[1.0]).unwrap();
        assert_eq!(welch_diff(&a, &one, 0.95), None);
    }

    #[test]
    fn welch_df_exists_for_data_scaled_near_1e_plus_minus_80() {
        // Before: the variances (~1e-162 or 1e158) were squared again, the
        // df came out 0/0 or inf/inf = NaN and the interval was lost.
        for k in [1e-80, 1e80, 1e-85, 1e85, 1e-200, 1e200] {
            let a: Vec<f64> = SLEEP_1.iter().map(|x| x * k).collect();
            let b: Vec<f64> = SLEEP_2.iter().map(|x| x * k).collect();
            let (a, b) = (Moments::from_samples(&a).unwrap(), Moments::from_samples(&b).unwrap());
            let w = welch_diff(&a, &b, 0.95).unwrap();
            close(w.df, WELCH_DF, 1e-12);
            close(w.t, WELCH_T, 1e-12);
            close(w.p_two_sided, WELCH_P, 1e-10);
            close_pair((w.ci.0 / k, w.ci.1 / k), WELCH_CI95, 1e-11);
        }
    }

    #[test]
    fn summaries_are_exact_under_power_of_two_scaling() {
        // The samples are scaled by a power of two internally, so data whose
        // squares would overflow (or underflow) gets the unscaled answer.
        let base = Moments::from_samples(&Y).unwrap();
        for e in [-900, -300, 300, 900] {
            let k = 2f64.powi(e);
            let ys: Vec<f64> = Y.iter().map(|y| y * k).collect();
            let s = Moments::from_samples(&ys).unwrap();
            assert_eq!((s.mean / k, s.sd.unwrap() / k), (base.mean, base.sd.unwrap()), "2^{e}");
        }
    }

    #[test]
    fn welch_satterthwaite_edge_cases() {
        assert_eq!(welch_satterthwaite(&[]), None);
        assert_eq!(welch_satterthwaite(&[(f64::NAN, 2.0)]), None);
        assert_eq!(welch_satterthwaite(&[(1.0, f64::INFINITY)]), None);
        assert_eq!(welch_satterthwaite(&[(0.0, 2.0), (0.0, 3.0)]), Some((0.0, 5.0)));
        // One term: its own df, whatever its size.
        for se in [1e-300, 1.0, 1e300] {
            assert_eq!(welch_satterthwaite(&[(se, 4.0)]), Some((se, 4.0)));
        }
    }

    #[test]
    fn welch_with_constant_groups() {
        let a = Moments::from_samples(&[0.1, 0.1, 0.1]).unwrap();
        let b = Moments::from_samples(&[0.3, 0.3]).unwrap();
        let w = welch_diff(&a, &b, 0.95).unwrap();
        assert_eq!((w.se, w.df, w.ci), (0.0, 3.0, (w.diff, w.diff)));
        assert_eq!((w.t, w.p_two_sided), (f64::NEG_INFINITY, 0.0));
        let same = welch_diff(&a, &a, 0.95).unwrap();
        assert_eq!((same.t, same.p_two_sided), (0.0, 1.0));
    }

    #[test]
    fn paired_t_matches_scipy_and_r() {
        let diffs: Vec<f64> = SLEEP_1.iter().zip(SLEEP_2).map(|(a, b)| a - b).collect();
        let p = paired_t(&diffs).unwrap();
        assert_eq!((p.n, p.df), (10, 9.0));
        close(p.mean_diff, -1.58, 1e-13);
        close(p.sd, PAIRED_SD, 1e-12);
        close(p.t, PAIRED_T, 1e-12);
        close(p.p_two_sided, PAIRED_P, 1e-10);
        close_pair(p.ci95, PAIRED_CI95, 1e-12);
    }

    #[test]
    fn paired_t_with_constant_differences() {
        let p = paired_t(&[0.02, 0.02, 0.02]).unwrap();
        assert_eq!((p.t, p.p_two_sided, p.ci95), (f64::INFINITY, 0.0, (0.02, 0.02)));
        let p = paired_t(&[0.0, 0.0]).unwrap();
        assert_eq!((p.t, p.p_two_sided), (0.0, 1.0));
    }

    #[test]
    fn holm_step_down() {
        // By hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02,
        // 0.03, 0.06, 0.04; the running maximum lifts the last to 0.06.
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        let expected = [0.03, 0.06, 0.06, 0.02];
        for (a, e) in adj.iter().zip(expected) {
            close(*a, e, 1e-15);
        }
        // By hand: 0.01*5, 0.02*4, 0.03*3, 0.04*2, 0.05*1 = 0.05, 0.08,
        // 0.09, 0.08, 0.05, then the running maximum.
        let adj = holm(&[0.01, 0.02, 0.03, 0.04, 0.05]);
        for (a, e) in adj.iter().zip([0.05, 0.08, 0.09, 0.09, 0.09]) {
            close(*a, e, 1e-15);
        }
        // Capped at 1.
        assert_eq!(holm(&[0.5, 0.6, 0.9]), vec![1.0, 1.0, 1.0]);
        assert_eq!(holm(&[0.2]), vec![0.2]);
        assert!(holm(&[]).is_empty());
        // NaN stays NaN and does not count towards m.
        let adj = holm(&[0.01, f64::NAN, 0.04]);
        assert!(adj[1].is_nan());
        close(adj[0], 0.02, 1e-15);
        close(adj[2], 0.04, 1e-15);
    }

    proptest::proptest! {
        #[test]
        fn holm_is_monotone_and_bounded(ps in proptest::collection::vec(0.0f64..=1.0, 0..20)) {
            let adj = holm(&ps);
            proptest::prop_assert_eq!(adj.len(), ps.len());
            for i in 0..ps.len() {
                proptest::prop_assert!(adj[i] >= ps[i] && adj[i] <= 1.0);
                for j in 0..ps.len() {
                    if ps[i] < ps[j] {
                        proptest::prop_assert!(adj[i] <= adj[j]);
                    }
                }
            }
        }

        #[test]
        fn shifted_sums_agree_with_samples(
            xs in proptest::collection::vec(-1e3f64..1e3, 2..30),
        ) {
            let direct = Moments::from_samples(&xs).unwrap();
            let shift = xs[0];
            let sum: f64 = xs.iter().map(|x| x - shift).sum();
            let sum_sq: f64 = xs.iter().map(|x| (x - shift) * (x - shift)).sum();
            let agg = Moments::from_shifted_sums(xs.len() as u64, shift, sum, sum_sq).unwrap();
            let scale = xs.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            proptest::prop_assert!((direct.mean - agg.mean).abs() <= 1e-12 * scale);
            proptest::prop_assert!((direct.sd.unwrap() - agg.sd.unwrap()).abs() <= 1e-6 * scale);
        }
    }
}
