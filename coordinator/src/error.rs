//! The one table mapping coordinator errors to gRPC status codes. Clients and
//! workers act on the code (a worker treats `FailedPrecondition` as "your
//! lease is gone, stop" and `PermissionDenied` as "this worker may not work
//! here: stop"; see `worker/src/retry.rs`), so every error path goes through
//! here.
//!
//! | error | code |
//! |---|---|
//! | unknown sweep or trial | `NOT_FOUND` |
//! | lease expired, re-leased or cancelled | `FAILED_PRECONDITION` |
//! | worker quarantined (too many failed trials in a row) | `PERMISSION_DENIED` |
//! | bad argument (also wire validation, `ConvertError`) | `INVALID_ARGUMENT` |
//! | stored data this code cannot read | `DATA_LOSS` |
//! | database busy, unreachable or closed | `UNAVAILABLE` |
//! | any other database, migration or file error | `INTERNAL` |
//!
//! (Bad tokens are `UNAUTHENTICATED`/`PERMISSION_DENIED` from the interceptors
//! in `auth.rs`; over-size messages `RESOURCE_EXHAUSTED` from `limits.rs`.)

use tonic::{Code, Status};

use crate::store::StoreError;

pub fn code_of(e: &StoreError) -> Code {
    match e {
        StoreError::NotFound(_) => Code::NotFound,
        StoreError::LeaseLost(_) => Code::FailedPrecondition,
        StoreError::InvalidArgument(_) => Code::InvalidArgument,
        StoreError::Corrupt(_) => Code::DataLoss,
        StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
            Code::Unavailable
        }
        StoreError::Database(_)
        | StoreError::Migrate(_)
        | StoreError::Locked { .. }
        | StoreError::Unsafe { .. }
        | StoreError::Io { .. } => Code::Internal,
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        let code = code_of(&e);
        if matches!(code, Code::Internal | Code::DataLoss | Code::Unavailable) {
            tracing::error!(error = %e, "store error");
        }
        Status::new(code, e.to_string())
    }
}

/// A quarantined worker asks for work: refused with its own code, so the
/// worker stops instead of treating it like a lost lease.
pub fn quarantined(message: String) -> Status {
    Status::permission_denied(message)
}
