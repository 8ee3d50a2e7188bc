//! The archive checker (`sweep_core::archive::Checker`): what an import
//! refuses before anything is stored, each refusal naming its line.

use sweep_core::archive::{ArchiveError, Checker, FORMAT, VERSION};

fn header(sweep: &str) -> String {
    format!(r#"{{"header":{{"format":"{FORMAT}","version":{VERSION},"sweep":"{sweep}","exported_ms":1}}}}"#)
}

fn sweep_row(id: &str) -> String {
    let spec = serde_json::json!({
        "name": id, "seeds": [0],
        "factors": [{"name": "depth", "levels": [8]}, {"name": "skip", "levels": [true]},
                    {"name": "init", "levels": ["default"]}, {"name": "batchnorm", "levels": [true]}],
        "train": {"augment": false, "batch_size": 16, "epochs": 1, "log_every": 1, "lr": 0.0001,
                  "momentum": 0.9, "optimizer": "sgd", "weight_decay": 0.0}, "data": {"dataset": "cifar10", "path": "data", "train_subset": null, "test_subset": null},
        "run": {"max_attempts": 3, "priority": 0, "keep_weights": false}
    });
    serde_json::json!({"sweep": {"id": id, "spec_json": spec.to_string(), "max_attempts": 3, "priority": 0,
        "cancelled": false, "created_ms": 1, "keep_weights": false, "adaptive": false}})
    .to_string()
}

fn trial(id: &str, sweep: &str, state: &str, settings: Option<&str>) -> String {
    serde_json::json!({"trial": {
        "id": id, "identity": id, "sweep_id": sweep, "cell_key": "k", "seq": 1, "cell": "{}", "seed": 0,
        "spec_json": "{}", "settings_hash": settings, "priority": 0, "max_attempts": 3, "state": state,
        "attempts": 1, "failures": 0, "infra_failures": 0, "handbacks": 0, "lease_id": null, "worker_id": null,
        "holder": null, "lease_expires_ms": null, "last_error": null, "progress_epoch": null, "progress_step": null,
        "progress_loss": null, "started_ms": null, "finished_ms": null, "final_train_loss": null,
        "final_test_loss": null, "final_test_accuracy": 0.5, "best_test_accuracy": null, "wall_seconds": null,
        "resumed_step": null, "checkpoint_step": null, "device": null, "threads": null, "code_version": null,
        "libtorch": null, "device_name": null, "dataset_sha256": null}})
    .to_string()
}

fn point(trial: &str) -> String {
    format!(r#"{{"point":{{"trial_id":"{trial}","name":"train_loss","step":1,"epoch":0,"value":0.1}}}}"#)
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
    let ok = vec![
        header("s"),
        sweep_row("s"),
        r#"{"settings":{"hash":"h","settings_json":"{}"}}"#.to_owned(),
        trial("t1", "s", "succeeded", Some("h")),
        trial("t2", "s", "queued", None),
        point("t1"),
        point("t2"),
        r#"{"end":{"trials":2,"points":2}}"#.to_owned(),
    ];
    check(&ok).unwrap();
    let mut wrong = ok.clone();
    wrong[7] = r#"{"end":{"trials":2,"points":3}}"#.to_owned();
    assert!(err(&wrong).starts_with("line 8: the end counts 2 trials and 3 points"), "{}", err(&wrong));
    let cut = &ok[..6];
    assert!(err(cut).contains("truncated"), "{}", err(cut));
    let mut extra = ok.clone();
    extra.push(point("t1"));
    assert!(err(&extra).contains("line 9: text after the end record"), "{}", err(&extra));
}

#[test]
fn order_references_and_versions_are_refused_by_line() {
    let base = [header("s"), sweep_row("s")];
    let with = |more: &[String]| base.iter().cloned().chain(more.iter().cloned()).collect::<Vec<_>>();
    // A point before the trials.
    assert!(err(&with(&[point("t1")])).contains("line 3: a point of trial t1, which the archive does not hold"));
    // Trials after points.
    let e = err(&with(&[trial("t1", "s", "succeeded", None), point("t1"), trial("t2", "s", "succeeded", None)]));
    assert!(e.contains("line 5: out of order"), "{e}");
    // Another sweep's trial; an unknown state; unknown settings; twice.
    assert!(err(&with(&[trial("t1", "other", "succeeded", None)])).contains("belongs to sweep \"other\""));
    assert!(err(&with(&[trial("t1", "s", "finished", None)])).contains("line 3: trial t1"));
    assert!(err(&with(&[trial("t1", "s", "succeeded", Some("x"))])).contains("settings \"x\""));
    let twice = [trial("t1", "s", "succeeded", None), trial("t1", "s", "succeeded", None)];
    assert!(err(&with(&twice)).contains("line 4: trial t1 twice"));
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
    let unknown = trial("t1", "s", "succeeded", None).replace("\"seed\":", "\"seeed\":");
    assert!(err(&with(&[unknown])).contains("line 3: not an archive record"));
    assert!(err(&with(&["not json".to_owned()])).contains("line 3: not an archive record"));
}
