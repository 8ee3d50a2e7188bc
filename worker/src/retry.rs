//! The worker's reading of the coordinator's gRPC status codes (the one
//! place it reads them; the coordinator's table is
//! `coordinator/src/error.rs`), and the retry policy for a coordinator that
//! may be restarting: capped, jittered exponential backoff.
//!
//! | code                                  | on a lease's calls ([`verdict`]) | on `Lease` ([`lease_refusal`]) |
//! |---------------------------------------|----------------------------------|--------------------------------|
//! | transient ([`transient`])             | retry with backoff               | retry with backoff |
//! | `FAILED_PRECONDITION`                 | the lease is lost: drop the trial | refused (a coordinator older than quarantine's own code) |
//! | `PERMISSION_DENIED`                   | refused for good                 | refused: quarantined, or a token without the worker role |
//! | `UNAUTHENTICATED`                     | refused for good                 | refused: missing or unknown token |
//! | anything else                         | refused for good                 | retry with backoff |

use std::time::Duration;

use rand::Rng;
use tonic::Code;

/// Capped exponential backoff with jitter.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::MIN }
    }
    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
    pub(crate) async fn wait(&mut self) {
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

/// Whether a failed call is worth retrying (the coordinator is away or busy)
/// rather than a verdict about the request.
pub(crate) fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled
    )
}

/// What the coordinator's answer to a call on a lease (metrics, complete,
/// fail) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The coordinator is away or busy: re-send later.
    Retry,
    /// `FAILED_PRECONDITION`: the lease went to someone else.
    LeaseLost,
    /// Any other code: the request will never be accepted.
    Refused,
}

/// The [`Verdict`] of a failed call on a lease.
pub(crate) fn verdict(code: Code) -> Verdict {
    if code == Code::FailedPrecondition {
        Verdict::LeaseLost
    } else if transient(code) {
        Verdict::Retry
    } else {
        Verdict::Refused
    }
}

/// Why the coordinator refuses this worker for good: a `Lease` answer
/// after which the worker stops instead of retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseRefusal {
    /// `PERMISSION_DENIED`: the worker is quarantined (it failed too many
    /// trials in a row), or its token is not a worker token.
    Denied,
    /// `UNAUTHENTICATED`: a missing or unknown token.
    Unauthenticated,
    /// `FAILED_PRECONDITION`: how coordinators before quarantine had its
    /// own code answered a quarantined worker (a `Lease` call has no lease
    /// to lose, so it can mean nothing else).
    OlderQuarantine,
}

impl LeaseRefusal {
    /// What it means, for the log.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            LeaseRefusal::Denied => {
                "the coordinator refused this worker (PERMISSION_DENIED): it is quarantined after failing too many \
                 trials in a row, or its token lacks the worker role"
            }
            LeaseRefusal::Unauthenticated => {
                "the coordinator refused this worker (UNAUTHENTICATED): its token is missing or unknown"
            }
            LeaseRefusal::OlderQuarantine => {
                "the coordinator refused this worker (FAILED_PRECONDITION): it is quarantined"
            }
        }
    }
}

/// `Some` when a failed `Lease` call means the worker must stop; `None`:
/// retry with backoff.
pub(crate) fn lease_refusal(code: Code) -> Option<LeaseRefusal> {
    match code {
        Code::PermissionDenied => Some(LeaseRefusal::Denied),
        Code::Unauthenticated => Some(LeaseRefusal::Unauthenticated),
        Code::FailedPrecondition => Some(LeaseRefusal::OlderQuarantine),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(Code::InvalidArgument), Verdict::Refused);
        assert_eq!(verdict(Code::OutOfRange), Verdict::Refused);
        assert_eq!(verdict(Code::PermissionDenied), Verdict::Refused);
        assert_eq!(verdict(Code::FailedPrecondition), Verdict::LeaseLost);
        assert_eq!(verdict(Code::Unavailable), Verdict::Retry);
        assert_eq!(verdict(Code::ResourceExhausted), Verdict::Retry);
    }

    #[test]
    fn quarantine_stops_the_worker_and_is_not_transient() {
        assert!(!transient(Code::PermissionDenied));
        assert_eq!(lease_refusal(Code::PermissionDenied), Some(LeaseRefusal::Denied));
        assert!(LeaseRefusal::Denied.describe().contains("quarantined"));
        // What a coordinator before the split answered.
        assert_eq!(lease_refusal(Code::FailedPrecondition), Some(LeaseRefusal::OlderQuarantine));
        assert_eq!(lease_refusal(Code::Unauthenticated), Some(LeaseRefusal::Unauthenticated));
        for retried in [Code::Unavailable, Code::Internal, Code::InvalidArgument, Code::ResourceExhausted] {
            assert_eq!(lease_refusal(retried), None, "{retried:?}");
        }
    }
}
