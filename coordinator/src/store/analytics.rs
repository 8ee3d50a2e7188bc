//! Read-only, set-based queries behind `sweep report`'s effects, curves and
//! gradient-flow pictures. Each method is a fixed number of SQL statements
//! over the whole sweep (never one query per trial), so a 100,000-trial
//! sweep reports in under a second. The statistics are computed by the caller
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
    /// One part of a context key: its length, `:`, the text (NULL as
    /// empty), so the parts read back exactly (`rows::ContextKey::parse`).
    /// The length is measured by `$open ... $close`, in the unit the
    /// backend's `KEY_LENGTH` names.
    macro_rules! key_part {
        ($open:literal, $close:literal, $col:literal) => {
            concat!($open, "COALESCE(", $col, ", '')", $close, " || ':' || COALESCE(", $col, ", '')")
        };
    }
    pub(crate) use key_part;

    /// The [`key_part!`]s of these columns, joined by `||` in order.
    macro_rules! key_parts {
        ($open:literal, $close:literal; $first:literal $(, $rest:literal)*) => {
            concat!(
                $crate::store::analytics::sql::key_part!($open, $close, $first)
                $(, " || ", $crate::store::analytics::sql::key_part!($open, $close, $rest))*
            )
        };
    }
    pub(crate) use key_parts;

    /// Every trial of a sweep: its own values and, as one text, what it
    /// shares with others (cell, settings, the worker that produced its
    /// result) in `rows::ContextKey`'s order: a sweep's 100,000 trials have
    /// a few hundred distinct keys, each parsed once. Unordered: the store
    /// sorts by the cells once it has parsed them. `$open`/`$close` measure
    /// a part's length (SQLite's `length` of text stops at a NUL; of a
    /// blob it counts bytes).
    macro_rules! trial_rows_sql {
        ($open:literal, $close:literal) => {
            concat!(
                "SELECT t.id, t.seed, t.state, t.final_train_loss, t.final_test_loss, t.final_test_accuracy, \
                 t.best_test_accuracy, t.wall_seconds, ",
                $crate::store::analytics::sql::key_parts!(
                    $open,
                    $close;
                    "t.cell",
                    "t.cell_key",
                    "t.settings_hash",
                    "t.device",
                    "CAST(t.threads AS TEXT)",
                    "t.code_version",
                    "t.libtorch",
                    "t.device_name",
                    "t.dataset_sha256"
                ),
                " AS context FROM trials t WHERE t.sweep_id = $1"
            )
        };
    }
    pub(crate) use trial_rows_sql;

    /// The points a report reads for every trial (`diverged_step`,
    /// `train_images_used`, `final/<name>`), through the partial index
    /// `metrics_report` that holds only them (its predicate, repeated
    /// here, is what lets the database use it); `$indexed_by` names it for
    /// SQLite, whose planner without statistics would rather walk each
    /// trial's curves. Newest step last.
    macro_rules! report_points_sql {
        ($indexed_by:literal) => {
            concat!(
                "SELECT m.trial_id, m.name, m.value FROM trials t JOIN metrics m ",
                $indexed_by,
                " ON m.trial_id = t.id \
                 WHERE t.sweep_id = $1 \
                 AND (m.name = 'diverged_step' OR m.name = 'train_images_used' OR m.name LIKE 'final/%') \
                 ORDER BY m.trial_id, m.name, m.step"
            )
        };
    }
    pub(crate) use report_points_sql;

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
                use std::collections::HashMap;
                use $crate::store::rows::{ContextKey, ReportPointRow, ReportPoints, ResultRow};
                // One snapshot: a trial's report points are its own.
                let mut tx = self.read.begin().await?;
                if let Some(snapshot) = Self::SNAPSHOT_SQL {
                    sqlx::query(snapshot).execute(&mut *tx).await?;
                }
                let rows: Vec<ResultRow> =
                    sqlx::query_as(Self::TRIAL_ROWS_SQL).bind(sweep_id).fetch_all(&mut *tx).await?;
                let point_rows: Vec<ReportPointRow> =
                    sqlx::query_as(Self::REPORT_POINTS_SQL).bind(sweep_id).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                if rows.is_empty() {
                    self.analytics_require_sweep(sweep_id).await?;
                    return Ok(Vec::new());
                }
                let mut points: HashMap<String, ReportPoints> = HashMap::new();
                for p in point_rows {
                    // Ordered by step: the newest value of a name wins.
                    let entry = points.entry(p.trial_id).or_default();
                    match p.name.as_str() {
                        "diverged_step" => entry.diverged_step = Some(p.value),
                        "train_images_used" => entry.train_images_used = Some(p.value),
                        name => {
                            let name = name.strip_prefix("final/").unwrap_or(name).to_owned();
                            entry.finals.insert(name, p.value);
                        }
                    }
                }
                // A sweep's trials share a few contexts: each is parsed,
                // and its settings and cell read, once.
                let mut by_key: HashMap<&str, usize> = HashMap::new();
                let mut keys = Vec::new();
                let ats: Vec<usize> = rows
                    .iter()
                    .map(|row| {
                        *by_key.entry(row.context.as_str()).or_insert_with(|| {
                            keys.push((row.context.as_str(), row.id.as_str()));
                            keys.len() - 1
                        })
                    })
                    .collect();
                let mut settings = HashMap::new();
                let mut cells = HashMap::new();
                let mut contexts = Vec::with_capacity(keys.len());
                for (key, trial_id) in keys.drain(..) {
                    let key = ContextKey::parse(key, Self::KEY_LENGTH)?;
                    if !settings.contains_key(key.settings_hash) {
                        if let Some(json) = self.settings_of(key.settings_hash).await? {
                            let (train, trainer) = $crate::store::spec::stored_train(key.settings_hash, &json)?;
                            settings.insert(key.settings_hash.to_owned(), (std::sync::Arc::new(train), trainer));
                        }
                    }
                    contexts.push(key.into_context(trial_id, &settings, &mut cells)?);
                }
                // Grouped by cell (its canonical JSON), then by seed, then
                // by cell key: each context's place in that order, once.
                let mut order: Vec<(&str, &str)> =
                    contexts.iter().map(|c| (c.cell_json.as_str(), c.cell_key.as_str())).collect();
                order.sort_unstable();
                order.dedup();
                let places: Vec<(usize, usize)> = contexts
                    .iter()
                    .map(|c| {
                        let cell = order.partition_point(|(cell, _)| *cell < c.cell_json.as_str());
                        let key = order.partition_point(|o| *o < (c.cell_json.as_str(), c.cell_key.as_str()));
                        (cell, key)
                    })
                    .collect();
                let mut out = Vec::with_capacity(rows.len());
                for (row, at) in rows.into_iter().zip(ats) {
                    let (cell, key) = places[at];
                    let trial = row.into_result(&contexts[at], &mut points)?;
                    out.push(((cell, trial.seed, key), trial));
                }
                out.sort_unstable_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.trial_id.cmp(&y.trial_id)));
                Ok(out.into_iter().map(|(_, t)| t).collect())
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
