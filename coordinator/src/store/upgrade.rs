//! The data half of migration 0004 (factors as data): trials stored under
//! the v1 trial form (the four BMEnet factors as fields, IDs hashed under
//! `sweep.trial.v1`) are rewritten into the v2 form once, when a coordinator
//! opens the database: their spec as `{cell, seed}` plus shared settings,
//! `cell` as canonical JSON, `identity` and `cell_key` as v2 hashes. Their
//! `id` stays (metrics, leases and checkpoints refer to it), so results and
//! checkpoints survive, and a resubmitted old grid conflicts on `identity`
//! and adds nothing.
//!
//! Idempotent (only rows with `identity IS NULL`) and atomic (one
//! transaction): a crash half-way leaves the database as it was.

use sweep_core::TrialSpec;

use super::StoreError;

/// One old row's new values.
pub(crate) struct Upgraded {
    pub id: String,
    pub spec_json: String,
    pub settings_hash: String,
    pub settings_json: String,
    pub cell: String,
    pub identity: String,
    pub cell_key: String,
}

/// The v2 form of a row stored in the v1 form (`own` is its `spec_json`,
/// `settings` its shared settings, if any).
pub(crate) fn upgrade_row(
    id: String,
    sweep: &str,
    own: &str,
    settings_hash: Option<&str>,
    settings: Option<&str>,
) -> Result<Upgraded, StoreError> {
    let v1 = super::stored_json(own, settings_hash, settings)?;
    let spec: TrialSpec = sweep_core::bmenet::from_v1_json(v1)
        .map_err(|e| StoreError::Corrupt(format!("trial {id}: cannot upgrade its stored spec: {e}")))?;
    let (settings_hash, settings_json) = super::shared_settings(&spec.train, &spec.data);
    Ok(Upgraded {
        id,
        spec_json: super::own_part(&spec),
        settings_hash,
        settings_json,
        cell: spec.cell.canonical(),
        identity: spec.id(sweep).0,
        cell_key: spec.cell_key(sweep),
    })
}

pub(crate) mod sql {
    pub const OLD_ROWS: &str = "SELECT t.id, t.sweep_id, t.spec_json, t.settings_hash, s.settings_json \
         FROM trials t LEFT JOIN trial_settings s ON s.hash = t.settings_hash WHERE t.identity IS NULL";
    pub const REWRITE: &str = "UPDATE trials SET spec_json = $2, settings_hash = $3, cell = $4, identity = $5, \
         cell_key = $6 WHERE id = $1";
}

/// Implements `upgrade_v1_rows` for a store type with a `write` pool.
macro_rules! impl_upgrade {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Rewrites every v1 row (see [`crate::store::upgrade`]); returns
            /// how many.
            pub(crate) async fn upgrade_v1_rows(&self) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::upgrade::{sql, upgrade_row};
                let mut tx = self.write.begin().await?;
                let rows: Vec<(String, String, String, Option<String>, Option<String>)> =
                    sqlx::query_as(sql::OLD_ROWS).fetch_all(&mut *tx).await?;
                let n = rows.len() as u64;
                for (id, sweep, own, hash, settings) in rows {
                    let u = upgrade_row(id, &sweep, &own, hash.as_deref(), settings.as_deref())?;
                    sqlx::query($crate::store::sql::SETTINGS_INSERT)
                        .bind(&u.settings_hash)
                        .bind(&u.settings_json)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(sql::REWRITE)
                        .bind(&u.id)
                        .bind(&u.spec_json)
                        .bind(&u.settings_hash)
                        .bind(&u.cell)
                        .bind(&u.identity)
                        .bind(&u.cell_key)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if n > 0 {
                    tracing::info!(trials = n, "upgraded trials stored before factors became data (migration 0004)");
                }
                Ok(n)
            }
        }
    };
}
