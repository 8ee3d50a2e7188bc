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
    /// The worker's `--data-root`, which replaces `data.path`.
    pub data_root: Option<&'a Path>,
}

pub(super) fn environment(
    job: &TrialJob,
    spec: &ExecSpec,
    place: &Place,
    resume: Option<i64>,
    device: &str,
) -> Vec<(String, String)> {
    let Place { checkpoint_dir, config, socket, data_root } = *place;
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
        env.push(("SWEEP_DATA_DIR".into(), path(data_root.unwrap_or(&job.spec.data.path))));
    }
    for (prefix, levels) in [("SWEEP_FACTOR_", &job.spec.cell.0), ("SWEEP_SETTING_", &job.spec.train)] {
        for (k, v) in levels {
            env.push((format!("{prefix}{}", k.to_ascii_uppercase()), level_text(v)));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn trial(resume: Option<i64>, data: bool) -> (TrialJob, ExecSpec) {
        let data = if data { "[data]\npath = \"/data/set\"\n" } else { "" };
        let text = format!(
            "name = \"e\"\nseeds = [7]\n[trainer]\nkind = \"exec\"\ncommand = [\"python\"]\nargs = [\"--lr={{lr}}\"]\n\
             env = {{ A = \"1\" }}\n[grid]\nlr = [0.5]\nmodel = \"mlp\"\n[train]\nepochs = 3\n{data}"
        );
        let grid = sweep_core::GridSpec::parse(&text, Path::new("/g/grid.toml")).unwrap();
        let sweep_core::TrainerSpec::Exec(spec) = grid.trainer.clone() else { panic!("exec") };
        let job = TrialJob {
            trial_id: "t1".into(),
            spec: grid.expand().remove(0),
            attempt: 2,
            checkpoint_dir: PathBuf::from("/ck/t1"),
            store_id: "s".into(),
            resume_step: resume,
            keep_weights: false,
        };
        (job, spec)
    }

    #[test]
    fn a_trial_reaches_its_command_as_variables_and_json() {
        let (job, spec) = trial(Some(40), true);
        let place = Place {
            checkpoint_dir: Path::new("/ck/t1"),
            config: Path::new("/tmp/x/trial.json"),
            socket: Path::new("/tmp/x/m.sock"),
            data_root: Some(Path::new("/local/data")),
        };
        let env: std::collections::BTreeMap<String, String> =
            environment(&job, &spec, &place, Some(32), "cuda:0").into_iter().collect();
        for (k, v) in [
            ("A", "1"),
            ("SWEEP_FACTOR_LR", "0.5"),
            ("SWEEP_FACTOR_MODEL", "mlp"),
            ("SWEEP_SETTING_EPOCHS", "3"),
            ("SWEEP_SEED", "7"),
            ("SWEEP_ATTEMPT", "2"),
            ("SWEEP_RESUME_STEP", "32"),
            ("SWEEP_DEVICE", "cuda:0"),
            ("SWEEP_DATA_DIR", "/local/data"),
            ("SWEEP_METRICS_SOCKET", "/tmp/x/m.sock"),
        ] {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        let config: serde_json::Value =
            serde_json::from_str(&config_json(&job, place.checkpoint_dir, Some(32))).unwrap();
        assert_eq!(config["config"]["lr"], 0.5);
        assert_eq!(config["config"]["epochs"], 3);
        assert_eq!(config["resume_step"], 32);
        assert_eq!(config["seed"], 7);

        let (job, spec) = trial(None, false);
        let env: std::collections::BTreeMap<String, String> =
            environment(&job, &spec, &Place { data_root: None, ..place }, None, "cpu").into_iter().collect();
        assert!(!env.contains_key("SWEEP_RESUME_STEP") && !env.contains_key("SWEEP_DATA_DIR"));
    }
}
