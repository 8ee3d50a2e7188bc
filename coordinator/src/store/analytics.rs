//! Read-only, set-based queries behind `sweep report`'s effects, curves and
//! gradient-flow pictures. Each method is ONE SQL statement over the whole
//! sweep (never one query per trial), so a 10,000-trial sweep reports in well
//! under a second. The statistics are computed by the caller
//! (`sweep_core::effects`); the database only filters and sums.
//!
//! The SQL is shared by both backends through [`impl_analytics!`], like
//! `shared.rs`'s `impl_store!`: `$N` placeholders, `COUNT` read as `i64`,
//! `SUM` only over `DOUBLE PRECISION`/`REAL` columns (read as `f64`).

use async_trait::async_trait;

use super::{StoreError, TrialState};

/// The factor levels of a cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellLevels {
    pub depth: u32,
    pub skip: bool,
    pub init: String,
    pub batchnorm: bool,
}

/// One trial's final row: its cell, seed, state and summary values.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialFinal {
    pub cell: CellLevels,
    /// Hash of the cell with its train/data settings: two trials with the
    /// same levels but different `cell_key`s were trained differently.
    pub cell_key: String,
    pub seed: u64,
    pub state: TrialState,
    pub final_train_loss: Option<f64>,
    pub final_test_loss: Option<f64>,
    pub final_test_accuracy: Option<f64>,
    pub best_test_accuracy: Option<f64>,
    pub wall_seconds: Option<f64>,
    /// Provenance of the latest attempt: the worker's device and libtorch
    /// threads (as its lease request said).
    pub device: Option<String>,
    pub threads: Option<u32>,
    /// The trial's `diverged_step` metric point (the step at which its loss
    /// became non-finite), if it sent one.
    pub diverged_step: Option<i64>,
    /// The trial's `train_images_used` metric point (sent only when fewer
    /// images than `data.train_subset` were available).
    pub train_images_used: Option<u64>,
}

/// COUNT, SUM and SUM of squares of a metric at one step over a cell's
/// succeeded trials.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveAggregate {
    pub cell: CellLevels,
    pub step: i64,
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

/// Gradient norm of one block at the first (`last == false`) or last logged
/// step of each succeeded trial, aggregated over a cell's trials.
#[derive(Debug, Clone, PartialEq)]
pub struct GradFlowAggregate {
    pub cell: CellLevels,
    /// The block name without the `grad_norm/` prefix (`stem`, `block01`, ..., `fc2`).
    pub block: String,
    pub last: bool,
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
    /// Mean over the trials of the step the value was logged at.
    pub mean_step: f64,
}

/// Set-based analytics over a sweep. Every method returns
/// `StoreError::NotFound` for an unknown sweep.
#[async_trait]
pub trait Analytics: Send + Sync {
    /// Every trial of the sweep with its final summary, in cell then seed order.
    async fn trial_finals(&self, sweep_id: &str) -> Result<Vec<TrialFinal>, StoreError>;

    /// Per cell and step, the aggregates of `metric` over succeeded trials.
    async fn curve(&self, sweep_id: &str, metric: &str) -> Result<Vec<CurveAggregate>, StoreError>;

    /// Per cell, block and phase (first or last logged step of each trial),
    /// the aggregates of the `grad_norm/<block>` metrics of succeeded trials.
    async fn grad_flow(&self, sweep_id: &str) -> Result<Vec<GradFlowAggregate>, StoreError>;
}

pub(crate) mod sql {
    /// LEFT JOIN from `sweeps`, so an unknown sweep (no row) and a sweep
    /// (with rows) are told apart in the same statement.
    ///
    /// `diverged_step` and `train_images_used` are the trial's metric points
    /// of those names (the newest, if several), each found through the
    /// metrics primary key.
    pub const TRIAL_FINALS: &str = "SELECT s.id AS sweep, t.depth, t.skip, t.init, t.batchnorm, t.cell_key, t.seed, t.state, \
         t.final_train_loss, t.final_test_loss, t.final_test_accuracy, t.best_test_accuracy, t.wall_seconds, \
         t.device, t.threads, \
         (SELECT m.value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'diverged_step' ORDER BY m.step DESC LIMIT 1) AS diverged_step, \
         (SELECT m.value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_images_used' ORDER BY m.step DESC LIMIT 1) AS train_images_used \
         FROM sweeps s LEFT JOIN trials t ON t.sweep_id = s.id \
         WHERE s.id = $1 \
         ORDER BY t.depth, t.skip, t.init, t.batchnorm, t.seed, t.cell_key";

    /// Uses `trials_sweep (sweep_id, state)` to find the trials and the
    /// metrics primary key `(trial_id, name, step)` for their points.
    pub const CURVE: &str = "SELECT t.depth, t.skip, t.init, t.batchnorm, m.step, \
         COUNT(m.value) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS q \
         FROM trials t JOIN metrics m ON m.trial_id = t.id \
         WHERE t.sweep_id = $1 AND t.state = 'succeeded' AND m.name = $2 \
         GROUP BY t.depth, t.skip, t.init, t.batchnorm, m.step \
         ORDER BY t.depth, t.skip, t.init, t.batchnorm, m.step";

    /// For each (trial, block): the first and last logged step (`ends`);
    /// crossed with the two phases, joined back to the points at those steps,
    /// aggregated per cell, block and phase. `LIKE` narrows to the prefix and
    /// `substr` makes it exact (`_` is a LIKE wildcard).
    pub const GRAD_FLOW: &str = "WITH ends AS ( \
           SELECT m.trial_id, m.name, MIN(m.step) AS first_step, MAX(m.step) AS last_step \
           FROM trials t JOIN metrics m ON m.trial_id = t.id \
           WHERE t.sweep_id = $1 AND t.state = 'succeeded' \
             AND m.name LIKE 'grad_norm/%' AND substr(m.name, 1, 10) = 'grad_norm/' \
           GROUP BY m.trial_id, m.name \
         ), phases AS (SELECT 0 AS is_last UNION ALL SELECT 1 AS is_last) \
         SELECT t.depth, t.skip, t.init, t.batchnorm, m.name, p.is_last, \
           COUNT(m.value) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS q, \
           SUM(CAST(m.step AS DOUBLE PRECISION)) AS steps \
         FROM ends e CROSS JOIN phases p \
         JOIN trials t ON t.id = e.trial_id \
         JOIN metrics m ON m.trial_id = e.trial_id AND m.name = e.name \
           AND m.step = CASE WHEN p.is_last = 1 THEN e.last_step ELSE e.first_step END \
         GROUP BY t.depth, t.skip, t.init, t.batchnorm, m.name, p.is_last \
         ORDER BY t.depth, t.skip, t.init, t.batchnorm, m.name, p.is_last";

    pub const SWEEP_EXISTS: &str = "SELECT id FROM sweeps WHERE id = $1";
}

/// Implements [`Analytics`] for a store type with a `read` pool of database
/// `$db`. Expanded once per backend, at the end of `sqlite.rs`/`postgres.rs`.
macro_rules! impl_analytics {
    ($store:ty, $db:ty) => {
        /// The factor levels of the row's cell (every analytics query selects
        /// `depth, skip, init, batchnorm`).
        fn analytics_cell_levels(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<$crate::store::analytics::CellLevels, sqlx::Error> {
            use sqlx::Row;
            Ok($crate::store::analytics::CellLevels {
                depth: row.try_get::<i64, _>("depth")? as u32,
                skip: row.try_get("skip")?,
                init: row.try_get("init")?,
                batchnorm: row.try_get("batchnorm")?,
            })
        }

        impl $store {
            /// An empty answer is only fine for a sweep that exists.
            async fn analytics_require_sweep(&self, sweep_id: &str) -> Result<(), $crate::store::StoreError> {
                let found: Option<(String,)> = sqlx::query_as($crate::store::analytics::sql::SWEEP_EXISTS)
                    .bind(sweep_id)
                    .fetch_optional(&self.read)
                    .await?;
                found.map(|_| ()).ok_or_else(|| $crate::store::StoreError::NotFound(format!("sweep {sweep_id:?}")))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Analytics for $store {
            async fn trial_finals(
                &self,
                sweep_id: &str,
            ) -> Result<Vec<$crate::store::analytics::TrialFinal>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::analytics::{sql, TrialFinal};
                use $crate::store::{StoreError, TrialState};
                let rows = sqlx::query(sql::TRIAL_FINALS).bind(sweep_id).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    return Err(StoreError::NotFound(format!("sweep {sweep_id:?}")));
                }
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let Some(state) = row.try_get::<Option<String>, _>("state")? else { continue };
                    out.push(TrialFinal {
                        cell: analytics_cell_levels(row)?,
                        cell_key: row.try_get("cell_key")?,
                        seed: row.try_get::<i64, _>("seed")? as u64,
                        state: TrialState::parse(&state)?,
                        final_train_loss: row.try_get("final_train_loss")?,
                        final_test_loss: row.try_get("final_test_loss")?,
                        final_test_accuracy: row.try_get("final_test_accuracy")?,
                        best_test_accuracy: row.try_get("best_test_accuracy")?,
                        wall_seconds: row.try_get("wall_seconds")?,
                        device: row.try_get("device")?,
                        threads: row.try_get::<Option<i64>, _>("threads")?.map(|t| t.clamp(0, u32::MAX as i64) as u32),
                        diverged_step: row
                            .try_get::<Option<f64>, _>("diverged_step")?
                            .filter(|v| v.is_finite() && *v >= 0.0)
                            .map(|v| v as i64),
                        train_images_used: row
                            .try_get::<Option<f64>, _>("train_images_used")?
                            .filter(|v| v.is_finite() && *v >= 0.0)
                            .map(|v| v as u64),
                    });
                }
                Ok(out)
            }

            async fn curve(
                &self,
                sweep_id: &str,
                metric: &str,
            ) -> Result<Vec<$crate::store::analytics::CurveAggregate>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::analytics::{sql, CurveAggregate};
                use $crate::store::StoreError;
                let rows = sqlx::query(sql::CURVE).bind(sweep_id).bind(metric).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    self.analytics_require_sweep(sweep_id).await?;
                }
                rows.iter()
                    .map(|row| {
                        Ok(CurveAggregate {
                            cell: analytics_cell_levels(row)?,
                            step: row.try_get("step")?,
                            n: row.try_get::<i64, _>("n")? as u64,
                            sum: row.try_get::<Option<f64>, _>("s")?.unwrap_or(0.0),
                            sum_sq: row.try_get::<Option<f64>, _>("q")?.unwrap_or(0.0),
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn grad_flow(
                &self,
                sweep_id: &str,
            ) -> Result<Vec<$crate::store::analytics::GradFlowAggregate>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::analytics::{sql, GradFlowAggregate};
                use $crate::store::StoreError;
                let rows = sqlx::query(sql::GRAD_FLOW).bind(sweep_id).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    self.analytics_require_sweep(sweep_id).await?;
                }
                rows.iter()
                    .map(|row| {
                        let n = row.try_get::<i64, _>("n")? as u64;
                        let name: String = row.try_get("name")?;
                        Ok(GradFlowAggregate {
                            cell: analytics_cell_levels(row)?,
                            block: name.strip_prefix("grad_norm/").unwrap_or(&name).to_owned(),
                            last: row.try_get::<i32, _>("is_last")? == 1,
                            n,
                            sum: row.try_get::<Option<f64>, _>("s")?.unwrap_or(0.0),
                            sum_sq: row.try_get::<Option<f64>, _>("q")?.unwrap_or(0.0),
                            mean_step: row.try_get::<Option<f64>, _>("steps")?.unwrap_or(0.0) / n.max(1) as f64,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(StoreError::from)
            }
        }
    };
}
