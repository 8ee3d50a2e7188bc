//! Statistics for reports: means, t-intervals, paired t-tests, Holm correction.
