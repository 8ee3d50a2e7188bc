//! The one table mapping coordinator errors to gRPC status codes. Clients and
//! workers act on the code (a worker treats `FailedPrecondition` as "your
//! lease is gone, stop"), so every error path goes through here.

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
