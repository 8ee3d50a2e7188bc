//! A metric point's bounds, checked on the wire by the coordinator
//! (`bounds.rs`) and in an archive by `archive::Checker`.

/// Bytes in a metric name (`grad_norm/block07`, `confusion/3/5`).
pub const METRIC_NAME_MAX: usize = 200;
/// Largest step (metric points, checkpoints, truncation): 10^12 optimiser
/// steps is far beyond any run this tool will see.
pub const STEP_MAX: i64 = 1_000_000_000_000;
/// Largest epoch number of a metric point.
pub const EPOCH_MAX: u32 = 1_000_000;

/// A point's name, step and epoch within bounds, its value finite; the
/// message says which is not.
pub fn check(name: &str, step: i64, epoch: i64, value: f64) -> Result<(), String> {
    if name.is_empty() || name.len() > METRIC_NAME_MAX {
        return Err(format!("metric name: must be 1 to {METRIC_NAME_MAX} bytes"));
    }
    if !(0..=STEP_MAX).contains(&step) {
        return Err(format!("{name}: step {step} is outside 0..={STEP_MAX}"));
    }
    if !(0..=i64::from(EPOCH_MAX)).contains(&epoch) {
        return Err(format!("{name}: epoch {epoch} is outside 0..={EPOCH_MAX}"));
    }
    if !value.is_finite() {
        return Err(format!("{name}: {value} is not finite"));
    }
    Ok(())
}
