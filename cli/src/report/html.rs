//! `sweep report --html FILE`: one self-contained page (no scripts, no
//! external files): the tables, the notes, and the pictures inlined as SVG.

use super::plots::Pic;
use super::FullReport;
use crate::tables::{html, html_escape};

const STYLE: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;\
padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1em;font-size:14px}\
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}\
tr:nth-child(even) td{background:#fafafa}.caption{color:#555;font-size:13px;margin-top:-.5em}\
figure{margin:1.5em 0}figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:13px}\
ul.notes li{margin:.3em 0}";

pub(super) fn page(r: &FullReport, pics: &[Pic]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Sweep {} report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>Sweep <code>{}</code></h1>\n",
        html_escape(&r.sweep_id),
        html_escape(&r.sweep_id)
    );
    let tables = super::render::tables(r);
    if let Some(first) = tables.first() {
        out += &html(first);
    }
    out += "<h2>Notes</h2>\n<ul class=\"notes\">\n";
    for n in &r.notes {
        out += &format!("<li>{}</li>\n", html_escape(n));
    }
    out += "</ul>\n";
    for t in tables.iter().skip(1) {
        out += &html(t);
    }
    out += "<h2>Pictures</h2>\n";
    if pics.is_empty() {
        out += "<p>No pictures: no trial has finished with logged metrics yet.</p>\n";
    }
    for p in pics {
        // The SVG documents start with an XML declaration, which is not
        // allowed inside HTML: inline from the <svg> element on.
        let svg = p.svg.find("<svg").map(|i| &p.svg[i..]).unwrap_or(&p.svg);
        out += &format!(
            "<figure id=\"{}\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
            html_escape(&p.name),
            html_escape(&p.title)
        );
    }
    out += "</body>\n</html>\n";
    out
}
