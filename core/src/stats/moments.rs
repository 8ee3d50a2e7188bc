//! One group's mean and spread ([`Moments`]), from its samples or from SQL
//! aggregates, and the Student t interval for its mean.

use serde::{Deserialize, Serialize};

use super::student::critical;

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

/// The two-sided Student t confidence interval for the mean at `level`
/// (e.g. 0.95), as `(lo, hi)`. `None` when n = 1 (no spread to scale by),
/// the level is not strictly between 0 and 1, or a bound overflows.
pub fn t_interval(summary: &Moments, level: f64) -> Option<(f64, f64)> {
    let se = summary.se()?;
    let half = critical(level, (summary.n - 1) as f64)? * se;
    let (lo, hi) = (summary.mean - half, summary.mean + half);
    (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}
