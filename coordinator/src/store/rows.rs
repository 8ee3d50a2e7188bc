//! SQL rows as read (`#[derive(sqlx::FromRow)]`, one struct per query
//! shape, fields named as the query's columns) and their conversion to
//! domain types: the store's one edge between SQL and the domain.
//!
//! Integers are read as `i64` (SQLite `INTEGER`, PostgreSQL `BIGINT`) and
//! narrowed here, saturating: a stored value is never trusted to fit.

use sweep_core::{CurveSums, GradFlowSums, TrialResult};

use super::spec::{stored_cell, stored_spec, stored_state};
use super::{Lease, LeaseOwner, MetricRow, Progress, RunningTrial, StoreError, TrialRecord, TrialSummary};

pub(crate) fn to_u32(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

fn to_u64(n: i64) -> u64 {
    n.max(0) as u64
}

/// A trial just leased (`lease_sql!`'s `RETURNING`).
#[derive(sqlx::FromRow)]
pub(crate) struct LeasedRow {
    pub id: String,
    pub sweep_id: String,
    /// With `sweep_id`, `settings_hash` and `checkpoint_step`: what the rest
    /// of a group lease must share with its first trial.
    pub cell_key: String,
    pub spec_json: String,
    pub settings_hash: Option<String>,
    pub attempts: i64,
    pub checkpoint_step: Option<i64>,
    /// The sweep's `run.keep_weights` (read with the lease).
    pub keep_weights: Option<bool>,
}

impl LeasedRow {
    pub(super) fn into_lease(self, lease_id: String, settings: Option<&str>) -> Result<Lease, StoreError> {
        Ok(Lease {
            spec: stored_spec(&self.id, &self.spec_json, settings)?,
            trial_id: self.id,
            lease_id,
            sweep_id: self.sweep_id,
            attempt: to_u32(self.attempts),
            resume_step: self.checkpoint_step,
            keep_weights: self.keep_weights.unwrap_or(false),
        })
    }
}

/// A lease's holder as stored (`LEASE_OWNER`, `COMPLETE`'s `RETURNING`):
/// its trial, identity and worker ID, and their quarantine count (NULL:
/// no row, 0).
pub(crate) fn lease_owner(
    trial_id: String,
    holder: Option<String>,
    worker_id: Option<String>,
    failures: Option<i64>,
) -> LeaseOwner {
    LeaseOwner {
        trial_id,
        holder: holder.unwrap_or_default(),
        worker_id: worker_id.unwrap_or_default(),
        failures_in_a_row: to_u32(failures.unwrap_or(0)),
    }
}

/// A trial just completed (`COMPLETE`'s `RETURNING`).
#[derive(sqlx::FromRow)]
pub(crate) struct CompletedRow {
    pub id: String,
    pub settings_hash: Option<String>,
    pub cell: String,
    pub holder: Option<String>,
    pub worker_id: Option<String>,
    /// The holder's quarantine count (NULL: none).
    pub failures: Option<i64>,
    pub sweep_id: String,
    /// Whether the sweep has a seed plan and is not cancelled.
    pub adaptive: Option<bool>,
}

/// A running trial (`RUNNING_ALL`, `RUNNING_ONE`).
#[derive(sqlx::FromRow)]
pub(crate) struct RunningRow {
    pub id: String,
    pub sweep_id: String,
    pub worker_id: Option<String>,
    pub spec_json: String,
    pub settings_json: Option<String>,
    pub attempts: i64,
    pub progress_epoch: Option<i64>,
    pub progress_step: Option<i64>,
    pub progress_loss: Option<f64>,
}

impl RunningRow {
    pub(super) fn into_running(self) -> Result<RunningTrial, StoreError> {
        Ok(RunningTrial {
            spec: stored_spec(&self.id, &self.spec_json, self.settings_json.as_deref())?,
            trial_id: self.id,
            worker_id: self.worker_id.unwrap_or_default(),
            attempt: to_u32(self.attempts),
            progress: Progress {
                epoch: to_u32(self.progress_epoch.unwrap_or(0)),
                step: self.progress_step.unwrap_or(0),
                loss: self.progress_loss,
            },
        })
    }
}

/// A stored trial (`TRIALS`).
#[derive(sqlx::FromRow)]
pub(crate) struct TrialRow {
    pub id: String,
    pub sweep_id: String,
    pub state: String,
    pub attempts: i64,
    pub failures: i64,
    pub infra_failures: i64,
    pub handbacks: i64,
    pub resumed_step: Option<i64>,
    pub last_error: Option<String>,
    pub worker_id: Option<String>,
    pub checkpoint_step: Option<i64>,
    pub device: Option<String>,
    pub threads: Option<i64>,
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: Option<f64>,
}

impl TryFrom<TrialRow> for TrialRecord {
    type Error = StoreError;
    fn try_from(r: TrialRow) -> Result<Self, StoreError> {
        Ok(TrialRecord {
            state: stored_state(&r.state)?,
            trial_id: r.id,
            sweep_id: r.sweep_id,
            attempts: to_u32(r.attempts),
            failures: to_u32(r.failures),
            infra_failures: to_u32(r.infra_failures),
            handbacks: to_u32(r.handbacks),
            resumed_step: r.resumed_step,
            last_error: r.last_error,
            worker_id: r.worker_id,
            checkpoint_step: r.checkpoint_step,
            device: r.device,
            threads: r.threads.map(to_u32),
            summary: TrialSummary {
                final_train_loss: r.final_train_loss,
                final_test_loss: r.final_test_loss,
                final_test_accuracy: r.final_test_accuracy,
                best_test_accuracy: r.best_test_accuracy,
                wall_seconds: r.wall_seconds.unwrap_or(0.0),
            },
        })
    }
}

/// A metric point (`METRICS`).
#[derive(sqlx::FromRow)]
pub(crate) struct MetricPointRow {
    pub step: i64,
    pub epoch: i64,
    pub name: String,
    pub value: f64,
}

impl From<MetricPointRow> for MetricRow {
    fn from(r: MetricPointRow) -> Self {
        MetricRow { step: r.step, epoch: to_u32(r.epoch), name: r.name, value: r.value }
    }
}

/// A metric point's value read as a count or step: finite and not negative.
fn point_value(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && *v >= 0.0)
}

/// One row of `TRIAL_FINALS`: the sweep LEFT JOIN its trials, so every
/// trial column is NULL for a sweep without trials.
#[derive(sqlx::FromRow)]
pub(crate) struct ResultRow {
    pub cell: Option<String>,
    pub cell_key: Option<String>,
    pub seed: Option<i64>,
    pub state: Option<String>,
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub device: Option<String>,
    pub threads: Option<i64>,
    pub diverged_step: Option<f64>,
    pub train_images_used: Option<f64>,
    pub trial_id: Option<String>,
    pub settings_hash: Option<String>,
    pub code_version: Option<String>,
    pub libtorch: Option<String>,
    pub device_name: Option<String>,
    pub dataset_sha256: Option<String>,
}

impl ResultRow {
    /// The trial's result (with its final values, from `finals` by trial
    /// ID); `None` for the row of a sweep without trials.
    /// `settings`: the sweep's shared settings (train settings and trainer
    /// kind) by hash; `cells`: the cells parsed so far, by their JSON.
    pub(super) fn into_result(
        self,
        finals: &mut std::collections::HashMap<String, std::collections::BTreeMap<String, f64>>,
        settings: &std::collections::HashMap<String, (sweep_core::Settings, &'static str)>,
        cells: &mut std::collections::HashMap<String, sweep_core::Cell>,
    ) -> Result<Option<TrialResult>, StoreError> {
        let (Some(cell), Some(state)) = (self.cell, self.state) else { return Ok(None) };
        let id = self.trial_id.unwrap_or_default();
        let hash = self.settings_hash.unwrap_or_default();
        let Some((settings, trainer)) = settings.get(&hash) else {
            return Err(StoreError::Corrupt(format!("trial {id}: its shared settings {hash:?} are missing")));
        };
        let cell = match cells.get(&cell) {
            Some(c) => c.clone(),
            None => {
                let parsed = stored_cell(&cell)?;
                cells.insert(cell, parsed.clone());
                parsed
            }
        };
        Ok(Some(TrialResult {
            trial_id: id.clone(),
            cell,
            cell_key: self.cell_key.unwrap_or_default(),
            seed: to_u64(self.seed.unwrap_or(0)),
            state: stored_state(&state)?,
            final_train_loss: self.final_train_loss,
            final_test_loss: self.final_test_loss,
            final_test_accuracy: self.final_test_accuracy,
            best_test_accuracy: self.best_test_accuracy,
            wall_seconds: self.wall_seconds,
            device: self.device.unwrap_or_default(),
            threads: self.threads.map_or(0, to_u32),
            diverged_step: point_value(self.diverged_step).map(|v| v as i64),
            train_images_used: point_value(self.train_images_used).map(|v| v as u64),
            settings: settings.clone(),
            provenance: sweep_core::Provenance {
                code_version: self.code_version.unwrap_or_default(),
                libtorch: self.libtorch.unwrap_or_default(),
                device_name: self.device_name.unwrap_or_default(),
                dataset_sha256: self.dataset_sha256.unwrap_or_default(),
            },
            trainer: (*trainer).to_owned(),
            finals: finals.remove(&id).unwrap_or_default(),
        }))
    }
}

/// One row of `FINALS`: a trial's `final/<name>` point.
#[derive(sqlx::FromRow)]
pub(crate) struct FinalRow {
    pub trial_id: String,
    pub name: String,
    pub value: f64,
}

/// One row of `CURVE`.
#[derive(sqlx::FromRow)]
pub(crate) struct CurveRow {
    pub cell: String,
    pub step: i64,
    pub n: i64,
    pub s: Option<f64>,
    pub q: Option<f64>,
}

impl CurveRow {
    pub(super) fn into_sums(self, metric: &str) -> Result<CurveSums, StoreError> {
        Ok(CurveSums {
            cell: stored_cell(&self.cell)?,
            metric: metric.to_owned(),
            step: self.step,
            n: to_u64(self.n),
            sum: self.s.unwrap_or(0.0),
            sum_sq: self.q.unwrap_or(0.0),
        })
    }
}

/// One row of `GRAD_FLOW`.
#[derive(sqlx::FromRow)]
pub(crate) struct GradFlowRow {
    pub cell: String,
    pub name: String,
    pub is_last: i32,
    pub n: i64,
    pub s: Option<f64>,
    pub q: Option<f64>,
    pub steps: Option<f64>,
}

impl TryFrom<GradFlowRow> for GradFlowSums {
    type Error = StoreError;
    fn try_from(r: GradFlowRow) -> Result<Self, StoreError> {
        let n = to_u64(r.n);
        Ok(GradFlowSums {
            cell: stored_cell(&r.cell)?,
            block: r.name.strip_prefix("grad_norm/").unwrap_or(&r.name).to_owned(),
            last: r.is_last == 1,
            n,
            sum: r.s.unwrap_or(0.0),
            sum_sq: r.q.unwrap_or(0.0),
            mean_step: r.steps.unwrap_or(0.0) / n.max(1) as f64,
        })
    }
}

/// A trial of a stratum, as an adaptive-seed plan judges it
/// (`STRATUM_RUNS`).
#[derive(sqlx::FromRow)]
pub(crate) struct StratumRunRow {
    pub cell: String,
    pub seed: i64,
    pub state: String,
    pub final_test_accuracy: Option<f64>,
}

impl TryFrom<StratumRunRow> for sweep_core::adaptive::Run {
    type Error = StoreError;
    fn try_from(r: StratumRunRow) -> Result<Self, StoreError> {
        let outcome = sweep_core::adaptive::Outcome::of(stored_state(&r.state)?, r.final_test_accuracy);
        Ok(sweep_core::adaptive::Run { cell: stored_cell(&r.cell)?, seed: to_u64(r.seed), outcome })
    }
}
