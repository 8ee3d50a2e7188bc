//! Analysis metric points: numbers an analysis measures on a trial's
//! network (`[analysis]`), whose step is the analysis's own axis (a layer,
//! a grid point, a number of blocks removed), not a training step. Their
//! names start with [`PREFIX`], and the store treats them apart from the
//! training curves:
//!
//! - an attempt that resumes at training step S truncates the trial's
//!   points after S, but not these (their steps are not training steps);
//! - a point measured again (by a later attempt) replaces the stored one,
//!   where a training point keeps its first value.
//!
//! Every attempt that reaches an analysis measures it again, so what is
//! stored is always the last attempt's.

/// The name prefix of every analysis metric point.
pub const PREFIX: &str = "analysis/";

/// Whether `name` is an analysis metric point's.
pub fn is_analysis(name: &str) -> bool {
    name.starts_with(PREFIX)
}
