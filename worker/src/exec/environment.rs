//! What an exec command is given: its trial as a JSON file
//! (`SWEEP_TRIAL_CONFIG`) and its environment (`SWEEP_*` variables, the
//! grid's `env`; the worker's own `SWEEP_*` variables, such as its token,
//! are not passed on).

use std::path::Path;

use sweep_core::exec::{level_text, ExecSpec};

use crate::trainer::TrialJob;

/// The trial as JSON (`SWEEP_TRIAL_CONFIG`).
pub(super) fn config_json(job: &TrialJob, checkpoint_dir: &Path, resume: Option<i64>) -> String {
    let mut config = serde_json::Map::new();
    for (k, v) in job.spec.train.iter().chain(job.spec.cell.iter()) {
        config.insert(k.clone(), serde_json::to_value(v).unwrap_or_default());
    }
    let data = (!job.spec.data.is_none()).then_some(&job.spec.data);
    serde_json::json!({
        "trial_id": job.trial_id,
        "attempt": job.attempt,
        "seed": job.spec.seed,
        "factors": job.spec.cell,
        "settings": job.spec.train,
        "config": config,
        "data": data,
        "checkpoint_dir": checkpoint_dir,
        "resume_step": resume,
    })
    .to_string()
}

/// The command's environment: the worker's, the grid's `env`, and the
/// trial's `SWEEP_*` variables (which win).
/// Where a run's files are.
pub(super) struct Place<'a> {
    pub checkpoint_dir: &'a Path,
    pub config: &'a Path,
    pub socket: &'a Path,
}

pub(super) fn environment(
    job: &TrialJob,
    spec: &ExecSpec,
    place: &Place,
    resume: Option<i64>,
    device: &str,
) -> Vec<(String, String)> {
    let Place { checkpoint_dir, config, socket } = *place;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("SWEEP_TRIAL_ID".into(), job.trial_id.clone()),
        ("SWEEP_ATTEMPT".into(), job.attempt.to_string()),
        ("SWEEP_SEED".into(), job.spec.seed.to_string()),
        ("SWEEP_TRIAL_CONFIG".into(), path(config)),
        ("SWEEP_METRICS_SOCKET".into(), path(socket)),
        ("SWEEP_CHECKPOINT_DIR".into(), path(checkpoint_dir)),
        ("SWEEP_DEVICE".into(), device.to_owned()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ]);
    if let Some(step) = resume {
        env.push(("SWEEP_RESUME_STEP".into(), step.to_string()));
    }
    if !job.spec.data.is_none() {
        env.push(("SWEEP_DATA_DIR".into(), path(&job.spec.data.path)));
    }
    for (prefix, levels) in [("SWEEP_FACTOR_", &job.spec.cell.0), ("SWEEP_SETTING_", &job.spec.train)] {
        for (k, v) in levels {
            env.push((format!("{prefix}{}", k.to_ascii_uppercase()), level_text(v)));
        }
    }
    env
}
