//! `sweep report` end to end: a real `sweep serve` over a database filled
//! through the real store (thousands of trials) rendered in every format,
//! and the pictures of a small sweep run with the simulated trainer.

mod common;

use common::{run_ok, sweep, worker_bin, Server};

use std::path::Path;
use std::time::Instant;

use sweep_coordinator::store::{FinalOutcome, MetricRow, SqliteStore, Store, TrialSummary};

/// splitmix64, for deterministic noise.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn noise(k: u64) -> f64 {
    (mix(k) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// 48 cells x 50 seeds = 2,400 trials through the real SQLite store: most
/// succeed with a depth/skip-dependent accuracy, depth 64 without skips
/// diverges for every 7th seed, and the last 12 trials are left running or
/// queued.
async fn populate(db: &Path) -> usize {
    let store = SqliteStore::open(&format!("sqlite://{}", db.display())).await.unwrap();
    let grid = sweep_core::GridSpec::parse(
        r#"
name = "big"
seeds = 50
[grid]
depth = [8, 16, 32, 64]
skip = [true, false]
init = ["default", "xavier_normal", "kaiming_normal"]
batchnorm = [true, false]
[data]
path = "data"
"#,
        Path::new("/tmp/big.toml"),
    )
    .unwrap();
    let out = store.submit(&grid, 1).await.unwrap();
    let total = out.total_trials as usize;
    let mut n = 0;
    while let Some(lease) = store.lease("w", 2, 3_600_000).await.unwrap() {
        n += 1;
        if n > total - 12 {
            if n % 2 == 0 {
                continue; // left running
            }
            break; // the rest stay queued
        }
        let s = &sweep_core::bmenet::resolve(&lease.spec).unwrap();
        let k = mix(s.seed ^ ((s.depth as u64) << 20) ^ ((s.skip as u64) << 30) ^ ((s.batchnorm as u64) << 31));
        let drop = if s.skip { 0.0 } else { s.depth as f64 / 200.0 };
        let acc = 0.8 - drop + if s.batchnorm { 0.02 } else { 0.0 } + 0.02 * noise(k);
        let loss = 0.5 + drop + 0.05 * noise(k ^ 1);
        let points: Vec<MetricRow> = (1..=4)
            .map(|i| MetricRow { step: i * 100, epoch: 1, name: "train_loss".into(), value: 2.3 / i as f64 + loss })
            .chain((0..3).map(|b| MetricRow {
                step: 400,
                epoch: 1,
                name: format!("grad_norm/{}", ["stem", "block01", "fc2"][b]),
                value: 0.1 * (b + 1) as f64,
            }))
            .collect();
        store.put_metrics(&lease.lease_id, &points, None).await.unwrap();
        let diverged = s.depth == 64 && !s.skip && s.seed.is_multiple_of(7);
        let summary = TrialSummary {
            final_train_loss: Some(loss),
            final_test_loss: Some(loss + 0.1),
            final_test_accuracy: (!diverged).then_some(acc),
            best_test_accuracy: (!diverged).then_some(acc + 0.01),
            wall_seconds: 10.0,
        };
        let outcome = if diverged { FinalOutcome::Diverged } else { FinalOutcome::Succeeded };
        store.complete(&lease.lease_id, outcome, &summary, 3).await.unwrap();
    }
    total
}

#[test]
fn report_over_thousands_of_stored_trials_renders_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let total = tokio::runtime::Runtime::new().unwrap().block_on(populate(&db));
    assert_eq!(total, 2400);
    let server = Server::start(&db);
    let report = |args: &[&str]| run_ok(sweep().args(["report", "big", "--coordinator", &server.url]).args(args));

    let started = Instant::now();
    let json = report(&["--format", "json"]);
    eprintln!("JSON report over {total} trials: {:?} (debug build, including process start)", started.elapsed());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["sweep_id"], "big");
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 48);
    let seeds: u64 = cells.iter().map(|c| c["seeds_total"].as_u64().unwrap()).sum();
    assert_eq!(seeds, 2400);
    for c in cells {
        for key in ["depth", "skip", "init", "batchnorm", "succeeded", "diverged", "failed", "running", "queued"] {
            assert!(!c[key].is_null(), "cell without {key}: {c}");
        }
        assert!(c["test_accuracy"]["n"].as_u64().unwrap() >= 30, "{c}");
    }
    // Main effects: depth (3 levels vs 8), skip, init (2 vs default), batchnorm.
    let main = v["main_effects"].as_array().unwrap();
    assert_eq!(main.len(), 3 + 1 + 2 + 1);
    let skip = main.iter().find(|m| m["factor"] == "skip").unwrap();
    assert_eq!((skip["level"].as_str(), skip["baseline"].as_str()), (Some("true"), Some("false")));
    let e = skip["effect"]["estimate"].as_f64().unwrap();
    // Skips help by depth/200 on average over depths 8..64: 0.15.
    assert!((e - 0.15).abs() < 0.01, "skip effect {e}");
    assert!(skip["effect"]["ci95_lo"].as_f64().unwrap() < e && e < skip["effect"]["ci95_hi"].as_f64().unwrap());
    assert!(skip["p_holm"].as_f64().unwrap() < 1e-6);
    // Interactions: skip at each depth (4), init (3), batchnorm (2).
    assert_eq!(v["interactions"].as_array().unwrap().len(), 9);
    // Paired comparisons: one per cell of the other factors (24).
    assert_eq!(v["paired"].as_array().unwrap().len(), 24);
    let notes = v["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(notes.contains("diverged") && notes.contains("NOT counted"), "{notes}");
    assert!(notes.contains("still queued or running"), "{notes}");
    assert!(notes.contains("Unbalanced seeds"), "{notes}");
    // Provenance: the thread dependence is said, diverged trials are listed,
    // and one row per trial carries device, threads and divergence step.
    assert!(
        notes.contains("number of libtorch threads") && notes.contains("Where the diverged trials diverged"),
        "{notes}"
    );
    let rows = v["trials"].as_array().unwrap();
    assert_eq!(rows.len(), 2400);
    for key in ["seed", "state", "device", "threads", "diverged_step", "train_images_used"] {
        assert!(rows[0].get(key).is_some(), "trial row without {key}: {}", rows[0]);
    }

    let table = report(&[]);
    for needle in
        ["Main effects", "Interactions: effect of skip on vs off", "Paired comparison", "depth=64", "diverged"]
    {
        assert!(table.contains(needle), "table lacks {needle:?}:\n{table}");
    }
    let md = report(&["--format", "markdown"]);
    assert!(md.contains("| depth | skip |") && md.contains("## Main effects"), "{md}");
    let csv = report(&["--format", "csv"]);
    assert_eq!(csv.lines().count(), 49);
    assert!(csv.starts_with("depth,skip,init,batchnorm,seeds_total,"));
    let tex = report(&["--format", "latex"]);
    assert!(
        tex.contains("\\begin{tabular}") && tex.contains("kaiming\\_normal") && tex.contains("\\bottomrule"),
        "{tex}"
    );
    assert_eq!(tex.matches("\\begin{table}").count(), tex.matches("\\end{table}").count());

    // Views: grouped, another baseline, another metric.
    let by = report(&["--by", "depth,skip"]);
    assert!(by.contains("by depth, skip") && by.contains("Means of cell means"), "{by}");
    let base = report(&["--baseline", "skip=true", "--format", "json"]);
    let base: serde_json::Value = serde_json::from_str(&base).unwrap();
    let skip = base["main_effects"].as_array().unwrap().iter().find(|m| m["factor"] == "skip").unwrap().clone();
    assert_eq!(skip["baseline"], "true");
    assert!(skip["effect"]["estimate"].as_f64().unwrap() < 0.0);
    let loss = report(&["--metric", "train_loss"]);
    assert!(loss.contains("Main effects on final train loss"), "{loss}");
    let out = sweep().args(["report", "big", "--baseline", "width=3", "--coordinator", &server.url]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("width"));

    // Pictures and the page over the big sweep.
    let figs = dir.path().join("figs");
    let page = dir.path().join("big.html");
    report(&["--out", figs.to_str().unwrap(), "--html", page.to_str().unwrap()]);
    for name in ["loss-curve", "accuracy-vs-depth", "gradient-flow"] {
        check_png(&figs.join(format!("{name}.png")));
        check_svg(&figs.join(format!("{name}.svg")));
    }
    for name in ["cells.csv", "effects.csv", "paired.csv"] {
        assert!(figs.join(name).exists(), "{name}");
    }
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 3);
}

#[test]
fn a_simulated_sweep_draws_the_three_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("pics.toml");
    std::fs::write(&grid, common::small_grid("pics", 3)).unwrap();
    let state = dir.path().join("state");
    run_ok(
        sweep()
            .arg("run")
            .arg(&grid)
            .args(["--workers", "2", "--simulate-step-ms", "1", "--format", "json", "--state-dir"])
            .arg(&state)
            .arg("--worker-bin")
            .arg(worker_bin()),
    );
    let server = Server::start(&state.join("pics.db"));
    let out = dir.path().join("figures");
    let page = dir.path().join("report.html");
    let text = run_ok(
        sweep().args(["report", "pics", "--coordinator", &server.url, "--out"]).arg(&out).arg("--html").arg(&page),
    );
    assert!(text.contains("Main effects"), "{text}");
    for name in ["loss-curve", "accuracy-vs-depth", "gradient-flow"] {
        check_png(&out.join(format!("{name}.png")));
        let svg = check_svg(&out.join(format!("{name}.svg")));
        let words = match name {
            "loss-curve" => ["Training loss", "iterations", "skip on"],
            "accuracy-vs-depth" => ["test accuracy", "depth", "skip off"],
            _ => ["Gradient flow", "log scale", "stem"],
        };
        for w in words {
            assert!(svg.contains(w), "{name}.svg lacks {w:?}");
        }
    }
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 3);
    assert!(!html.contains("<script") && !html.contains("<?xml"), "the page is self-contained HTML");
    assert!(html.contains("Paired comparison"));
}

/// A PNG signature, an IHDR chunk of the expected size, and an IEND chunk.
fn check_png(path: &Path) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    assert_eq!((w, h), (1100, 680), "{}", path.display());
    assert_eq!(&b[b.len() - 8..b.len() - 4], b"IEND", "{} is truncated", path.display());
    assert!(b.len() > 10_000, "{} is suspiciously small", path.display());
}

/// An SVG document: one root element, closed, with text in it.
fn check_svg(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body = s.find("<svg").map(|i| &s[i..]).unwrap_or_else(|| panic!("{} has no <svg>", path.display()));
    assert!(body.contains("xmlns=\"http://www.w3.org/2000/svg\""), "{}", path.display());
    assert!(s.trim_end().ends_with("</svg>"), "{} is not closed", path.display());
    assert_eq!(s.matches("<svg").count(), 1);
    assert!(s.matches("<text").count() > 10, "{} has too little text", path.display());
    s
}
