//! How clients and workers reach a coordinator: the endpoint (with TLS when
//! asked for) and the bearer token attached to every call. Shared by the
//! `sweep` CLI and `sweep-worker` so both behave the same.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Where a client's credentials come from. Tokens are read from a file or
/// an environment variable, never from a flag (flags show in `ps`).
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// Bearer token sent with every call (`SWEEP_TOKEN` or `--token-file`).
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the coordinator's certificate. Set
    /// it, or use an `https://` URL, to talk TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Name to verify in the coordinator's certificate (default: the URL's host).
    pub tls_domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid coordinator URL {0:?}")]
    Url(String),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] tonic::transport::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read { path: path.to_owned(), source })
}

/// Reads a token file: the first non-empty line, trimmed.
pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
    let text = String::from_utf8_lossy(&read(path)?).into_owned();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Config(format!("{}: no token in the file", path.display())))
}

impl ClientSecurity {
    /// From `--token-file` (if given) or `SWEEP_TOKEN`, plus the TLS paths.
    pub fn from_sources(
        token_file: Option<&Path>,
        tls_ca: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
    ) -> Result<Self, ClientError> {
        let token = match token_file {
            Some(p) => Some(read_token_file(p)?),
            None => std::env::var("SWEEP_TOKEN").ok().filter(|t| !t.trim().is_empty()).map(|t| t.trim().to_owned()),
        };
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ClientError::Config("--tls-cert and --tls-key go together".into()));
        }
        Ok(Self { token, tls_ca, tls_cert, tls_key, tls_domain: None })
    }

    /// The endpoint for `url`, with TLS when the URL is `https://` or a CA is set.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ClientError> {
        let mut ep = Endpoint::from_shared(url.to_owned())
            .map_err(|_| ClientError::Url(url.to_owned()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if url.starts_with("https://") || self.tls_ca.is_some() {
            if url.starts_with("http://") {
                return Err(ClientError::Config(format!("{url}: a TLS CA is set, so use an https:// coordinator URL")));
            }
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.tls_ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep.tls_config(tls)?;
        }
        Ok(ep)
    }

    pub fn interceptor(&self) -> Result<BearerToken, ClientError> {
        BearerToken::new(self.token.as_deref())
    }
}

/// Adds `authorization: Bearer <token>` to every call (nothing when there is
/// no token).
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, ClientError> {
        match token {
            None => Ok(Self(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| ClientError::Config("the token has characters not allowed in a header".into())),
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel with the bearer token attached.
pub type AuthChannel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>;
