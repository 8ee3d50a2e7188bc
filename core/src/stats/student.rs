//! Student's t distribution: quantiles, two-sided p-values, interval
//! multipliers, and the Welch–Satterthwaite degrees of freedom of a sum of
//! independent estimates.

use statrs::distribution::{ContinuousCDF, StudentsT};

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
pub(super) fn critical(level: f64, df: f64) -> Option<f64> {
    if !(level > 0.0 && level < 1.0) {
        return None;
    }
    t_quantile(0.5 + level / 2.0, df)
}
