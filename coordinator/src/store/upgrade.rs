//! The one-time rewrite of trial rows written before factors were data
//! (schema v3), run when a store opens, after the migrations.
//!
//! Migration `0004_factors.sql` already gave every old row its cell
//! (`trials.cell`, built in SQL from the old per-factor columns) and left
//! its `identity` NULL. Here each such row gets, in one transaction:
//!
//! - its spec in the current stored form ([`super::spec`]): own part
//!   `{cell, seed}` and shared settings `{train: settings map, data}`,
//!   rebuilt from the old `TrainConfig` JSON. The old JSON came in two forms:
//!   own part + a `trial_settings` row `{"train", "data"}`, or (rows older
//!   than `trial_settings`, `settings_hash` NULL) the whole spec in
//!   `spec_json`, with the same `"train"` and `"data"` keys;
//! - `identity` and `cell_key` under the current ID scheme, so a
//!   resubmitted old grid conflicts with its rows and adds nothing.
//!
//! The row keeps its `id`: metric points, checkpoints and leases refer to
//! it. Rows with an identity are never touched, so this is idempotent.

use serde::Deserialize;
use sweep_core::{DataConfig, TrainConfig, TrialSpec};

use super::spec::stored_cell;
use super::StoreError;

/// The settings part of an old stored spec (either form; other keys are
/// ignored).
#[derive(Deserialize)]
struct OldSettings {
    train: TrainConfig,
    data: DataConfig,
}

/// An old row, as `sql::PENDING` reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct OldRow {
    pub id: String,
    pub sweep_id: String,
    pub cell: String,
    pub seed: i64,
    pub spec_json: String,
    pub settings_hash: Option<String>,
    pub settings_json: Option<String>,
}

/// An old row in the current form.
pub(crate) struct Upgraded {
    pub id: String,
    pub identity: String,
    pub cell_key: String,
    pub cell: String,
    pub spec_json: String,
    pub settings_hash: String,
    pub settings_json: String,
}

impl OldRow {
    /// The row rewritten in the current form.
    pub(super) fn upgrade(self) -> Result<Upgraded, StoreError> {
        let corrupt = |m: String| StoreError::Corrupt(format!("trial {} (written by an older version): {m}", self.id));
        let old_json = match (&self.settings_hash, &self.settings_json) {
            (None, _) => self.spec_json.as_str(),
            (Some(_), Some(s)) => s.as_str(),
            (Some(h), None) => return Err(corrupt(format!("its shared settings {h} are missing"))),
        };
        let old: OldSettings =
            serde_json::from_str(old_json).map_err(|e| corrupt(format!("stored settings cannot be read: {e}")))?;
        let seed = u64::try_from(self.seed).map_err(|_| corrupt(format!("negative seed {}", self.seed)))?;
        let spec = TrialSpec {
            cell: stored_cell(&self.cell)?,
            train: old.train.levels(),
            data: old.data,
            seed,
            trainer: sweep_core::TrainerSpec::Bmenet,
        };
        let (settings_hash, settings_json) = super::spec::shared_settings(&spec.train, &spec.data, &spec.trainer);
        Ok(Upgraded {
            identity: spec.id(&self.sweep_id).0,
            cell_key: spec.cell_key(&self.sweep_id),
            cell: spec.cell.canonical(),
            spec_json: super::spec::own_part(&spec),
            settings_hash,
            settings_json,
            id: self.id,
        })
    }
}

pub(crate) mod sql {
    /// Rows not yet in the current form.
    pub(crate) const PENDING: &str =
        "SELECT t.id, t.sweep_id, t.cell, t.seed, t.spec_json, t.settings_hash, s.settings_json \
         FROM trials t LEFT JOIN trial_settings s ON s.hash = t.settings_hash \
         WHERE t.identity IS NULL ORDER BY t.seq";
    pub(crate) const REWRITE: &str = "UPDATE trials SET identity = $2, cell_key = $3, cell = $4, spec_json = $5, \
         settings_hash = $6 WHERE id = $1 AND identity IS NULL";
    /// Settings rows in the old form, now referenced by no trial.
    pub(crate) const DROP_UNUSED_SETTINGS: &str = "DELETE FROM trial_settings \
         WHERE NOT EXISTS (SELECT 1 FROM trials t WHERE t.settings_hash = trial_settings.hash)";
}

/// Implements `upgrade_rows(&pool)` for a store type over database `$db`.
macro_rules! impl_upgrade {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Rewrites the rows written before factors were data (see
            /// `upgrade.rs`); returns how many. One transaction.
            async fn upgrade_rows(pool: &sqlx::Pool<$db>) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::upgrade::{sql, OldRow};
                let mut tx = pool.begin().await?;
                let rows: Vec<OldRow> = sqlx::query_as(sql::PENDING).fetch_all(&mut *tx).await?;
                if rows.is_empty() {
                    return Ok(0);
                }
                let mut n = 0;
                for row in rows {
                    let up = row.upgrade()?;
                    sqlx::query($crate::store::sql::SETTINGS_INSERT)
                        .bind(&up.settings_hash)
                        .bind(&up.settings_json)
                        .execute(&mut *tx)
                        .await?;
                    n += sqlx::query(sql::REWRITE)
                        .bind(&up.id)
                        .bind(&up.identity)
                        .bind(&up.cell_key)
                        .bind(&up.cell)
                        .bind(&up.spec_json)
                        .bind(&up.settings_hash)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                sqlx::query(sql::DROP_UNUSED_SETTINGS).execute(&mut *tx).await?;
                tx.commit().await?;
                tracing::info!(
                    trials = n,
                    "upgraded trials written before factors were data to the current stored form"
                );
                Ok(n)
            }
        }
    };
}
