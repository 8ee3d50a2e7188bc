//! Bearer-token authentication for the coordinator's services.
//!
//! Two roles: **worker** tokens may call only `WorkerService`; **client**
//! tokens may call `SweepService` (submit, cancel, read) and the analysis
//! service. A missing or unknown token is `Unauthenticated`; a valid token
//! of the wrong role is `PermissionDenied`. Tokens are compared in constant
//! time and never logged. The health service stays open for probes.
//!
//! A call that passes carries its caller's [`Caller`] identity (a short
//! hash of its token, never the token) as a request extension: a lease is
//! bound to the identity that took it, and quarantine is recorded by it.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Client,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }
}

/// The accepted tokens. Empty lists with `enabled = false` mean no auth
/// (only allowed on loopback, see `serve`).
#[derive(Clone, Default)]
pub struct Tokens {
    worker: Vec<Vec<u8>>,
    client: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens {{ worker: {} token(s), client: {} token(s) }}", self.worker.len(), self.client.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Tokens of one role from a file (one per line; blank lines and `#`
/// comments skipped) or a comma-separated environment variable.
pub fn load_tokens(file: Option<&Path>, env_var: &str) -> Result<Vec<String>, TokenError> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|source| TokenError::Read { path: p.to_owned(), source })?,
        None => std::env::var(env_var).unwrap_or_default().replace(',', "\n"),
    };
    let tokens: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    if let Some(t) = tokens.iter().find(|t| t.len() < 16) {
        return Err(TokenError::Invalid(format!(
            "a {} token is {} characters long; use at least 16 (e.g. `openssl rand -hex 32`)",
            env_var,
            t.len()
        )));
    }
    Ok(tokens)
}

impl Tokens {
    pub fn new(worker: Vec<String>, client: Vec<String>) -> Self {
        Self {
            worker: worker.into_iter().map(String::into_bytes).collect(),
            client: client.into_iter().map(String::into_bytes).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.worker.is_empty() && self.client.is_empty()
    }

    fn role_of(&self, token: &[u8]) -> Option<Role> {
        // Check every token (no early exit) so timing says nothing about
        // which list, or which entry, matched.
        let mut found = None;
        for (role, list) in [(Role::Worker, &self.worker), (Role::Client, &self.client)] {
            for t in list {
                if bool::from(t.as_slice().ct_eq(token)) {
                    found = Some(role);
                }
            }
        }
        found
    }
}

/// The identity of an authenticated caller: the first 8 bytes of the
/// SHA-256 of its token, in hex. Attached to each request by the
/// interceptor; absent (read as empty) when authentication is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    /// The identity of the token `token` (what a lease records as its holder).
    pub fn of_token(token: &str) -> Caller {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"sweep.caller.v1\0");
        h.update(token.trim().as_bytes());
        Caller(hex::encode(&h.finalize()[..8]))
    }

    /// The identity the interceptor attached to `req` (empty without auth).
    pub fn of<T>(req: &Request<T>) -> String {
        req.extensions().get::<Caller>().map(|c| c.0.clone()).unwrap_or_default()
    }
}

/// Checks calls against the tokens; `None` disables auth.
#[derive(Clone, Debug, Default)]
pub struct Auth(Option<Arc<Tokens>>);

impl Auth {
    pub fn new(tokens: Option<Tokens>) -> Self {
        Self(tokens.filter(|t| !t.is_empty()).map(Arc::new))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    pub fn check<T>(&self, req: &Request<T>, needed: Role) -> Result<(), Status> {
        self.authenticate(req, needed).map(|_| ())
    }

    /// [`Auth::check`], returning the caller's identity (`None` without auth).
    pub fn authenticate<T>(&self, req: &Request<T>, needed: Role) -> Result<Option<Caller>, Status> {
        let Some(tokens) = &self.0 else { return Ok(None) };
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "?".into());
        let presented =
            req.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = presented else {
            tracing::warn!(%peer, role = needed.as_str(), "call refused: no bearer token");
            return Err(Status::unauthenticated("missing bearer token (set SWEEP_TOKEN or --token-file)"));
        };
        match tokens.role_of(token.trim().as_bytes()) {
            Some(role) if role == needed => Ok(Some(Caller::of_token(token))),
            Some(role) => {
                tracing::warn!(%peer, presented_role = role.as_str(), needed = needed.as_str(), "call refused: token of the wrong role");
                Err(Status::permission_denied(format!(
                    "a {} token cannot make {} calls",
                    role.as_str(),
                    needed.as_str()
                )))
            }
            None => {
                tracing::warn!(%peer, role = needed.as_str(), "call refused: unknown bearer token");
                Err(Status::unauthenticated("unknown bearer token"))
            }
        }
    }

    /// Whether `token` is one of the `role` tokens (constant time in the
    /// token's contents); always true without auth.
    pub fn accepts(&self, token: &str, role: Role) -> bool {
        match &self.0 {
            None => true,
            Some(tokens) => tokens.role_of(token.trim().as_bytes()) == Some(role),
        }
    }

    /// One `role` token, for an in-process client of this coordinator
    /// (the dashboard); `None` without auth.
    pub fn some_token(&self, role: Role) -> Option<String> {
        let tokens = self.0.as_ref()?;
        let list = match role {
            Role::Worker => &tokens.worker,
            Role::Client => &tokens.client,
        };
        list.first().map(|t| String::from_utf8_lossy(t).into_owned())
    }

    /// An interceptor that lets through only calls with a `role` token.
    pub fn interceptor(&self, role: Role) -> impl tonic::service::Interceptor + Clone {
        let auth = self.clone();
        move |mut req: Request<()>| {
            if let Some(caller) = auth.authenticate(&req, role)? {
                req.extensions_mut().insert(caller);
            }
            Ok(req)
        }
    }
}
