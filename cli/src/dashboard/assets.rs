//! The dashboard's static files, compiled in: no CDN, it works offline.
//! uPlot 1.6.31 is vendored from the npm registry (`cli/assets/uplot/`,
//! with its MIT licence and checksums in `cli/assets/README.md`).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &str)] = &[
    ("uplot.js", "text/javascript", include_str!("../../assets/uplot/uPlot.iife.min.js")),
    ("uplot.css", "text/css", include_str!("../../assets/uplot/uPlot.min.css")),
    ("uplot-LICENSE.txt", "text/plain", include_str!("../../assets/uplot/LICENSE")),
    ("app.js", "text/javascript", include_str!("../../assets/dashboard/app.js")),
    ("style.css", "text/css", include_str!("../../assets/dashboard/style.css")),
];

pub(super) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "max-age=3600")], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
