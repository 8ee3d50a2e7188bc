//! Trial checkpoints: weights, optimiser state and training position,
//! written so that a crash at any moment leaves either the previous complete
//! checkpoint or the new complete one, never a mix.
//!
//! Layout inside the trial's checkpoint folder:
//!
//! ```text
//! ckpt-000000012500/       one complete checkpoint, named by global step
//!     weights.ot           VarStore::save (parameters and BN running stats)
//!     optimizer.ot         optimiser state tensors (see super::optim)
//!     meta.json            CheckpointMeta
//! ```
//!
//! A checkpoint is written into `.ckpt-<step>.tmp-<pid>/`, each file synced,
//! then the folder is renamed into place (atomic on POSIX) and the parent
//! synced; only then are older checkpoints removed. Loading picks the
//! highest step among `ckpt-*` folders, so the pointer is the name itself.
//!
//! `meta.json` records the coordinator database (`store_id`) and trial it
//! was written for: the trainer resumes only from a checkpoint that the
//! database leasing the trial vouches for (`TrialJob::may_resume`). Once a
//! trial's result is acknowledged the daemon deletes the folder, except
//! `final/` (`weights.ot` and `meta.json` with the spec) when the sweep
//! keeps its final weights.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped when the layout or meaning of fields changes. 2: records the
/// coordinator database (`store_id`) and trial it was written for.
pub const FORMAT_VERSION: u32 = 2;

/// The training position and bookkeeping stored with the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
    /// Identity of the coordinator database the trial was leased from: a
    /// checkpoint is resumed only under the same database, which vouches
    /// for its step.
    pub store_id: String,
    /// The trial it belongs to.
    pub trial_id: String,
    /// The trial's canonical spec: a checkpoint of another spec is refused.
    pub spec: String,
    /// The epoch (1-based) to continue with.
    pub next_epoch: u32,
    /// The batch within `next_epoch` to continue with (0 after an epoch end).
    pub next_batch: u64,
    /// Batches trained so far (the metric step of the last one).
    pub global_step: i64,
    /// `sgd` or `adam`, and its step count.
    pub optimizer: String,
    pub optimizer_steps: i64,
    /// Shuffling and augmentation randomness is derived from (seed, epoch,
    /// batch) alone, so this seed is the whole RNG state needed to resume
    /// identically; libtorch's own RNG is only used for initialisation.
    pub rng_seed: u64,
    pub rng_scheme: String,
    /// The partial train-loss logging window at the checkpoint, so the next
    /// logged mean still covers `log_every` batches after a resume.
    pub window_loss_sum: f64,
    pub window_batches: u64,
    pub last_train_loss: Option<f64>,
    pub last_test_loss: Option<f64>,
    pub last_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    /// Training wall time spent before this checkpoint, over all attempts.
    pub wall_seconds: f64,
}

/// A checkpoint found on disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub dir: PathBuf,
    pub meta: CheckpointMeta,
}

impl Found {
    pub fn weights(&self) -> PathBuf {
        self.dir.join("weights.ot")
    }
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join("optimizer.ot")
    }
}

fn step_of(name: &str) -> Option<i64> {
    name.strip_prefix("ckpt-")?.parse().ok()
}

/// What [`latest`] found in a trial's checkpoint folder.
#[derive(Debug, Clone)]
pub enum Latest {
    /// No checkpoint (or no folder).
    None,
    /// The newest complete checkpoint, in this worker's format.
    Found(Box<Found>),
    /// The newest checkpoint is of another format version: ignored (the
    /// caller logs `reason` and starts from scratch).
    OtherFormat { dir: PathBuf, reason: String },
}

/// The newest complete checkpoint in `dir`, if any. A missing folder is no
/// checkpoint; a checkpoint of another format version is reported as
/// such; an unreadable `meta.json` of this version is an error (it means
/// the folder was tampered with, not a crash mid-write).
pub fn latest(dir: &Path) -> Result<Latest, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Latest::None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut best: Option<(i64, PathBuf)> = None;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = step_of(&name) {
            if best.as_ref().is_none_or(|(s, _)| step > *s) {
                best = Some((step, e.path()));
            }
        }
    }
    let Some((_, ckpt)) = best else {
        return Ok(Latest::None);
    };
    let meta_path = ckpt.join("meta.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(FORMAT_VERSION as u64) {
        let shown = version.map_or_else(|| "without a version".to_owned(), |v| v.to_string());
        return Ok(Latest::OtherFormat {
            dir: ckpt,
            reason: format!("checkpoint format {shown}, this worker reads format {FORMAT_VERSION}"),
        });
    }
    let meta: CheckpointMeta = serde_json::from_value(value).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    Ok(Latest::Found(Box::new(Found { dir: ckpt, meta })))
}

/// Writes the final weights of a succeeded trial into `<dir>/final/`
/// (`weights.ot` through `write_weights`, and `meta.json` with `meta_json`),
/// replacing any earlier copy. Same atomic pattern as [`save`].
pub fn save_final(
    dir: &Path,
    meta_json: &serde_json::Value,
    write_weights: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let target = dir.join(crate::trainer::FINAL_DIR);
    let tmp = dir.join(format!(".final.tmp-{}", std::process::id()));
    let staged = Staged { dir, tmp: &tmp, target: &target, files: &["weights.ot", "meta.json"], keep_existing: false };
    staged.write(meta_json, write_weights)?;
    Ok(target)
}

/// A folder written into `tmp` and renamed to `target` inside `dir`.
struct Staged<'a> {
    dir: &'a Path,
    tmp: &'a Path,
    target: &'a Path,
    /// What the folder holds once written (`meta.json` among them); each
    /// is synced before the rename.
    files: &'a [&'a str],
    /// An existing `target` is kept (and the new copy dropped) instead of
    /// replaced.
    keep_existing: bool,
}

impl Staged<'_> {
    /// `write_files(tmp)` writes the data files, then `meta` goes into
    /// `meta.json`; everything is synced, renamed into place and the parent
    /// synced. On error `tmp` is removed.
    fn write(
        &self,
        meta: &impl Serialize,
        write_files: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), String> {
        let (tmp, target) = (self.tmp, self.target);
        let _ = std::fs::remove_dir_all(tmp);
        std::fs::create_dir_all(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let result = (|| {
            write_files(tmp)?;
            let meta_path = tmp.join("meta.json");
            let json = serde_json::to_vec_pretty(meta).map_err(|e| e.to_string())?;
            std::fs::write(&meta_path, json).map_err(|e| format!("{}: {e}", meta_path.display()))?;
            for f in self.files {
                sync_file(&tmp.join(f))?;
            }
            if self.keep_existing && target.exists() {
                let _ = std::fs::remove_dir_all(tmp);
                return Ok(());
            }
            let _ = std::fs::remove_dir_all(target);
            std::fs::rename(tmp, target).map_err(|e| format!("{}: {e}", target.display()))?;
            let _ = std::fs::File::open(self.dir).and_then(|d| d.sync_all());
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(tmp);
        }
        result
    }
}

fn sync_file(path: &Path) -> Result<(), String> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a checkpoint atomically. `write_tensors(dir)` saves `weights.ot`
/// and `optimizer.ot` into the temporary folder it is given.
pub fn save(
    dir: &Path,
    meta: &CheckpointMeta,
    write_tensors: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = format!("ckpt-{:012}", meta.global_step);
    let target = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // An existing target has the same global step, so the same optimiser
    // steps from the same start: the state is the one already on disk. Keep
    // that one rather than open a window with no checkpoint at all.
    let staged = Staged {
        dir,
        tmp: &tmp,
        target: &target,
        files: &["weights.ot", "optimizer.ot", "meta.json"],
        keep_existing: true,
    };
    staged.write(meta, write_tensors)?;
    // Older checkpoints are no longer needed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if step_of(&n).is_some_and(|s| s < meta.global_step) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(target)
}
