//! Protobuf <-> domain conversions. Wire input is untrusted: every
//! `TryFrom` here validates, and the error names the offending field.

use std::path::PathBuf;

use crate::v1 as pb;
use sweep_core::{DataConfig, Factors, GridError, GridSpec, InitScheme, RunConfig, TrainConfig, TrialSpec};

/// A wire message that does not make a valid domain value.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConvertError {
    ConvertError { field: field.to_owned(), message: message.into() }
}

fn init(field: &str, s: &str) -> Result<InitScheme, ConvertError> {
    s.parse().map_err(|m: String| err(field, m))
}

impl From<&TrainConfig> for pb::TrainSettings {
    fn from(t: &TrainConfig) -> Self {
        pb::TrainSettings {
            epochs: t.epochs,
            batch_size: t.batch_size,
            optimizer: t.optimizer.as_str().to_owned(),
            lr: t.lr,
            momentum: t.momentum,
            weight_decay: t.weight_decay,
            log_every: t.log_every,
            augment: t.augment,
        }
    }
}

impl TryFrom<pb::TrainSettings> for TrainConfig {
    type Error = ConvertError;
    fn try_from(t: pb::TrainSettings) -> Result<Self, ConvertError> {
        Ok(TrainConfig {
            epochs: t.epochs,
            batch_size: t.batch_size,
            optimizer: t.optimizer.parse().map_err(|m: String| err("train.optimizer", m))?,
            lr: t.lr,
            momentum: t.momentum,
            weight_decay: t.weight_decay,
            log_every: t.log_every,
            augment: t.augment,
        })
    }
}

impl From<&DataConfig> for pb::DataSettings {
    fn from(d: &DataConfig) -> Self {
        pb::DataSettings {
            dataset: d.dataset.clone(),
            path: d.path.to_string_lossy().into_owned(),
            train_subset: d.train_subset,
            test_subset: d.test_subset,
        }
    }
}

impl From<pb::DataSettings> for DataConfig {
    fn from(d: pb::DataSettings) -> Self {
        DataConfig {
            dataset: d.dataset,
            path: PathBuf::from(d.path),
            train_subset: d.train_subset,
            test_subset: d.test_subset,
        }
    }
}

impl From<&GridSpec> for pb::GridSpec {
    fn from(g: &GridSpec) -> Self {
        pb::GridSpec {
            name: g.name.clone(),
            seeds: g.seeds.clone(),
            grid: Some(pb::Factors {
                depth: g.grid.depth.clone(),
                skip: g.grid.skip.clone(),
                init: g.grid.init.iter().map(|i| i.as_str().to_owned()).collect(),
                batchnorm: g.grid.batchnorm.clone(),
            }),
            train: Some((&g.train).into()),
            data: Some((&g.data).into()),
            run: Some(pb::RunSettings {
                max_attempts: g.run.max_attempts,
                priority: g.run.priority,
                keep_weights: g.run.keep_weights,
            }),
        }
    }
}

impl TryFrom<pb::GridSpec> for GridSpec {
    type Error = ConvertError;
    fn try_from(g: pb::GridSpec) -> Result<Self, ConvertError> {
        let f = g.grid.ok_or_else(|| err("grid", "missing"))?;
        let run = g.run.ok_or_else(|| err("run", "missing"))?;
        let spec = GridSpec {
            name: g.name,
            seeds: g.seeds,
            grid: Factors {
                depth: f.depth,
                skip: f.skip,
                init: f.init.iter().map(|s| init("grid.init", s)).collect::<Result<_, _>>()?,
                batchnorm: f.batchnorm,
            },
            train: g.train.ok_or_else(|| err("train", "missing"))?.try_into()?,
            data: g.data.ok_or_else(|| err("data", "missing"))?.into(),
            run: RunConfig { max_attempts: run.max_attempts, priority: run.priority, keep_weights: run.keep_weights },
        };
        spec.validate().map_err(|e| from_grid_error("", e))?;
        Ok(spec)
    }
}

impl From<&TrialSpec> for pb::TrialSpec {
    fn from(t: &TrialSpec) -> Self {
        pb::TrialSpec {
            depth: t.depth,
            skip: t.skip,
            init: t.init.as_str().to_owned(),
            batchnorm: t.batchnorm,
            seed: t.seed,
            train: Some((&t.train).into()),
            data: Some((&t.data).into()),
        }
    }
}

impl TryFrom<pb::TrialSpec> for TrialSpec {
    type Error = ConvertError;
    fn try_from(t: pb::TrialSpec) -> Result<Self, ConvertError> {
        let spec = TrialSpec {
            depth: t.depth,
            skip: t.skip,
            init: init("spec.init", &t.init)?,
            batchnorm: t.batchnorm,
            seed: t.seed,
            train: t.train.ok_or_else(|| err("spec.train", "missing"))?.try_into()?,
            data: t.data.ok_or_else(|| err("spec.data", "missing"))?.into(),
        };
        // The grid's rules (depth, seed, training and data settings), from
        // their one copy in sweep-core.
        spec.validate().map_err(|e| from_grid_error("spec.", e))?;
        Ok(spec)
    }
}

/// A core validation error as a field error (`prefix` + the spec's key).
fn from_grid_error(prefix: &str, e: GridError) -> ConvertError {
    match e {
        GridError::Spec { key, message } => err(&format!("{prefix}{key}"), message),
        other => {
            let field = prefix.trim_end_matches('.');
            err(if field.is_empty() { "spec" } else { field }, other.to_string())
        }
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> tonic::Status {
        tonic::Status::invalid_argument(e.to_string())
    }
}
