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

/// The unit a backend's context key measures its parts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyLength {
    /// UTF-8 bytes (SQLite: `length` of the text as a blob, which counts
    /// past a NUL).
    Bytes,
    /// Characters (PostgreSQL's `length`: its text holds no NUL, and its
    /// bytes are the server's encoding, not necessarily UTF-8).
    Chars,
}

/// A context key of the backend's `TRIAL_ROWS_SQL` read back: what some of
/// a sweep's trials share, each part as `<length>:<text>` (NULL read as
/// empty), in this order.
pub(crate) struct ContextKey<'a> {
    pub cell: &'a str,
    pub cell_key: &'a str,
    pub settings_hash: &'a str,
    pub device: &'a str,
    pub threads: &'a str,
    pub code_version: &'a str,
    pub libtorch: &'a str,
    pub device_name: &'a str,
    pub dataset_sha256: &'a str,
}

impl<'a> ContextKey<'a> {
    pub(super) fn parse(key: &'a str, unit: KeyLength) -> Result<ContextKey<'a>, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("a trial's context key {:?} does not parse", short(key)));
        let mut rest = key;
        let mut part = || -> Result<&'a str, StoreError> {
            let (len, text) = rest.split_once(':').ok_or_else(corrupt)?;
            let n: usize = len.parse().map_err(|_| corrupt())?;
            // The byte where the part ends: none if the text is shorter or
            // the count splits a character.
            let end = match unit {
                KeyLength::Bytes => Some(n).filter(|&end| text.is_char_boundary(end)),
                KeyLength::Chars => text.char_indices().map(|(i, _)| i).chain([text.len()]).nth(n),
            }
            .ok_or_else(corrupt)?;
            rest = &text[end..];
            Ok(&text[..end])
        };
        let key = ContextKey {
            cell: part()?,
            cell_key: part()?,
            settings_hash: part()?,
            device: part()?,
            threads: part()?,
            code_version: part()?,
            libtorch: part()?,
            device_name: part()?,
            dataset_sha256: part()?,
        };
        if !rest.is_empty() {
            return Err(corrupt());
        }
        Ok(key)
    }
}

fn short(text: &str) -> &str {
    text.char_indices().nth(80).map_or(text, |(i, _)| &text[..i])
}

/// A [`ContextKey`] as the domain shares it among its trials.
pub(crate) struct TrialContext {
    pub cell: std::sync::Arc<sweep_core::Cell>,
    /// The cell's canonical JSON (the trials' order).
    pub cell_json: String,
    pub cell_key: String,
    pub settings: std::sync::Arc<sweep_core::Settings>,
    pub trainer: &'static str,
    pub device: String,
    pub threads: u32,
    pub provenance: std::sync::Arc<sweep_core::Provenance>,
}

impl ContextKey<'_> {
    /// `settings`: the sweep's shared settings (train settings and trainer
    /// kind) by hash; `cells`: the cells parsed so far, by their JSON.
    pub(super) fn into_context(
        self,
        trial_id: &str,
        settings: &std::collections::HashMap<String, (std::sync::Arc<sweep_core::Settings>, &'static str)>,
        cells: &mut std::collections::HashMap<String, std::sync::Arc<sweep_core::Cell>>,
    ) -> Result<TrialContext, StoreError> {
        let Some((train, trainer)) = settings.get(self.settings_hash) else {
            return Err(StoreError::Corrupt(format!(
                "trial {trial_id}: its shared settings {:?} are missing",
                short(self.settings_hash)
            )));
        };
        let cell = match cells.get(self.cell) {
            Some(c) => c.clone(),
            None => {
                let parsed = std::sync::Arc::new(stored_cell(self.cell)?);
                cells.insert(self.cell.to_owned(), parsed.clone());
                parsed
            }
        };
        Ok(TrialContext {
            cell,
            cell_json: self.cell.to_owned(),
            cell_key: self.cell_key.to_owned(),
            settings: train.clone(),
            trainer,
            device: self.device.to_owned(),
            threads: self.threads.parse().map_or(0, to_u32),
            provenance: std::sync::Arc::new(sweep_core::Provenance {
                code_version: self.code_version.to_owned(),
                libtorch: self.libtorch.to_owned(),
                device_name: self.device_name.to_owned(),
                dataset_sha256: self.dataset_sha256.to_owned(),
            }),
        })
    }
}

/// One row of the backend's `TRIAL_ROWS_SQL`: a trial's own result values
/// and its [`ContextKey`]'s text.
#[derive(sqlx::FromRow)]
pub(crate) struct ResultRow {
    pub id: String,
    pub seed: i64,
    pub state: String,
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: Option<f64>,
    pub context: String,
}

/// A trial's report points (the backend's `REPORT_POINTS_SQL`), the newest
/// step's value of each name.
#[derive(Default)]
pub(crate) struct ReportPoints {
    pub diverged_step: Option<f64>,
    pub train_images_used: Option<f64>,
    pub finals: std::collections::BTreeMap<String, f64>,
}

/// One row of the backend's `REPORT_POINTS_SQL`.
#[derive(sqlx::FromRow)]
pub(crate) struct ReportPointRow {
    pub trial_id: String,
    pub name: String,
    pub value: f64,
}

impl ResultRow {
    /// The trial's result, with what it shares from `context` and its
    /// report points (taken from `points` by trial ID).
    pub(super) fn into_result(
        self,
        context: &TrialContext,
        points: &mut std::collections::HashMap<String, ReportPoints>,
    ) -> Result<TrialResult, StoreError> {
        let p = points.remove(&self.id).unwrap_or_default();
        Ok(TrialResult {
            cell: context.cell.clone(),
            cell_key: context.cell_key.clone(),
            seed: to_u64(self.seed),
            state: stored_state(&self.state)?,
            final_train_loss: self.final_train_loss,
            final_test_loss: self.final_test_loss,
            final_test_accuracy: self.final_test_accuracy,
            best_test_accuracy: self.best_test_accuracy,
            wall_seconds: self.wall_seconds,
            device: context.device.clone(),
            threads: context.threads,
            diverged_step: point_value(p.diverged_step).map(|v| v as i64),
            train_images_used: point_value(p.train_images_used).map(|v| v as u64),
            settings: context.settings.clone(),
            provenance: context.provenance.clone(),
            trainer: context.trainer.to_owned(),
            finals: p.finals,
            trial_id: self.id,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::{ContextKey, KeyLength};

    /// What `trial_rows_sql!` builds from these parts, in each unit.
    fn key(parts: &[&str], unit: KeyLength) -> String {
        let len = |p: &str| if unit == KeyLength::Bytes { p.len() } else { p.chars().count() };
        parts.iter().map(|p| format!("{}:{p}", len(p))).collect()
    }

    #[test]
    fn a_context_key_reads_back_every_part_even_with_separators_and_wide_characters() {
        let parts =
            ["{\"depth\":8}", "k:1", "ab12", "cu\0da:0", "4", "0.1.0 (g1a2b3c)", "2.11.0", "Ünïcode CPU 9:9", ""];
        for unit in [KeyLength::Bytes, KeyLength::Chars] {
            let text = key(&parts, unit);
            let k = ContextKey::parse(&text, unit).unwrap();
            let read = [
                k.cell,
                k.cell_key,
                k.settings_hash,
                k.device,
                k.threads,
                k.code_version,
                k.libtorch,
                k.device_name,
                k.dataset_sha256,
            ];
            assert_eq!(read, parts, "{unit:?}");
        }
    }

    #[test]
    fn a_context_key_that_does_not_parse_is_corrupt_not_misread() {
        for unit in [KeyLength::Bytes, KeyLength::Chars] {
            let good = key(&["c", "k", "h", "cpu", "1", "", "", "", ""], unit);
            for bad in [
                String::new(),
                good[..good.len() - 2].to_owned(),
                format!("{good}1:x"),
                good.replacen("1:c", "9:c", 1),
                good.replacen("1:c", "x:c", 1),
            ] {
                let e = ContextKey::parse(&bad, unit).err().expect("refused");
                assert!(e.to_string().contains("does not parse"), "{bad:?}: {e}");
            }
        }
        // Two bytes of one character: a byte count that splits it is refused.
        let split = "1:é1:k1:h3:cpu1:10:0:0:0:";
        assert!(ContextKey::parse(split, KeyLength::Bytes).is_err());
    }
}
