//! Who may use the dashboard: with client tokens configured, a client token
//! (as `Authorization: Bearer ...`, or given once to the login form, which
//! sets an HttpOnly session cookie). A POST must come from the dashboard's
//! own pages: not from another site (`Sec-Fetch-Site`, `Origin`), and with
//! this process's CSRF token in its form.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use sweep_coordinator::auth::{Auth, Role};

use super::pages::layout;
use super::App;
use crate::tables::html_escape;

const COOKIE: &str = "sweep_session";
/// Sessions kept at once; the oldest is forgotten first.
const MAX_SESSIONS: usize = 1000;

/// The dashboard's auth state.
pub(crate) struct Gate {
    auth: Auth,
    /// Random, per process: a form's proof it came from our page.
    pub csrf: String,
    sessions: Mutex<VecDeque<String>>,
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Gate {
    pub(crate) fn new(auth: Auth) -> Gate {
        Gate { auth, csrf: random_hex(), sessions: Mutex::new(VecDeque::new()) }
    }

    fn allowed(&self, headers: &HeaderMap) -> bool {
        if !self.auth.enabled() {
            return true;
        }
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| self.auth.accepts(t, Role::Client)) {
            return true;
        }
        let session = cookie(headers, COOKIE);
        let sessions = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        session.is_some_and(|s| sessions.iter().any(|k| constant_eq(k.as_bytes(), s.as_bytes())))
    }

    fn new_session(&self) -> String {
        let id = random_hex();
        let mut sessions = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sessions.len() == MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(id.clone());
        id
    }

    /// Whether a form's CSRF field is this process's token.
    pub(crate) fn csrf_ok(&self, presented: &str) -> bool {
        constant_eq(presented.as_bytes(), self.csrf.as_bytes())
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
}

/// A POST from another site (a browser says so), or whose `Origin` is not
/// this host.
fn cross_site(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), host) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            origin_host != host
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Every request: POSTs only from our own pages; pages only with a token
/// (the login form and the static files excepted).
pub(super) async fn require(State(app): State<App>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST && cross_site(req.headers()) {
        return (StatusCode::FORBIDDEN, "refused: a request from another site").into_response();
    }
    let path = req.uri().path();
    if path == "/login" || path.starts_with("/assets/") || app.gate.allowed(req.headers()) {
        return next.run(req).await;
    }
    if req.method() == Method::GET && !path.ends_with(".json") && !path.ends_with("/events") {
        return Redirect::to("/login").into_response();
    }
    (StatusCode::UNAUTHORIZED, "a client token is needed (Authorization: Bearer ..., or log in at /login)")
        .into_response()
}

pub(super) async fn login_form(State(app): State<App>) -> Html<String> {
    Html(form(&app, None))
}

fn form(app: &App, error: Option<&str>) -> String {
    let body = if app.gate.auth.enabled() {
        let error = error.map(|e| format!("<p class=\"error\">{}</p>", html_escape(e))).unwrap_or_default();
        format!(
            "{error}<form method=\"post\" action=\"/login\"><label>Client token <input type=\"password\" \
             name=\"token\" autocomplete=\"current-password\" required></label> <button>Log in</button></form>\
             <p>The token is one of the coordinator's client tokens (SWEEP_CLIENT_TOKENS or \
             --client-tokens-file). It is checked once; the browser then keeps a session cookie.</p>"
        )
    } else {
        "<p>This coordinator has no tokens: no login is needed. <a href=\"/\">Go to the sweeps</a>.</p>".to_owned()
    };
    layout("Log in", &body)
}

#[derive(serde::Deserialize)]
pub(super) struct Login {
    token: String,
}

pub(super) async fn login(State(app): State<App>, Form(login): Form<Login>) -> Response {
    if !app.gate.auth.enabled() || !app.gate.auth.accepts(&login.token, Role::Client) {
        let page = form(&app, Some("That is not a client token of this coordinator."));
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    let session = app.gate.new_session();
    let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}
