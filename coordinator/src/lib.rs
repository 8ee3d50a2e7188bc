//! The sweep coordinator: the only process that touches the database.
//!
//! - [`store`]: the [`Store`](store::Store) trait and its SQLite and
//!   PostgreSQL implementations.
//! - [`service`]: the gRPC services (`SweepService` for clients,
//!   `WorkerService` for workers) over a store.
//! - [`archive`]: `sweep export` / `sweep import` (`ArchiveService`).
//! - [`error`]: the one table mapping store errors to gRPC status codes.
//! - [`fleet`]: the workers heard from (`sweep workers`).
//! - [`limits`]: the network edge (connection cap, handshake timeout,
//!   keepalives, `RESOURCE_EXHAUSTED` for oversized messages).
//! - [`metrics`]: Prometheus metrics and their `GET /metrics` server.
//! - [`serve`]: runs a coordinator on a listener until a shutdown future
//!   resolves (tests call it with `127.0.0.1:0`).

pub mod analysis;
pub mod archive;
pub mod auth;
pub mod bounds;
pub mod error;
pub mod fleet;
pub mod limits;
pub mod metrics;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

pub use limits::NetLimits;
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
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// Refusing to expose an unprotected coordinator beyond this machine.
    #[error("{0}")]
    Insecure(String),
    #[error("{0}")]
    Limits(#[from] limits::LimitError),
}

/// The coordinator's TLS identity (PEM), and the CA whose client
/// certificates it accepts when mutual TLS is wanted.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls {{ mtls: {} }}", self.client_ca_pem.is_some())
    }
}

/// Who may connect, and how: the part of the configuration that protects
/// the port.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Bearer tokens per role; no tokens means no authentication.
    pub auth: auth::Auth,
    /// TLS on the coordinator's port; `None` is plaintext.
    pub tls: Option<ServerTls>,
    /// Allow plaintext or token-less serving on a non-loopback address.
    /// Off by default: an open coordinator on a shared network lets anyone
    /// submit, cancel or poison results.
    pub allow_insecure: bool,
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
    serve_secure(store, config, Security::default(), listener, shutdown).await
}

/// [`serve`] with authentication and TLS, under the default
/// [`NetLimits`].
pub async fn serve_secure(
    store: Arc<dyn store::Store>,
    config: CoordinatorConfig,
    security: Security,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with_limits(store, config, security, NetLimits::default(), listener, shutdown).await
}

/// [`serve_secure`] under the given network limits (connection cap,
/// handshake timeout, keepalives, streams per connection).
pub async fn serve_with_limits(
    store: Arc<dyn store::Store>,
    config: CoordinatorConfig,
    security: Security,
    net: NetLimits,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    net.validate()?;
    let addr = listener.local_addr().map_err(|e| ServeError::Insecure(format!("listener: {e}")))?;
    if !addr.ip().is_loopback() && !security.allow_insecure {
        if security.tls.is_none() {
            return Err(ServeError::Insecure(format!(
                "refusing plaintext on the non-loopback address {addr}: give a TLS certificate and key, or allow plaintext explicitly"
            )));
        }
        if !security.auth.enabled() {
            return Err(ServeError::Insecure(format!(
                "refusing to serve {addr} without tokens: give worker and client tokens, or allow unauthenticated access explicitly"
            )));
        }
    }
    // Nobody could heartbeat while no coordinator ran: give every running
    // lease a full TTL to re-attach before the reaper may expire it.
    let extended = store.extend_running_leases(service::now_ms(), config.lease_ttl.as_millis() as i64).await?;
    if extended > 0 {
        tracing::info!(leases = extended, "running leases extended after start-up; their workers can re-attach");
    }
    let auth = security.auth.clone();
    let coordinator = Coordinator::new(store, config);
    let reaper = coordinator.spawn_reaper();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SweepServiceServer<Coordinator>>().await;
    health.set_serving::<WorkerServiceServer<Coordinator>>().await;
    health.set_serving::<sweep_proto::v1::analysis_service_server::AnalysisServiceServer<analysis::Analysis>>().await;
    health
        .set_serving::<sweep_proto::v1::archive_service_server::ArchiveServiceServer<archive::ArchiveService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sweep_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    use auth::Role;
    use tonic::service::interceptor::InterceptedService as Guarded;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(net.http2_keepalive_interval)
        .http2_keepalive_timeout(Some(net.http2_keepalive_timeout))
        .max_concurrent_streams(net.max_concurrent_streams)
        .concurrency_limit_per_connection(net.concurrency_limit_per_connection)
        .http2_max_header_list_size(net.max_header_list_size);
    if let Some(tls) = &security.tls {
        let mut cfg = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(cfg)?;
    }
    let result = builder
        .layer(limits::ExhaustedLayer)
        // Health stays open so load balancers and probes need no token.
        .add_service(health_service)
        .add_service(Guarded::new(reflection, auth.interceptor(Role::Client)))
        .add_service(Guarded::new(
            sweep_proto::v1::analysis_service_server::AnalysisServiceServer::new(analysis::Analysis::new(
                coordinator.store().clone(),
            )),
            auth.interceptor(Role::Client),
        ))
        .add_service(Guarded::new(
            sweep_proto::v1::archive_service_server::ArchiveServiceServer::new(archive::ArchiveService::new(
                coordinator.clone(),
            ))
            .max_decoding_message_size(archive::MAX_CHUNK_BYTES + 1024),
            auth.interceptor(Role::Client),
        ))
        .add_service(Guarded::new(
            SweepServiceServer::new(coordinator.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            auth.interceptor(Role::Client),
        ))
        .add_service(Guarded::new(
            WorkerServiceServer::new(coordinator).max_decoding_message_size(MAX_MESSAGE_BYTES),
            auth.interceptor(Role::Worker),
        ))
        .serve_with_incoming_shutdown(limits::incoming(listener, &net, security.tls.is_some()), shutdown)
        .await;
    reaper.abort();
    Ok(result?)
}
