//! Retry policy for calls to a coordinator that may be restarting: capped,
//! jittered exponential backoff, and which gRPC codes are worth retrying.

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
