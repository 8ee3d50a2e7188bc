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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped when the layout or meaning of fields changes.
pub const FORMAT_VERSION: u32 = 1;

/// The training position and bookkeeping stored with the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
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

/// The newest complete checkpoint in `dir`, if any. A missing folder is no
/// checkpoint; an unreadable `meta.json` in the newest one is an error
/// (it means the folder was tampered with, not a crash mid-write).
pub fn latest(dir: &Path) -> Result<Option<Found>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
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
        return Ok(None);
    };
    let meta_path = ckpt.join("meta.json");
    let text =
        std::fs::read_to_string(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    if meta.version != FORMAT_VERSION {
        return Err(format!(
            "{}: checkpoint format {} (this worker reads {FORMAT_VERSION})",
            meta_path.display(),
            meta.version
        ));
    }
    Ok(Some(Found { dir: ckpt, meta }))
}

fn sync_file(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
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
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let result = (|| {
        write_tensors(&tmp)?;
        let meta_path = tmp.join("meta.json");
        let json = serde_json::to_vec_pretty(meta).map_err(|e| e.to_string())?;
        std::fs::write(&meta_path, json).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        for f in ["weights.ot", "optimizer.ot", "meta.json"] {
            sync_file(&tmp.join(f))?;
        }
        if target.exists() {
            // Same global step means the same optimiser steps from the same
            // start: the state is the one already on disk. Keep that one
            // rather than open a window with no checkpoint at all.
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(());
        }
        std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
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
