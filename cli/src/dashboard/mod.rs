//! `sweep serve --http ADDR`: the web dashboard, served from the
//! coordinator's process.
//!
//! The dashboard is a client of its own coordinator: it reads through the
//! same gRPC calls as `sweep status`, `sweep report`, `sweep logs` and
//! `sweep workers` (so it shows exactly what they show, and only the
//! coordinator opens the database), and renders HTML on the server: every
//! table works without JavaScript. Live curves come as server-sent events
//! (`live.rs`) drawn by the vendored uPlot (`assets.rs`).
//!
//! Auth: with client tokens configured, every page needs one, as a bearer
//! header or the HttpOnly cookie the login form sets. Every state-changing
//! request (cancel) is a POST carrying this process's CSRF token and is
//! refused from another site (`Sec-Fetch-Site`/`Origin`).
//!
//! - `pages.rs`: the pages; `live.rs`: the event stream; `assets.rs`: the
//!   static files; `auth.rs`: the login, the cookie and the CSRF check.

mod assets;
mod auth;
mod live;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub(crate) use auth::Gate;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct App {
    /// The coordinator's gRPC URL (this process).
    pub grpc: Arc<str>,
    pub gate: Arc<Gate>,
}

/// The dashboard's routes.
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/", get(pages::sweeps))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/workers", get(pages::workers))
        .route("/sweeps/{sweep}", get(pages::sweep))
        .route("/sweeps/{sweep}/report", get(pages::report_page))
        .route("/sweeps/{sweep}/report.json", get(pages::report_json))
        .route("/sweeps/{sweep}/events", get(live::events))
        .route("/sweeps/{sweep}/cancel", post(pages::cancel))
        .route("/sweeps/{sweep}/trials/{trial}", get(pages::trial))
        .route("/assets/{file}", get(assets::file))
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::require))
        .with_state(app)
}

/// Serves the dashboard on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves the dashboard in the background, reaching the
/// coordinator at `grpc` as a client (with one of its client tokens when it
/// has them). Refuses a non-loopback address unless the coordinator has
/// tokens and allows insecure serving (the dashboard speaks plain HTTP).
pub(crate) async fn start(
    addr: &str,
    grpc: SocketAddr,
    security: &sweep_coordinator::Security,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--http {addr}: cannot listen there"))?;
    let local = listener.local_addr()?;
    let exposed_ok = security.auth.enabled() && security.allow_insecure;
    if !local.ip().is_loopback() && !exposed_ok {
        anyhow::bail!(
            "--http {local}: refusing to serve the dashboard beyond loopback: it speaks plain HTTP. Serve it on \
             127.0.0.1 behind a TLS proxy, or give the coordinator tokens and --allow-insecure"
        );
    }
    let mut client = crate::commands::security();
    client.token = security.auth.some_token(sweep_coordinator::auth::Role::Client);
    client.tls_cert = None;
    client.tls_key = None;
    let grpc_url = if security.tls.is_some() {
        if security.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()) {
            anyhow::bail!(
                "--http: the dashboard cannot reach a coordinator that requires client certificates (--tls-client-ca)"
            );
        }
        if client.tls_ca.is_none() {
            anyhow::bail!("--http with TLS: give --tls-ca (the CA of the coordinator's certificate, which must cover `localhost`)");
        }
        client.tls_domain = Some("localhost".into());
        format!("https://127.0.0.1:{}", grpc.port())
    } else {
        format!("http://127.0.0.1:{}", grpc.port())
    };
    crate::commands::set_security(client);
    eprintln!("sweep dashboard on http://{local}/");
    let app = App { grpc: grpc_url.into(), gate: Arc::new(Gate::new(security.auth.clone())) };
    Ok(tokio::spawn(async move {
        if let Err(e) = serve(listener, app, std::future::pending()).await {
            tracing::error!(error = %e, "the dashboard stopped");
        }
    }))
}
