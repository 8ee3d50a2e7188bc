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
use sweep_core::{CurveSums, GradFlowSums, TrialResult};

use super::StoreError;

/// Set-based analytics over a sweep. Every method returns
/// `StoreError::NotFound` for an unknown sweep.
#[async_trait]
pub trait Analytics: Send + Sync {
    /// Every trial of the sweep with its final values, grouped by cell
    /// (ordered by the cell's canonical JSON), then by seed.
    async fn trial_results(&self, sweep_id: &str) -> Result<Vec<TrialResult>, StoreError>;

    /// Per cell and step, the sums of `metric` over succeeded trials (with
    /// `live`, over running ones too).
    async fn curve(&self, sweep_id: &str, metric: &str, live: bool) -> Result<Vec<CurveSums>, StoreError>;

    /// Per cell, block and phase (first or last logged step of each trial),
    /// the sums of the `grad_norm/<block>` metrics of succeeded trials.
    async fn grad_flow(&self, sweep_id: &str) -> Result<Vec<GradFlowSums>, StoreError>;
}

pub(crate) mod sql {
    /// LEFT JOIN from `sweeps`, so an unknown sweep (no row) and a sweep
    /// (with rows) are told apart in the same statement.
    ///
    /// `diverged_step` and `train_images_used` are the trial's metric points
    /// of those names (the newest, if several), each found through the
    /// metrics primary key; `settings_json` is the trial's shared settings
    /// row.
    pub(crate) const TRIAL_RESULTS: &str = "SELECT s.id AS sweep, t.cell, t.cell_key, t.seed, t.state, \
         t.final_train_loss, t.final_test_loss, t.final_test_accuracy, t.best_test_accuracy, t.wall_seconds, \
         t.device, t.threads, t.id AS trial_id, t.settings_hash, \
         t.code_version, t.libtorch, t.device_name, t.dataset_sha256, \
         (SELECT m.value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'diverged_step' ORDER BY m.step DESC LIMIT 1) AS diverged_step, \
         (SELECT m.value FROM metrics m WHERE m.trial_id = t.id AND m.name = 'train_images_used' ORDER BY m.step DESC LIMIT 1) AS train_images_used \
         FROM sweeps s LEFT JOIN trials t ON t.sweep_id = s.id \
         WHERE s.id = $1 \
         ORDER BY t.cell, t.seed, t.cell_key";

    /// Each trial's final values (`final/<name>` points, the newest step of
    /// each), through the metrics primary key.
    pub(crate) const FINALS: &str = "SELECT t.id AS trial_id, m.name, m.value \
         FROM trials t JOIN metrics m ON m.trial_id = t.id \
         WHERE t.sweep_id = $1 AND m.name LIKE 'final/%' \
         ORDER BY t.id, m.name, m.step";

    /// Uses `trials_sweep (sweep_id, state)` to find the trials and the
    /// metrics primary key `(trial_id, name, step)` for their points.
    pub(crate) const CURVE: &str = "SELECT t.cell, m.step, \
         COUNT(m.value) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS q \
         FROM trials t JOIN metrics m ON m.trial_id = t.id \
         WHERE t.sweep_id = $1 AND t.state = 'succeeded' AND m.name = $2 \
         GROUP BY t.cell, m.step \
         ORDER BY t.cell, m.step";

    /// [`CURVE`] over running trials too (the dashboard's live curves).
    pub(crate) const CURVE_LIVE: &str = "SELECT t.cell, m.step, \
         COUNT(m.value) AS n, SUM(m.value) AS s, SUM(m.value * m.value) AS q \
         FROM trials t JOIN metrics m ON m.trial_id = t.id \
         WHERE t.sweep_id = $1 AND t.state IN ('succeeded', 'running') AND m.name = $2 \
         GROUP BY t.cell, m.step \
         ORDER BY t.cell, m.step";

    /// For each (trial, block): the first and last logged step (`ends`);
    /// crossed with the two phases, joined back to the points at those steps,
    /// aggregated per cell, block and phase. `LIKE` narrows to the prefix and
    /// `substr` makes it exact (`_` is a LIKE wildcard).
    pub(crate) const GRAD_FLOW: &str = "WITH ends AS ( \
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

    pub(crate) const SWEEP_EXISTS: &str = "SELECT id FROM sweeps WHERE id = $1";
}

/// Implements [`Analytics`] for a store type with a `read` pool of database
/// `$db`. Expanded once per backend, at the end of `sqlite.rs`/`postgres.rs`.
macro_rules! impl_analytics {
    ($store:ty, $db:ty) => {
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
            async fn trial_results(
                &self,
                sweep_id: &str,
            ) -> Result<Vec<sweep_core::TrialResult>, $crate::store::StoreError> {
                use $crate::store::analytics::sql;
                use $crate::store::rows::ResultRow;
                let rows: Vec<ResultRow> =
                    sqlx::query_as(sql::TRIAL_RESULTS).bind(sweep_id).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    return Err($crate::store::StoreError::NotFound(format!("sweep {sweep_id:?}")));
                }
                let finals: Vec<$crate::store::rows::FinalRow> =
                    sqlx::query_as(sql::FINALS).bind(sweep_id).fetch_all(&self.read).await?;
                let mut by_trial: std::collections::HashMap<String, std::collections::BTreeMap<String, f64>> =
                    std::collections::HashMap::new();
                for f in finals {
                    // Ordered by step: the newest value of a name wins.
                    let name = f.name.strip_prefix("final/").unwrap_or(&f.name).to_owned();
                    by_trial.entry(f.trial_id).or_default().insert(name, f.value);
                }
                // A sweep's trials share a few settings and cells: each is
                // read and parsed once, not once per trial.
                let mut settings = std::collections::HashMap::new();
                for hash in rows.iter().filter_map(|r| r.settings_hash.as_deref()) {
                    if settings.contains_key(hash) {
                        continue;
                    }
                    if let Some(json) = self.settings_of(hash).await? {
                        settings.insert(hash.to_owned(), $crate::store::spec::stored_train(hash, &json)?);
                    }
                }
                let mut cells = std::collections::HashMap::new();
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.extend(row.into_result(&mut by_trial, &settings, &mut cells)?);
                }
                Ok(out)
            }

            async fn curve(
                &self,
                sweep_id: &str,
                metric: &str,
                live: bool,
            ) -> Result<Vec<sweep_core::CurveSums>, $crate::store::StoreError> {
                use $crate::store::analytics::sql;
                use $crate::store::rows::CurveRow;
                let query = if live { sql::CURVE_LIVE } else { sql::CURVE };
                let rows: Vec<CurveRow> =
                    sqlx::query_as(query).bind(sweep_id).bind(metric).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    self.analytics_require_sweep(sweep_id).await?;
                }
                rows.into_iter().map(|r| r.into_sums(metric)).collect()
            }

            async fn grad_flow(
                &self,
                sweep_id: &str,
            ) -> Result<Vec<sweep_core::GradFlowSums>, $crate::store::StoreError> {
                use $crate::store::analytics::sql;
                use $crate::store::rows::GradFlowRow;
                let rows: Vec<GradFlowRow> =
                    sqlx::query_as(sql::GRAD_FLOW).bind(sweep_id).fetch_all(&self.read).await?;
                if rows.is_empty() {
                    self.analytics_require_sweep(sweep_id).await?;
                }
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }
    };
}
