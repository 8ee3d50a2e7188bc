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
//!
//! The parts: [`Moments`] and the t-interval of one group (`moments`); the
//! Student t distribution and Welch–Satterthwaite degrees of freedom
//! (`student`); the comparisons (Welch's difference of two groups, the
//! paired t-test, Holm's correction: `compare`).

mod compare;
mod moments;
mod student;
#[cfg(test)]
mod tests;

pub use compare::{holm, paired_t, welch_diff, PairedT, WelchDiff};
pub use moments::{t_interval, Moments};
pub use student::{p_two_sided, t_quantile, welch_satterthwaite};
