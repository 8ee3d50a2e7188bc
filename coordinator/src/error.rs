//! The one table mapping coordinator errors to gRPC status codes. Clients
//! and workers act on the code, so every error path of the services goes
//! through here (the worker reads them back in `worker/src/retry.rs` and
//! its callers):
//!
//! | error                                   | code                  | the caller should |
//! |-----------------------------------------|-----------------------|-------------------|
//! | [`StoreError::NotFound`]                | `NOT_FOUND`           | check the name |
//! | [`StoreError::LeaseLost`]               | `FAILED_PRECONDITION` | drop the trial: its lease is gone |
//! | [`StoreError::InvalidArgument`]         | `INVALID_ARGUMENT`    | fix the request |
//! | [`StoreError::AlreadyExists`]           | `ALREADY_EXISTS`      | pick another name or database |
//! | [`StoreError::Corrupt`]                 | `DATA_LOSS`           | (operator) repair the database |
//! | database unreachable or pool exhausted  | `UNAVAILABLE`         | retry with backoff |
//! | [`StoreError::RolledBack`]              | `UNAVAILABLE`         | retry with backoff |
//! | any other store error                   | `INTERNAL`            | retry with backoff |
//! | [`Refusal::Quarantined`]                | `PERMISSION_DENIED`   | stop: this worker gets no more trials |
//! | [`Refusal::NotLeaseHolder`]             | `PERMISSION_DENIED`   | stop acting on that lease |
//!
//! Quarantine has its own code, distinct from a lost lease: a worker that
//! lost a lease carries on with other trials; a quarantined one must stop.
//! (Authentication answers `UNAUTHENTICATED` and `PERMISSION_DENIED` for a
//! missing or wrong-role token, before any handler runs: `auth.rs`.)

use tonic::{Code, Status};

use crate::store::StoreError;

/// Requests the services refuse on their own account (not the store's).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The worker failed `failed` trials in a row (at least `limit`).
    #[error(
        "worker {worker_id} is quarantined: it failed {failed} trials in a row (the limit is {limit}), so it gets no \
         more trials. The count is kept in the coordinator's database, so restarting the coordinator does not lift \
         it. Read the trials' errors (`sweep status --trials`) and this worker's log, fix the node, then start the \
         worker again under a new worker ID (the default, host-pid, changes on every start)"
    )]
    Quarantined { worker_id: String, failed: u32, limit: u32 },
    /// A call on a lease that was granted to another worker identity.
    #[error("lease {lease} was granted to another worker identity; a worker may act only on its own leases")]
    NotLeaseHolder { lease: String },
}

/// Every error a service handler answers with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// The table.
pub fn code_of(e: &ServiceError) -> Code {
    match e {
        ServiceError::Store(e) => match e {
            StoreError::NotFound(_) => Code::NotFound,
            StoreError::LeaseLost(_) => Code::FailedPrecondition,
            StoreError::InvalidArgument(_) => Code::InvalidArgument,
            StoreError::AlreadyExists(_) => Code::AlreadyExists,
            StoreError::Corrupt(_) => Code::DataLoss,
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
            | StoreError::RolledBack(_) => Code::Unavailable,
            StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Locked { .. }
            | StoreError::Unsafe { .. }
            | StoreError::Io { .. } => Code::Internal,
        },
        ServiceError::Refused(Refusal::Quarantined { .. }) => Code::PermissionDenied,
        ServiceError::Refused(Refusal::NotLeaseHolder { .. }) => Code::PermissionDenied,
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let code = code_of(&e);
        if matches!(code, Code::Internal | Code::DataLoss | Code::Unavailable) {
            tracing::error!(error = %e, "store error");
        }
        Status::new(code, e.to_string())
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        ServiceError::Store(e).into()
    }
}

impl From<Refusal> for Status {
    fn from(e: Refusal) -> Status {
        ServiceError::Refused(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_and_a_lost_lease_have_different_codes() {
        let quarantined = Refusal::Quarantined { worker_id: "w".into(), failed: 5, limit: 5 };
        let lost = StoreError::LeaseLost("l".into());
        assert_eq!(Status::from(quarantined).code(), Code::PermissionDenied);
        assert_eq!(Status::from(lost).code(), Code::FailedPrecondition);
    }
}
