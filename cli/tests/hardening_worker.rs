//! Worker hardening acceptance tests (issue 8) through `sweep run`: the
//! real CLI, a real coordinator, a real `sweep-worker` training with
//! libtorch on tiny synthetic data (`sweep-worker synth-data`). Results are
//! read back from the run's SQLite file afterwards.
//!
//! - acceptance 1: a diverging trial ends as `diverged` within seconds, and
//!   `sweep run` prints its report and exits (bug 1);
//! - acceptance 3: the same grid run against two fresh databases with one
//!   shared checkpoint folder trains twice and stores the full loss curve
//!   both times, although the first run's checkpoint is on disk (bug 3);
//!   and a succeeded trial's checkpoints are deleted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::sweep_run;
use sweep_coordinator::store::{MetricRow, SqliteStore, Store, TrialRecord, TrialState};

/// Synthetic data of `train` and `test` examples in `dir`, and the grid
/// `<dir>/<name>.toml` over all of it: one seed, `sections` (`[grid]`,
/// `[train]`, ...), then the `[data]` section.
fn grid_over_synth_data(dir: &Path, name: &str, sizes: (u32, u32), sections: &str) -> PathBuf {
    common::grid_over_synth_data(dir, name, sizes, &format!("seeds = [1]\n{sections}"))
}

/// Waits for `child` at most `limit` (killing it then, and failing); also
/// returns how long it took.
fn finish(child: std::process::Child, limit: Duration, what: &str) -> (Output, Duration) {
    let t0 = Instant::now();
    let out = common::finish(child, limit, what);
    (out, t0.elapsed())
}

fn read_back(db: &Path, sweep: &str) -> (TrialRecord, Vec<MetricRow>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&format!("sqlite://{}", db.display())).await.unwrap();
        let t = store.trials(sweep).await.unwrap().remove(0);
        let m = store.metrics(&t.trial_id).await.unwrap();
        (t, m)
    })
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn worker_log(state: &Path) -> String {
    std::fs::read_to_string(state.join("logs").join("worker-0.log")).unwrap_or_default()
}

/// Acceptance 1: depth 8, no skips, no batch norm, lr 1e12: the loss turns
/// NaN within a few steps. The trial ends as `diverged` (not a hang, not a
/// crash), `sweep run` prints the report and exits, the stored metrics hold
/// `diverged_step` and nothing non-finite.
#[test]
fn a_diverging_trial_ends_as_diverged_and_sweep_run_exits_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_over_synth_data(
        dir.path(),
        "blowup",
        (32, 16),
        "[grid]\ndepth = 8\nskip = false\ninit = \"default\"\nbatchnorm = false\n\
         [train]\nepochs = 2\nbatch_size = 4\nlr = 1e12\nmomentum = 0.9\nlog_every = 1\naugment = false\n",
    );
    let state = dir.path().join("state");
    let db = dir.path().join("blowup.db");
    let child = sweep_run(&grid, &state, &db).spawn().unwrap();
    // "Within seconds" on an idle machine; generous here for loaded CI.
    let (out, took) = finish(child, Duration::from_secs(180), "sweep run of a diverging trial");
    let all = text(&out);
    assert!(!out.status.success(), "a diverged trial is not a success: {all}");
    assert!(
        all.contains("diverged"),
        "the report or summary does not say diverged:\n{all}\nworker log:\n{}",
        worker_log(&state)
    );

    let (t, metrics) = read_back(&db, "blowup");
    assert_eq!(t.state, TrialState::Diverged, "{t:?}\n{all}\nworker log:\n{}", worker_log(&state));
    assert_eq!(t.summary.final_train_loss, None, "{t:?}");
    assert!(metrics.iter().all(|m| m.value.is_finite()), "a non-finite point was stored: {metrics:?}");
    let d: Vec<&MetricRow> = metrics.iter().filter(|m| m.name == "diverged_step").collect();
    assert_eq!(d.len(), 1, "{metrics:?}");
    assert_eq!(d[0].value, d[0].step as f64);
    assert!(d[0].step >= 1 && d[0].step <= 16, "{d:?}");
    assert!(
        metrics.iter().filter(|m| m.name == "train_loss").all(|m| m.step < d[0].step),
        "a train_loss point at or after the divergence: {metrics:?}"
    );
    println!("diverged at step {} ; sweep run took {took:?}", d[0].step);
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// Copies the first complete checkpoint seen under `root` (trial folder /
/// `ckpt-*`) to `aside/<trial>/<ckpt>`; `true` once one was copied whole.
fn snapshot_checkpoint(root: &Path, aside: &Path) -> bool {
    let Ok(trials) = std::fs::read_dir(root) else { return false };
    for t in trials.flatten() {
        let Ok(entries) = std::fs::read_dir(t.path()) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("ckpt-") {
                continue;
            }
            let tmp = aside.join(".copying");
            let _ = std::fs::remove_dir_all(&tmp);
            // The training may delete it under us: then try the next one.
            if copy_dir(&e.path(), &tmp).is_ok()
                && ["weights.ot", "optimizer.ot", "meta.json"].iter().all(|f| tmp.join(f).is_file())
            {
                let dest = aside.join(t.file_name()).join(&name);
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::rename(&tmp, &dest).unwrap();
                return true;
            }
        }
    }
    false
}

/// Acceptance 3: the first run's checkpoint (copied aside while it ran,
/// since a succeeded trial's checkpoints are deleted) is put back before a
/// second run of the same grid against a fresh database. The second run
/// must not resume from it: full loss curve from step 1, fresh wall time,
/// and the worker's log says the checkpoint was ignored.
#[test]
fn the_same_grid_against_a_fresh_database_trains_again_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_over_synth_data(
        dir.path(),
        "twice",
        (64, 16),
        "[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n\
         [train]\nepochs = 3\nbatch_size = 8\nlr = 0.01\nlog_every = 1\naugment = false\n",
    );
    let state = dir.path().join("state");
    let ckroot = state.join("checkpoints");
    let aside = dir.path().join("aside");
    let steps: Vec<i64> = (1..=24).collect();

    // Run 1, against database A, copying a checkpoint aside while it runs.
    let db_a = dir.path().join("a.db");
    let mut child = sweep_run(&grid, &state, &db_a).spawn().unwrap();
    let mut copied = false;
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(300) {
        if !copied {
            copied = snapshot_checkpoint(&ckroot, &aside);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (out, _) = finish(child, Duration::from_secs(10), "first sweep run");
    assert!(out.status.success(), "first run: {}\nworker log:\n{}", text(&out), worker_log(&state));
    assert!(copied, "no checkpoint was seen while the first run trained");
    let (t1, m1) = read_back(&db_a, "twice");
    assert_eq!(t1.state, TrialState::Succeeded);
    let mut s1: Vec<i64> = m1.iter().filter(|m| m.name == "train_loss").map(|m| m.step).collect();
    s1.sort();
    assert_eq!(s1, steps, "first run's loss curve");
    // A succeeded trial's checkpoints are deleted once its result is acknowledged.
    let trial_dir = ckroot.join(&t1.trial_id);
    assert!(
        !trial_dir.exists(),
        "checkpoints kept after success: {:?}",
        std::fs::read_dir(&trial_dir).ok().map(std::iter::Iterator::count)
    );

    // Put the first run's checkpoint back: a stale checkpoint really is there.
    let planted = aside.join(&t1.trial_id);
    assert!(planted.is_dir(), "the copied checkpoint is not of trial {}", t1.trial_id);
    copy_dir(&std::fs::read_dir(&planted).unwrap().next().unwrap().unwrap().path(), &{
        let name = std::fs::read_dir(&planted).unwrap().next().unwrap().unwrap().file_name();
        trial_dir.join(name)
    })
    .unwrap();
    assert!(std::fs::read_dir(&trial_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("ckpt-")));

    // Run 2, same grid, same checkpoint folder, fresh database B.
    let db_b = dir.path().join("b.db");
    let child = sweep_run(&grid, &state, &db_b).spawn().unwrap();
    let (out, took) = finish(child, Duration::from_secs(300), "second sweep run");
    let log = worker_log(&state);
    assert!(out.status.success(), "second run: {}\nworker log:\n{log}", text(&out));
    let (t2, m2) = read_back(&db_b, "twice");
    assert_eq!(t2.trial_id, t1.trial_id, "trial IDs are content hashes: the same trial");
    assert_eq!(t2.state, TrialState::Succeeded);
    assert_eq!(t2.resumed_step, Some(0), "the second run resumed: {t2:?}\n{log}");
    let mut s2: Vec<i64> = m2.iter().filter(|m| m.name == "train_loss").map(|m| m.step).collect();
    s2.sort();
    assert_eq!(s2, steps, "second run's loss curve\n{log}");
    for name in ["test_accuracy", "grad_norm/stem"] {
        assert!(m2.iter().any(|m| m.name == name && m.step >= 1), "no {name} in the second run");
    }
    let wall = t2.summary.wall_seconds;
    assert!(wall > 0.0 && wall <= took.as_secs_f64(), "wall time {wall} s is not this run's own ({took:?})");
    assert!(log.contains("ignoring checkpoint"), "the worker did not log that it ignored the checkpoint:\n{log}");
    assert!(!trial_dir.exists(), "checkpoints kept after the second success");
}

/// `[run] keep_weights = true`: once the result is acknowledged the
/// checkpoints go, and only `<checkpoint dir>/<trial>/final/` stays, with
/// the final weights and the spec they were trained with. (Needs the
/// coordinator to pass `keep_weights` on in the lease.)
#[test]
fn keep_weights_keeps_only_the_final_weights() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid_over_synth_data(
        dir.path(),
        "keep",
        (16, 8),
        "[grid]\ndepth = 8\nskip = true\ninit = \"default\"\nbatchnorm = true\n\
         [train]\nepochs = 2\nbatch_size = 8\nlog_every = 1\n[run]\nkeep_weights = true\n",
    );
    let state = dir.path().join("state");
    let db = dir.path().join("keep.db");
    let child = sweep_run(&grid, &state, &db).spawn().unwrap();
    let (out, _) = finish(child, Duration::from_secs(300), "sweep run with keep_weights");
    assert!(out.status.success(), "{}\nworker log:\n{}", text(&out), worker_log(&state));
    let (t, _) = read_back(&db, "keep");
    let trial_dir = state.join("checkpoints").join(&t.trial_id);
    let mut left: Vec<String> =
        std::fs::read_dir(&trial_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, vec!["final".to_owned()], "only the final weights stay");
    assert!(trial_dir.join("final/weights.ot").metadata().unwrap().len() > 0);
    let meta: String = std::fs::read_to_string(trial_dir.join("final/meta.json")).unwrap();
    assert!(meta.contains(&t.trial_id) && meta.contains("\"spec\""), "{meta}");
}
