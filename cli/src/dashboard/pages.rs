//! The dashboard's pages, rendered on the server (tables need no script):
//! the sweeps, one sweep (progress, live curves, the report's tables, its
//! trials), one trial (configuration, results, provenance, output), the
//! workers, and the full report with its pictures.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use sweep_core::{SweepResults, TrialResult};
use sweep_proto::v1 as pb;

use super::App;
use crate::report::{self, ReportArgs};
use crate::tables::html_escape as esc;

/// A page that could not be made: its status and what to say.
pub(super) struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.0, Html(layout("Error", &format!("<p class=\"error\">{}</p>", esc(&self.1))))).into_response()
    }
}

impl From<tonic::Status> for PageError {
    fn from(s: tonic::Status) -> Self {
        let code = match s.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        PageError(code, s.message().to_owned())
    }
}

impl From<crate::Failure> for PageError {
    fn from(f: crate::Failure) -> Self {
        let message = f.message();
        let code = if message.contains("NotFound") { StatusCode::NOT_FOUND } else { StatusCode::BAD_GATEWAY };
        PageError(code, message)
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> Self {
        PageError(StatusCode::BAD_GATEWAY, crate::failure::chain_text(&e))
    }
}

type Page = Result<Html<String>, PageError>;

/// A whole page around `body`.
pub(super) fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{t} · sweep</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/style.css\">\n<link rel=\"stylesheet\" href=\"/assets/uplot.css\">\n\
         </head>\n<body>\n<nav><a href=\"/\">Sweeps</a> <a href=\"/workers\">Workers</a></nav>\n<h1>{t}</h1>\n{body}\n\
         <script src=\"/assets/uplot.js\"></script>\n<script src=\"/assets/app.js\"></script>\n</body>\n</html>\n",
        t = esc(title)
    )
}

async fn client(
    app: &App,
) -> Result<pb::sweep_service_client::SweepServiceClient<sweep_proto::client::AuthChannel>, PageError> {
    Ok(crate::commands::connect(&app.grpc).await?)
}

fn progress(c: &pb::StateCounts) -> String {
    let total = c.queued + c.running + c.succeeded + c.diverged + c.failed + c.cancelled;
    let done = c.succeeded + c.diverged + c.failed + c.cancelled;
    format!(
        "<progress value=\"{done}\" max=\"{}\"></progress> <span class=\"counts\">{done}/{total} done: \
         {} succeeded, {} diverged, {} failed, {} cancelled; {} running, {} queued</span>",
        total.max(1),
        c.succeeded,
        c.diverged,
        c.failed,
        c.cancelled,
        c.running,
        c.queued
    )
}

pub(super) async fn sweeps(State(app): State<App>) -> Page {
    let resp = client(&app).await?.status(pb::StatusRequest { sweep_id: String::new() }).await?.into_inner();
    let mut body = String::from(
        "<table id=\"sweeps\"><thead><tr><th>sweep</th><th>progress</th><th>state</th></tr></thead><tbody>\n",
    );
    for s in &resp.sweeps {
        let c = s.counts.unwrap_or_default();
        body += &format!(
            "<tr><td><a href=\"/sweeps/{id}\">{name}</a></td><td>{}</td><td>{}</td></tr>\n",
            progress(&c),
            esc(crate::commands::sweep_state(s)),
            id = urlencode(&s.sweep_id),
            name = esc(&s.sweep_id),
        );
    }
    body += "</tbody></table>\n";
    if resp.sweeps.is_empty() {
        body += "<p>No sweeps yet: <code>sweep submit grid.toml</code>.</p>\n";
    }
    Ok(Html(layout("Sweeps", &body)))
}

/// The sweep's status (counts and running trials).
async fn status_of(app: &App, sweep: &str) -> Result<pb::SweepStatus, PageError> {
    let resp = client(app).await?.status(pb::StatusRequest { sweep_id: sweep.to_owned() }).await?.into_inner();
    resp.sweeps.into_iter().next().ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("no sweep {sweep:?}")))
}

pub(super) async fn sweep(State(app): State<App>, Path(sweep): Path<String>) -> Page {
    let status = status_of(&app, &sweep).await?;
    let results = report::fetch(&sweep, false, &app.grpc).await?;
    let c = status.counts.unwrap_or_default();
    let id = urlencode(&sweep);
    let mut body = format!("<p id=\"progress\">{}</p>\n", progress(&c));
    if !status.finished {
        body += &format!(
            "<form method=\"post\" action=\"/sweeps/{id}/cancel\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button id=\"cancel\">Cancel this sweep</button></form>\n",
            esc(&app.gate.csrf)
        );
    }
    body += &format!(
        "<h2>Training loss per cell (live)</h2>\n<div id=\"curves\" data-sweep=\"{}\" data-points=\"0\"></div>\n\
         <noscript><p>The live curves need JavaScript; the tables below do not.</p></noscript>\n",
        esc(&sweep)
    );
    body += "<section id=\"report\">\n";
    body += &match report::build(results.clone(), &ReportArgs::default()) {
        Ok(r) => report::tables_html(&r),
        Err(e) => format!("<p>No results to compare yet ({}).</p>\n", esc(&e.to_string())),
    };
    body += "</section>\n";
    body += &format!(
        "<p><a href=\"/sweeps/{id}/report\">The full report with its pictures</a> · \
         <a href=\"/sweeps/{id}/report.json\">JSON</a> (as <code>sweep report --format json</code>)</p>\n"
    );
    body += &trials_table(&sweep, &results);
    Ok(Html(layout(&format!("Sweep {sweep}"), &body)))
}

fn trials_table(sweep: &str, results: &SweepResults) -> String {
    let mut out = String::from(
        "<h2>Trials</h2>\n<table id=\"trials\"><thead><tr><th>trial</th><th>cell</th><th>seed</th><th>state</th>\
         <th>test accuracy</th><th>final values</th></tr></thead><tbody>\n",
    );
    for t in &results.trials {
        let finals: Vec<String> = t.finals.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
        out += &format!(
            "<tr><td><a href=\"/sweeps/{}/trials/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            urlencode(sweep),
            esc(&t.trial_id),
            esc(t.trial_id.get(..8).unwrap_or(&t.trial_id)),
            esc(&cell_label(&t.cell, &t.trainer)),
            t.seed,
            t.state.as_str(),
            t.final_test_accuracy.map(|a| format!("{:.2}%", a * 100.0)).unwrap_or_default(),
            esc(&finals.join(", ")),
        );
    }
    out + "</tbody></table>\n"
}

/// `lr=0.1 hidden=64`, in the trainer's labels.
pub(super) fn cell_label(cell: &sweep_core::Cell, trainer: &str) -> String {
    let schema =
        if trainer == sweep_core::exec::SCHEMA.trainer { &sweep_core::exec::SCHEMA } else { sweep_core::schema() };
    cell.label(schema)
}

pub(super) async fn report_page(State(app): State<App>, Path(sweep): Path<String>) -> Result<Response, PageError> {
    let results = report::fetch(&sweep, true, &app.grpc).await?;
    let r = report::build(results, &ReportArgs::default())?;
    // Plotting is CPU work: off the async threads.
    let page = tokio::task::spawn_blocking(move || report::page(&r))
        .await
        .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Html(page).into_response())
}

pub(super) async fn report_json(State(app): State<App>, Path(sweep): Path<String>) -> Result<Response, PageError> {
    let results = report::fetch(&sweep, false, &app.grpc).await?;
    let r = report::build(results, &ReportArgs::default())?;
    Ok(Json(report::json(&r)).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct CancelForm {
    csrf: String,
}

pub(super) async fn cancel(
    State(app): State<App>,
    Path(sweep): Path<String>,
    Form(form): Form<CancelForm>,
) -> Result<Response, PageError> {
    if !app.gate.csrf_ok(&form.csrf) {
        return Err(PageError(StatusCode::FORBIDDEN, "refused: the form's CSRF token is not this dashboard's".into()));
    }
    client(&app).await?.cancel(pb::CancelRequest { sweep_id: sweep.clone() }).await?;
    Ok(Redirect::to(&format!("/sweeps/{}", urlencode(&sweep))).into_response())
}

pub(super) async fn trial(State(app): State<App>, Path((sweep, trial)): Path<(String, String)>) -> Page {
    let results = report::fetch(&sweep, false, &app.grpc).await?;
    let t = results
        .trials
        .iter()
        .find(|t| t.trial_id == trial)
        .ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("no trial {trial:?} in sweep {sweep:?}")))?;
    let logs = client(&app).await?.logs(pb::LogsRequest { trial_id: trial.clone() }).await?.into_inner();
    let mut body = format!("<p>Sweep <a href=\"/sweeps/{}\">{}</a></p>\n", urlencode(&sweep), esc(&sweep));
    body += &definition_list("Configuration", config_rows(t));
    body += &definition_list("Result", result_rows(t));
    body += &definition_list(
        "Provenance",
        vec![
            ("code", t.provenance.code_version.clone()),
            ("libtorch", t.provenance.libtorch.clone()),
            ("device", format!("{} ({})", t.device, t.provenance.device_name)),
            ("dataset sha256", t.provenance.dataset_sha256.clone()),
        ],
    );
    body += "<h2>Output</h2>\n";
    if logs.attempts.is_empty() {
        body += "<p>No captured output (only exec trials capture it).</p>\n";
    }
    for a in &logs.attempts {
        body += &format!(
            "<h3>Attempt {} on {}</h3>\n<pre class=\"log\">{}</pre>\n",
            a.attempt,
            esc(&a.worker_id),
            esc(&crate::printable::printable_lines(&a.text))
        );
    }
    Ok(Html(layout(&format!("Trial {}", t.trial_id), &body)))
}

fn config_rows(t: &TrialResult) -> Vec<(&'static str, String)> {
    vec![
        ("trainer", t.trainer.clone()),
        ("cell", cell_label(&t.cell, &t.trainer)),
        ("seed", t.seed.to_string()),
        ("settings", t.settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")),
    ]
}

fn result_rows(t: &TrialResult) -> Vec<(&'static str, String)> {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    vec![
        ("state", t.state.as_str().to_owned()),
        ("final test accuracy", f(t.final_test_accuracy)),
        ("final test loss", f(t.final_test_loss)),
        ("final train loss", f(t.final_train_loss)),
        ("final values", t.finals.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")),
        ("wall seconds", f(t.wall_seconds)),
    ]
}

fn definition_list(title: &str, rows: Vec<(&'static str, String)>) -> String {
    let mut out = format!("<h2>{}</h2>\n<table class=\"kv\">\n", esc(title));
    for (k, v) in rows {
        out += &format!("<tr><th>{}</th><td>{}</td></tr>\n", esc(k), esc(&v));
    }
    out + "</table>\n"
}

pub(super) async fn workers(State(app): State<App>) -> Page {
    let resp = client(&app).await?.workers(pb::WorkersRequest {}).await?.into_inner();
    let mut body = String::from(
        "<table id=\"workers\"><thead><tr><th>worker</th><th>device</th><th>slots</th><th>running</th>\
         <th>failed in a row</th></tr></thead><tbody>\n",
    );
    for w in &resp.workers {
        let running: Vec<String> = w.running.iter().map(|r| format!("{}: {}", r.sweep_id, r.label)).collect();
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>\n",
            esc(&w.worker_id),
            esc(&w.device),
            w.slots,
            esc(&if running.is_empty() { "idle".to_owned() } else { running.join("; ") }),
            w.failures_in_a_row,
            if w.quarantined { " QUARANTINED" } else { "" }
        );
    }
    body += "</tbody></table>\n";
    if resp.workers.is_empty() {
        body += "<p>No workers heard from within two lease TTLs.</p>\n";
    }
    Ok(Html(layout("Workers", &body)))
}

/// `s` for a URL path segment (sweep names are printable; this keeps
/// `/`, `?`, `#`, `%` and spaces from changing the path).
pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}
