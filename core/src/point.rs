//! A metric point's bounds, checked on the wire by the coordinator
//! (`bounds.rs`) and in an archive by `archive::Checker`.

/// Bytes in a metric name (`grad_norm/block07`, `confusion/3/5`).
pub const METRIC_NAME_MAX: usize = 200;
/// Largest step (metric points, checkpoints, truncation): 10^12 optimiser
/// steps is far beyond any run this tool will see.
pub const STEP_MAX: i64 = 1_000_000_000_000;
/// Largest epoch number of a metric point.
pub const EPOCH_MAX: u32 = 1_000_000;

/// Whether a metric of this name is an accuracy: a fraction in [0, 1]
/// (reports show it in percent).
pub fn is_accuracy(name: &str) -> bool {
    name.contains("accuracy")
}

/// The value's domain by its name: an accuracy is a fraction in [0, 1].
pub fn domain(name: &str, value: f64) -> Result<(), String> {
    if is_accuracy(name) && !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "{name}: {value} is an accuracy outside [0, 1] (log accuracies as fractions, e.g. 0.83, not 83)"
        ));
    }
    Ok(())
}

/// Name prefixes (any case) and names the worker keeps for its own points:
/// a training command may not log them.
pub const RESERVED_PREFIXES: &[&str] = &["analysis/", "final/", "exec/"];
pub const RESERVED_NAMES: &[&str] = &["diverged_step", "train_images_used"];

/// Whether a command may log a metric of this name (1 to
/// [`METRIC_NAME_MAX`] printable bytes, not reserved).
pub fn loggable_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > METRIC_NAME_MAX || name.chars().any(char::is_control) {
        return Err(format!("{}: a metric name is 1 to {METRIC_NAME_MAX} printable bytes", crate::quote::short(name)));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_NAMES.contains(&lower.as_str()) || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return Err(format!("{}: a name the worker keeps for its own points", crate::quote::short(name)));
    }
    Ok(())
}

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
