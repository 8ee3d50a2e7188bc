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

use sweep_core::{Cell, CurveSums, GradFlowSums, TrialResult};

use super::StoreError;

/// A stored cell (`trials.cell`, canonical JSON) read back.
pub(crate) fn stored_cell(text: &str) -> Result<Cell, StoreError> {
    Cell::from_json(text).map_err(|e| StoreError::Corrupt(format!("stored cell {text:?}: {e}")))
}

/// Set-based analytics over a sweep. Every method returns
/// `StoreError::NotFound` for an unknown sweep.
#[async_trait]
pub trait Analytics: Send + Sync {
    /// Every trial of the sweep with its final summary, in cell then seed order.
    async fn trial_finals(&self, sweep_id: &str) -> Result<Vec<TrialResult>, StoreError>;

    /// Per cell and step, the aggregates of `metric` over succeeded trials.
    async fn curve(&self, sweep_id: &str, metric: &str) -> Result<Vec<CurveSums>, StoreError>;

    /// Per cell, block and phase (first or last logged step of each trial),
    /// the aggregates of the `grad_norm/<block>` metrics of succeeded trials.
    async fn grad_flow(&self, sweep_id: &str) -> Result<Vec<GradFlowSums>, StoreError>;
}

pub(crate) mod sql {
    /// LEFT JOIN from `sweeps`, so an unknown sweep (no row) and a sweep
    /// (with rows) are told apart in the same statement.
    ///
    /// `diverged_step` and `train_images_used` are the trial's metric points
    /// of those names (the newest, if several), each found through the
    /// metrics primary key.
    pub const TRIAL_FINALS: &str = "SELECT s.id AS sweep, t.cell, t.cell_key, t.seed, t.state, \
         t.final_train_loss, t.final_test_loss, t.final_test_accuracy, t.best_test_accuracy, t.wall_seconds, \
         t.device, t.threads, \
         (SELECT m.value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'diverged_step' ORDER BY m.step DESC LIMIT 1) AS diverged_step, \
         (SELECT m.value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_images_used' ORDER BY m.step DESC LIMIT 1) AS train_images_used \
         FROM sweeps s LEFT JOIN trials t ON t.sweep_id = s.id \
         WHERE s.id = $1 \
         ORDER BY t.seq";

    /// Uses `trials_sweep (sweep_id, state)` to find the trials and the
    /// metrics primary key `(trial_id, name, step)` for their points.
    pub const CURVE: &str = "SELECT t.cell, m.step, \
         COUNT(m.value) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS q \
         FROM trials t JOIN metrics m ON m.trial_id = t.id \
         WHERE t.sweep_id = $1 AND t.state = 'succeeded' AND m.name = $2 \
         GROUP BY t.cell, m.step \
         ORDER BY t.cell, m.step";

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
         SELECT t.cell, m.name, p.is_last, \
           COUNT(m.value) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS q, \
           SUM(CAST(m.step AS DOUBLE PRECISION)) AS steps \
         FROM ends e CROSS JOIN phases p \
         JOIN trials t ON t.id = e.trial_id \
         JOIN metrics m ON m.trial_id = e.trial_id AND m.name = e.name \
           AND m.step = CASE WHEN p.is_last = 1 THEN e.last_step ELSE e.first_step END \
         GROUP BY t.cell, m.name, p.is_last \
         ORDER BY t.cell, m.name, p.is_last";

    pub const SWEEP_EXISTS: &str = "SELECT id FROM sweeps WHERE id = $1";
}

/// Implements [`Analytics`] for a store type with a `read` pool of database
/// `$db`. Expanded once per backend, at the end of `sqlite.rs`/`postgres.rs`.
macro_rules! impl_analytics {
    ($store:ty, $db:ty) => {
        /// The row's cell (every analytics query selects `cell`).
        fn analytics_cell(row: &<$db as sqlx::Database>::Row) -> Result<sweep_core::Cell, $crate::store::StoreError> {
            use sqlx::Row;
            $crate::store::analytics::stored_cell(&row.try_get::<String, _>("cell")?)
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
            ) -> Result<Vec<sweep_core::TrialResult>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::analytics::sql;
                use $crate::store::StoreError;
                let rows = sqlx::query(sql::TRIAL_FINALS).bind(sweep_id).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    return Err(StoreError::NotFound(format!("sweep {sweep_id:?}")));
                }
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let Some(state) = row.try_get::<Option<String>, _>("state")? else { continue };
                    out.push(sweep_core::TrialResult {
                        cell: analytics_cell(row)?,
                        cell_key: row.try_get("cell_key")?,
                        seed: row.try_get::<i64, _>("seed")? as u64,
                        state: $crate::store::parse_state(&state)?,
                        final_train_loss: row.try_get("final_train_loss")?,
                        final_test_loss: row.try_get("final_test_loss")?,
                        final_test_accuracy: row.try_get("final_test_accuracy")?,
                        best_test_accuracy: row.try_get("best_test_accuracy")?,
                        wall_seconds: row.try_get("wall_seconds")?,
                        device: row.try_get::<Option<String>, _>("device")?.unwrap_or_default(),
                        threads: row
                            .try_get::<Option<i64>, _>("threads")?
                            .map_or(0, |t| t.clamp(0, u32::MAX as i64) as u32),
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
            ) -> Result<Vec<sweep_core::CurveSums>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::analytics::sql;
                let rows = sqlx::query(sql::CURVE).bind(sweep_id).bind(metric).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    self.analytics_require_sweep(sweep_id).await?;
                }
                rows.iter()
                    .map(|row| {
                        Ok(sweep_core::CurveSums {
                            cell: analytics_cell(row)?,
                            metric: metric.to_owned(),
                            step: row.try_get("step")?,
                            n: row.try_get::<i64, _>("n")? as u64,
                            sum: row.try_get::<Option<f64>, _>("s")?.unwrap_or(0.0),
                            sum_sq: row.try_get::<Option<f64>, _>("q")?.unwrap_or(0.0),
                        })
                    })
                    .collect::<Result<Vec<_>, $crate::store::StoreError>>()
            }

            async fn grad_flow(
                &self,
                sweep_id: &str,
            ) -> Result<Vec<sweep_core::GradFlowSums>, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::analytics::sql;
                let rows = sqlx::query(sql::GRAD_FLOW).bind(sweep_id).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    self.analytics_require_sweep(sweep_id).await?;
                }
                rows.iter()
                    .map(|row| {
                        let n = row.try_get::<i64, _>("n")? as u64;
                        let name: String = row.try_get("name")?;
                        Ok(sweep_core::GradFlowSums {
                            cell: analytics_cell(row)?,
                            block: name.strip_prefix("grad_norm/").unwrap_or(&name).to_owned(),
                            last: row.try_get::<i32, _>("is_last")? == 1,
                            n,
                            sum: row.try_get::<Option<f64>, _>("s")?.unwrap_or(0.0),
                            sum_sq: row.try_get::<Option<f64>, _>("q")?.unwrap_or(0.0),
                            mean_step: row.try_get::<Option<f64>, _>("steps")?.unwrap_or(0.0) / n.max(1) as f64,
                        })
                    })
                    .collect::<Result<Vec<_>, $crate::store::StoreError>>()
            }
        }
    };
}
