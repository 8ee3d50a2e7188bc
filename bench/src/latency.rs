//! Round-trip times of one kind of call, and their percentiles.

use std::time::Duration;

/// Every sample, in microseconds (a run records at most a few hundred
/// thousand, so exact percentiles cost little).
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies {
    micros: Vec<u32>,
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Summary {
    pub(crate) calls: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latencies {
    pub(crate) fn record(&mut self, d: Duration) {
        self.micros.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    pub(crate) fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    /// `None` without samples.
    pub(crate) fn summary(&self) -> Option<Summary> {
        if self.micros.is_empty() {
            return None;
        }
        let mut v = self.micros.clone();
        v.sort_unstable();
        // Nearest rank: the smallest sample with at least q of them at or
        // below it.
        let at = |q: f64| {
            let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
            f64::from(v[rank.min(v.len()) - 1]) / 1e3
        };
        Some(Summary { calls: v.len(), p50_ms: at(0.50), p99_ms: at(0.99), max_ms: at(1.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        assert!(l.summary().is_none());
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary().unwrap();
        assert_eq!((s.calls, s.p50_ms, s.p99_ms, s.max_ms), (100, 50.0, 99.0, 100.0));
        let mut one = Latencies::default();
        one.record(Duration::from_micros(1500));
        l.merge(one);
        assert_eq!(l.summary().unwrap().calls, 101);
    }
}
