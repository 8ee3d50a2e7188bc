//! Every bound the coordinator puts on what it accepts from the wire, in one
//! place: string lengths (so no request can make it store or echo unbounded
//! text) and the domains of numbers (so no report shows an accuracy of
//! 4200 % or a step past any real training run). A value outside its bound
//! is `INVALID_ARGUMENT`, naming the field and the bound.
//!
//! The grid's own strings (sweep name, data path) are bounded where the grid
//! is validated, in `sweep-core`.

use tonic::Status;

use crate::store::{MetricRow, TrialSummary};

/// Bytes in a worker ID (`hostname-pid` by default).
pub const WORKER_ID_MAX: usize = 128;
/// Bytes in a device name (`cpu`, `cuda:0`, `mps`).
pub const DEVICE_MAX: usize = 32;
/// Characters of a fail or release reason that are kept (the rest is cut).
pub const REASON_MAX_CHARS: usize = 4000;
/// Bytes in a sweep ID in a request.
pub const SWEEP_ID_MAX: usize = 200;
/// Bytes in a lease ID (ours are 32 hex digits).
pub const LEASE_ID_MAX: usize = 64;
/// A metric point's bounds: one home, in sweep-core.
pub use sweep_core::point::{EPOCH_MAX, METRIC_NAME_MAX, STEP_MAX};
/// Most trials one Lease call may ask for (`max_trials`: one cell's seeds
/// trained as one fused model).
pub const LEASE_GROUP_MAX: u32 = 256;
/// Wall seconds of one trial must be below this (about 31 years).
pub const WALL_SECONDS_LIMIT: f64 = 1e9;

fn invalid(msg: String) -> Status {
    Status::invalid_argument(msg)
}

pub fn worker_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() || id.len() > WORKER_ID_MAX {
        return Err(invalid(format!("worker_id: must be 1 to {WORKER_ID_MAX} bytes, got {}", id.len())));
    }
    Ok(id)
}

/// A worker ID on a call where it is optional (Complete, Fail): empty is fine.
pub fn optional_worker_id(id: &str) -> Result<&str, Status> {
    if id.len() > WORKER_ID_MAX {
        return Err(invalid(format!("worker_id: at most {WORKER_ID_MAX} bytes, got {}", id.len())));
    }
    Ok(id)
}

pub fn device(d: &str) -> Result<&str, Status> {
    if d.len() > DEVICE_MAX {
        return Err(invalid(format!("device: at most {DEVICE_MAX} bytes, got {}", d.len())));
    }
    if d.chars().any(char::is_control) {
        return Err(invalid("device: control characters are not allowed".into()));
    }
    Ok(d)
}

/// A fail or release reason, cut to [`REASON_MAX_CHARS`] characters.
pub fn reason(r: &str) -> String {
    // PostgreSQL's text cannot hold NUL (a command's output may).
    r.chars().take(REASON_MAX_CHARS).map(|c| if c == '\0' { '\u{FFFD}' } else { c }).collect()
}

/// A Lease call's `max_trials`: 0 (an old worker) means 1; above
/// [`LEASE_GROUP_MAX`] is refused.
pub fn max_trials(n: u32) -> Result<u32, Status> {
    if n > LEASE_GROUP_MAX {
        return Err(invalid(format!("max_trials: {n} is above the limit of {LEASE_GROUP_MAX}")));
    }
    Ok(n.max(1))
}

pub fn sweep_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() || id.len() > SWEEP_ID_MAX {
        return Err(invalid(format!("sweep_id: must be 1 to {SWEEP_ID_MAX} characters")));
    }
    Ok(id)
}

pub fn lease_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() || id.len() > LEASE_ID_MAX || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("lease_id: not a lease ID".into()));
    }
    Ok(id)
}

pub fn metric_name<'a>(what: &str, name: &'a str) -> Result<&'a str, Status> {
    if name.is_empty() || name.len() > METRIC_NAME_MAX {
        return Err(invalid(format!("{what}: must be 1 to {METRIC_NAME_MAX} characters")));
    }
    Ok(name)
}

/// A step (of a point, a checkpoint or a truncation): 0 to [`STEP_MAX`].
pub fn step(what: &str, s: i64) -> Result<i64, Status> {
    if !(0..=STEP_MAX).contains(&s) {
        return Err(invalid(format!("{what}: {s} is outside 0..={STEP_MAX}")));
    }
    Ok(s)
}

/// A trial's output tail (`PushLog`): at most
/// [`sweep_core::exec::LOG_TAIL_BYTES`].
pub fn log_text(text: &str) -> Result<(), Status> {
    let max = sweep_core::exec::LOG_TAIL_BYTES;
    if text.len() > max {
        return Err(invalid(format!("text: {} bytes; a log tail is at most {max}", text.len())));
    }
    if text.contains('\0') {
        return Err(invalid("text: contains NUL".into()));
    }
    Ok(())
}

/// One metric point: named, step and epoch in range, value finite, and an
/// `*accuracy*` value in [0, 1].
pub fn metric_point(i: usize, name: &str, step_: i64, epoch: u32, value: f64) -> Result<MetricRow, Status> {
    metric_name(&format!("points[{i}].name"), name)?;
    if step_ < 0 {
        return Err(invalid(format!("points[{i}].step: {step_} is negative")));
    }
    step(&format!("points[{i}].step"), step_)?;
    if epoch > EPOCH_MAX {
        return Err(invalid(format!("points[{i}].epoch: {epoch} is above {EPOCH_MAX}")));
    }
    if !value.is_finite() {
        return Err(invalid(format!("points[{i}].value: {value} for {name:?} is not finite")));
    }
    sweep_core::point::domain(name, value).map_err(|m| invalid(format!("points[{i}].value: {m}")))?;
    Ok(MetricRow { step: step_, epoch, name: name.to_owned(), value })
}

/// A trial's final summary. Accuracies must lie in [0, 1]; losses must be
/// finite and non-negative, except that a diverged trial's non-finite losses
/// (that is what diverged means) are stored as absent; wall seconds must be
/// finite, non-negative and below [`WALL_SECONDS_LIMIT`].
pub fn summary(s: &sweep_proto::v1::TrialSummary, diverged: bool) -> Result<TrialSummary, Status> {
    let accuracy = |what: &str, v: Option<f64>| -> Result<Option<f64>, Status> {
        match v {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                Err(invalid(format!("summary.{what}: {x} is not an accuracy in [0, 1]")))
            }
            v => Ok(v),
        }
    };
    let loss = |what: &str, v: Option<f64>| -> Result<Option<f64>, Status> {
        match v {
            Some(x) if !x.is_finite() && diverged => Ok(None),
            Some(x) if !x.is_finite() || x < 0.0 => {
                Err(invalid(format!("summary.{what}: {x} is not a finite, non-negative loss")))
            }
            v => Ok(v),
        }
    };
    let w = s.wall_seconds;
    if !w.is_finite() || !(0.0..WALL_SECONDS_LIMIT).contains(&w) {
        return Err(invalid(format!("summary.wall_seconds: {w} is outside [0, {WALL_SECONDS_LIMIT:e})")));
    }
    Ok(TrialSummary {
        final_train_loss: loss("final_train_loss", s.final_train_loss)?,
        final_test_loss: loss("final_test_loss", s.final_test_loss)?,
        final_test_accuracy: accuracy("final_test_accuracy", s.final_test_accuracy)?,
        best_test_accuracy: accuracy("best_test_accuracy", s.best_test_accuracy)?,
        wall_seconds: w,
    })
}

/// The longest field of a result's provenance, in bytes (a version string,
/// a device model, a SHA-256 in hex).
pub const PROVENANCE_FIELD_MAX: usize = 256;

/// A result's provenance: each field at most [`PROVENANCE_FIELD_MAX`]
/// bytes of printable text.
pub fn provenance(p: &sweep_proto::v1::Provenance) -> Result<sweep_core::Provenance, Status> {
    for (what, v) in [
        ("code_version", &p.code_version),
        ("libtorch", &p.libtorch),
        ("device_name", &p.device_name),
        ("dataset_sha256", &p.dataset_sha256),
    ] {
        if v.len() > PROVENANCE_FIELD_MAX {
            return Err(invalid(format!("provenance.{what}: at most {PROVENANCE_FIELD_MAX} bytes, got {}", v.len())));
        }
        if v.chars().any(char::is_control) {
            return Err(invalid(format!("provenance.{what}: control characters are not allowed")));
        }
    }
    Ok(p.clone().into())
}
