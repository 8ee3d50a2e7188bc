//! The archive checker (`sweep_core::archive::Checker`): what an import
//! refuses before anything is stored, each refusal naming its line.

use sweep_core::archive::{ArchiveError, Checker, LineSplitter, FORMAT, MAX_LINE_BYTES, VERSION};
use sweep_core::GridSpec;

fn header(sweep: &str) -> String {
    format!(r#"{{"header":{{"format":"{FORMAT}","version":{VERSION},"sweep":"{sweep}","exported_ms":1}}}}"#)
}

fn grid(name: &str) -> GridSpec {
    GridSpec::parse(
        &format!(
            "name = \"{name}\"\nseeds = 2\n[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n\
             [data]\npath = \"/data\"\n"
        ),
        std::path::Path::new("g.toml"),
    )
    .unwrap()
}

fn sweep_row(id: &str) -> String {
    let spec = serde_json::to_string(&grid(id)).unwrap();
    serde_json::json!({"sweep": {"id": id, "spec_json": spec, "max_attempts": 3, "priority": 0,
        "cancelled": false, "created_ms": 1, "keep_weights": false, "adaptive": false}})
    .to_string()
}

fn settings_row(sweep: &str) -> (String, String) {
    let g = grid(sweep);
    let (hash, json) = sweep_core::stored::shared_settings(&g.train, &g.data, &g.trainer);
    (hash.clone(), serde_json::json!({"settings": {"hash": hash, "settings_json": json}}).to_string())
}

/// Trial `seed` (0 or 1) of the grid, as an archive line (state and
/// sweep as given).
fn trial(seed: usize, sweep: &str, state: &str) -> (String, String) {
    let g = grid("s");
    let spec = g.expand().remove(seed);
    let id = spec.id("s").0;
    let (hash, _) = sweep_core::stored::shared_settings(&g.train, &g.data, &g.trainer);
    let line = serde_json::json!({"trial": {
        "id": id, "identity": id, "sweep_id": sweep, "cell_key": spec.cell_key("s"), "seq": 1,
        "cell": spec.cell.canonical(), "seed": spec.seed, "spec_json": sweep_core::stored::own_part(&spec),
        "settings_hash": hash, "priority": 0, "max_attempts": 3, "state": state,
        "attempts": 1, "failures": 0, "infra_failures": 0, "handbacks": 0, "lease_id": null, "worker_id": null,
        "holder": null, "lease_expires_ms": null, "last_error": null, "progress_epoch": null, "progress_step": null,
        "progress_loss": null, "started_ms": null, "finished_ms": null, "final_train_loss": null,
        "final_test_loss": null, "final_test_accuracy": 0.5, "best_test_accuracy": null, "wall_seconds": null,
        "resumed_step": null, "checkpoint_step": null, "device": null, "threads": null, "code_version": null,
        "libtorch": null, "device_name": null, "dataset_sha256": null}})
    .to_string();
    (id, line)
}

fn point(trial: &str, step: i64) -> String {
    format!(r#"{{"point":{{"trial_id":"{trial}","name":"train_loss","step":{step},"epoch":0,"value":0.1}}}}"#)
}

/// Feeds `lines`; the first error, or the checker's verdict at the end.
fn check(lines: &[String]) -> Result<(), ArchiveError> {
    let mut c = Checker::new();
    for l in lines {
        c.line(l.as_bytes())?;
    }
    c.finish().map(|_| ())
}

fn err(lines: &[String]) -> String {
    check(lines).unwrap_err().to_string()
}

#[test]
fn a_whole_archive_passes_and_its_counts_are_checked() {
    let (t1, t1_line) = trial(0, "s", "succeeded");
    let (t2, t2_line) = trial(1, "s", "queued");
    let (first, second) = if t1 < t2 { (&t1, &t2) } else { (&t2, &t1) };
    let ok = vec![
        header("s"),
        sweep_row("s"),
        settings_row("s").1,
        t1_line,
        t2_line,
        point(first, 1),
        point(first, 2),
        point(second, 1),
        r#"{"end":{"trials":2,"points":3}}"#.to_owned(),
    ];
    check(&ok).unwrap();
    let mut wrong = ok.clone();
    wrong[8] = r#"{"end":{"trials":2,"points":4}}"#.to_owned();
    assert!(err(&wrong).starts_with("line 9: the end counts 2 trials and 4 points"), "{}", err(&wrong));
    let cut = &ok[..7];
    assert!(err(cut).contains("truncated"), "{}", err(cut));
    let mut extra = ok.clone();
    extra.push(point(first, 3));
    assert!(err(&extra).contains("line 10: text after the end record"), "{}", err(&extra));
    // Points out of key order, or the same point twice.
    let mut twice = ok.clone();
    twice[6] = point(first, 1);
    let e = err(&twice);
    assert!(e.contains("line 7: point") && e.contains("train_loss") && e.contains("out of order or twice"), "{e}");
}

#[test]
fn order_references_and_rows_the_store_cannot_read_are_refused_by_line() {
    let settings = settings_row("s").1;
    let base = [header("s"), sweep_row("s"), settings.clone()];
    let with = |more: &[String]| base.iter().cloned().chain(more.iter().cloned()).collect::<Vec<_>>();
    let (t1, t1_line) = trial(0, "s", "succeeded");
    // A point before the trials.
    assert!(err(&with(&[point(&t1, 1)])).contains("line 4: a point of trial"));
    // Trials after points.
    let e = err(&with(&[t1_line.clone(), point(&t1, 1), trial(1, "s", "succeeded").1]));
    assert!(e.contains("line 6: out of order"), "{e}");
    // Another sweep's trial; an unknown state; twice.
    assert!(err(&with(&[trial(0, "other", "succeeded").1])).contains("belongs to sweep \"other\""));
    assert!(err(&with(&[trial(0, "s", "finished").1])).contains("line 4: trial"));
    assert!(err(&with(&[t1_line.clone(), t1_line.clone()])).contains("line 5: trial"));
    // IDs that are not the store's: a path, and an identity that is not
    // the spec's ID.
    let path = t1_line.replace(&format!("\"id\":\"{t1}\""), "\"id\":\"../../home\"");
    assert!(err(&with(&[path])).contains("not 32 lowercase hex digits"));
    let other_identity =
        t1_line.replace(&format!("\"identity\":\"{t1}\""), &format!("\"identity\":\"{}\"", "0".repeat(32)));
    assert!(err(&with(&[other_identity])).contains("its identity is not its spec's ID"));
    // A stored spec the store could not read, and settings under a wrong hash.
    let unreadable = t1_line.replace("\"spec_json\":\"{", "\"spec_json\":\"{\\\"x\\\":1,");
    let e = err(&with(&[unreadable]));
    assert!(e.contains("stored spec cannot be read"), "{e}");
    let bad_hash = settings.replacen("\"hash\":\"", "\"hash\":\"0", 1);
    assert!(err(&[header("s"), sweep_row("s"), bad_hash]).contains("the hash is not their SHA-256"));
    let no_settings =
        t1_line.replace(&format!("\"settings_hash\":\"{}\"", settings_row("s").0), "\"settings_hash\":null");
    assert!(err(&with(&[no_settings])).contains("no settings_hash"));
    // A device or provenance a coordinator would have refused from a worker.
    let nul_device = t1_line.replace("\"device\":null", "\"device\":\"cpu\\u0000\"");
    assert!(err(&with(&[nul_device])).contains("its device holds a control character"));
    let tab_libtorch = t1_line.replace("\"libtorch\":null", "\"libtorch\":\"2.11\\t\"");
    assert!(err(&with(&[tab_libtorch])).contains("its libtorch holds a control character"));
    // The header first, in this format and version.
    assert!(err(&[sweep_row("s")]).contains("line 1: out of order: the sweep comes right after the header"));
    let newer = header("s").replace(&format!("\"version\":{VERSION}"), "\"version\":99");
    assert!(err(&[newer]).contains("version 99"));
    let other = header("s").replace(FORMAT, "something-else");
    assert!(err(&[other]).contains("not a sweep archive"));
    // The sweep named by the header, with a grid that validates.
    assert!(err(&[header("s"), sweep_row("t")]).contains("line 2: sweep \"t\", but the header says \"s\""));
    let bad_grid = sweep_row("s").replace("\\\"max_attempts\\\":3", "\\\"max_attempts\\\":0");
    let e = err(&[header("s"), bad_grid]);
    assert!(e.starts_with("line 2: sweep.spec_json"), "{e}");
    // Unknown fields and non-JSON.
    let unknown = t1_line.replace("\"seed\":", "\"seeed\":");
    assert!(err(&with(&[unknown])).contains("line 4: not an archive record"));
    assert!(err(&with(&["not json".to_owned()])).contains("line 4: not an archive record"));
}

#[test]
fn the_line_splitter_joins_pieces_cut_anywhere_and_bounds_a_line() {
    let text = b"one\ntwo\nthree";
    for cut in 1..text.len() {
        let mut s = LineSplitter::default();
        let mut lines = Vec::new();
        for piece in text.chunks(cut) {
            s.push(piece);
            while let Some(l) = s.next_line().unwrap() {
                lines.push(String::from_utf8(l.to_vec()).unwrap());
            }
        }
        assert_eq!(lines, ["one", "two"], "cut {cut}");
        assert_eq!(s.rest(), b"three");
    }
    let mut s = LineSplitter::default();
    s.push(&vec![b'x'; MAX_LINE_BYTES + 1]);
    assert_eq!(s.next_line(), Err(MAX_LINE_BYTES + 1));
}
