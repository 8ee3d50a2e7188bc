//! The sweep coordinator: the only process that touches the database.
//!
//! - [`store`]: the [`Store`](store::Store) trait and its SQLite and
//!   PostgreSQL implementations.
//! - [`service`]: the gRPC services (`SweepService` for clients,
//!   `WorkerService` for workers) over a store.
//! - [`error`]: the one table mapping store errors to gRPC status codes.
//! - [`serve`]: runs a coordinator on a listener until a shutdown future
//!   resolves (tests call it with `127.0.0.1:0`).

pub mod store;
pub mod error;
pub mod service;

use std::future::Future;
use std::sync::Arc;

pub use service::{Coordinator, CoordinatorConfig};

use sweep_proto::v1::sweep_service_server::SweepServiceServer;
use sweep_proto::v1::worker_service_server::WorkerServiceServer;

/// Largest gRPC message accepted (a grid spec or a metric batch): big enough
/// for 10,000 metric points, small enough that one client cannot make the
/// coordinator allocate without bound.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Runs a coordinator on `listener` until `shutdown` resolves: both sweep
/// services, gRPC health (`grpc.health.v1`) and reflection (so `grpcurl`
/// works), and the lease reaper.
pub async fn serve(
    store: Arc<dyn store::Store>,
    config: CoordinatorConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let coordinator = Coordinator::new(store, config);
    let reaper = coordinator.spawn_reaper();

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SweepServiceServer<Coordinator>>()
        .await;
    health
        .set_serving::<WorkerServiceServer<Coordinator>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sweep_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            SweepServiceServer::new(coordinator.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            WorkerServiceServer::new(coordinator)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await;
    reaper.abort();
    Ok(result?)
}
