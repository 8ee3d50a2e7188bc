//! `sweep export` and `sweep import` in the store: one sweep's rows out as
//! [`Record`]s (one consistent snapshot), and an archive's rows in (one
//! transaction: all of it or nothing). The format and its checks are
//! `sweep_core::archive`'s; this file only moves rows.
//!
//! Shared by both backends through [`impl_archive!`], like `shared.rs`'s
//! `impl_store!`. Each backend supplies `SNAPSHOT_SQL`, the
//! statement that makes a read transaction one snapshot (PostgreSQL's
//! `REPEATABLE READ`; SQLite's read transactions are snapshots already),
//! and `ARCHIVE_POINTS_SQL` (`sql::points_page_sql!` with its binary
//! collation).

use async_trait::async_trait;
use sweep_core::archive::{End, Record};
use tokio::sync::mpsc;

use super::StoreError;

/// Metric points read per query while exporting (keyset pages, so an
/// export's memory does not grow with the sweep).
pub const EXPORT_PAGE: i64 = 5_000;
/// Metric points written per statement while importing.
pub(crate) const IMPORT_CHUNK: usize = 1_000;

#[async_trait]
pub trait Archive: Send + Sync {
    /// Sends the archive of `sweep_id` to `out`, record by record, from one
    /// snapshot of the database; returns early (without error) if `out` is
    /// closed. `StoreError::NotFound` for an unknown sweep.
    async fn export(&self, sweep_id: &str, now_ms: i64, out: mpsc::Sender<Record>) -> Result<(), StoreError>;

    /// Stores the records `records` yields (checked by
    /// `sweep_core::archive::Checker`, in its order) in one transaction,
    /// committed only when the end record arrives: a channel that closes
    /// before it stores nothing. Refuses (`AlreadyExists`) a sweep the
    /// database holds already. Trials keep their queue order, after every
    /// stored trial; a trial that was queued or running when exported is
    /// queued afresh (its lease and checkpoints belonged to the other
    /// coordinator).
    async fn import(&self, records: mpsc::Receiver<Record>) -> Result<End, StoreError>;
}

pub(crate) mod sql {
    pub(crate) const SWEEP: &str =
        "SELECT id, spec_json, max_attempts, priority, cancelled, created_ms, keep_weights, adaptive \
         FROM sweeps WHERE id = $1";
    pub(crate) const SETTINGS: &str = "SELECT hash, settings_json FROM trial_settings WHERE hash IN \
         (SELECT DISTINCT settings_hash FROM trials WHERE sweep_id = $1) ORDER BY hash";
    /// Every column of `trials`, in [`TRIAL_INSERT`]'s order.
    macro_rules! trial_columns {
        () => {
            "id, identity, sweep_id, cell_key, seq, cell, seed, spec_json, settings_hash, priority, max_attempts, state, \
             attempts, failures, infra_failures, handbacks, lease_id, worker_id, holder, lease_expires_ms, last_error, \
             progress_epoch, progress_step, progress_loss, started_ms, finished_ms, final_train_loss, final_test_loss, \
             final_test_accuracy, best_test_accuracy, wall_seconds, resumed_step, checkpoint_step, device, threads, \
             code_version, libtorch, device_name, dataset_sha256"
        };
    }
    pub(crate) const TRIALS: &str =
        concat!("SELECT ", trial_columns!(), " FROM trials WHERE sweep_id = $1 ORDER BY seq, id");
    pub(crate) const TRIAL_INSERT: &str = concat!(
        "INSERT INTO trials (",
        trial_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
         $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39)"
    );
    /// One page of a sweep's points after a key, in key order, comparing
    /// text byte by byte (`$collate`: PostgreSQL's `COLLATE "C"`; SQLite's
    /// default is already binary), so the archive's order is the same
    /// whichever database wrote it.
    macro_rules! points_page_sql {
        ($collate:literal) => {
            concat!(
                "SELECT m.trial_id, m.name, m.step, m.epoch, m.value FROM metrics m \
                 WHERE m.trial_id IN (SELECT id FROM trials WHERE sweep_id = $1) AND (m.trial_id",
                $collate,
                ", m.name",
                $collate,
                ", m.step) > ($2, $3, $4) ORDER BY m.trial_id",
                $collate,
                ", m.name",
                $collate,
                ", m.step LIMIT $5"
            )
        };
    }
    pub(crate) use points_page_sql;
    pub(crate) const SWEEP_INSERT: &str = "INSERT INTO sweeps \
         (id, spec_json, max_attempts, priority, cancelled, created_ms, keep_weights, adaptive) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    pub(crate) const POINTS_INSERT: &str = "INSERT INTO metrics (trial_id, name, step, epoch, value) ";
}

/// A trial that was not finished when exported is queued afresh: its lease
/// and checkpoints were the other coordinator's.
pub(crate) fn requeued(mut t: sweep_core::archive::TrialRow) -> sweep_core::archive::TrialRow {
    let finished = sweep_core::TrialState::parse(&t.state).is_ok_and(sweep_core::TrialState::is_final);
    if !finished {
        t.state = sweep_core::TrialState::Queued.as_str().to_owned();
        t.lease_id = None;
        t.worker_id = None;
        t.holder = None;
        t.lease_expires_ms = None;
        t.checkpoint_step = None;
    }
    t
}

macro_rules! impl_archive {
    ($store:ty, $db:ty) => {
        impl $store {
            fn archive_trial(row: &<$db as sqlx::Database>::Row) -> Result<sweep_core::archive::TrialRow, sqlx::Error> {
                use sqlx::Row;
                Ok(sweep_core::archive::TrialRow {
                    id: row.try_get("id")?,
                    identity: row.try_get("identity")?,
                    sweep_id: row.try_get("sweep_id")?,
                    cell_key: row.try_get("cell_key")?,
                    seq: row.try_get("seq")?,
                    cell: row.try_get("cell")?,
                    seed: row.try_get("seed")?,
                    spec_json: row.try_get("spec_json")?,
                    settings_hash: row.try_get("settings_hash")?,
                    priority: row.try_get("priority")?,
                    max_attempts: row.try_get("max_attempts")?,
                    state: row.try_get("state")?,
                    attempts: row.try_get("attempts")?,
                    failures: row.try_get("failures")?,
                    infra_failures: row.try_get("infra_failures")?,
                    handbacks: row.try_get("handbacks")?,
                    lease_id: row.try_get("lease_id")?,
                    worker_id: row.try_get("worker_id")?,
                    holder: row.try_get("holder")?,
                    lease_expires_ms: row.try_get("lease_expires_ms")?,
                    last_error: row.try_get("last_error")?,
                    progress_epoch: row.try_get("progress_epoch")?,
                    progress_step: row.try_get("progress_step")?,
                    progress_loss: row.try_get("progress_loss")?,
                    started_ms: row.try_get("started_ms")?,
                    finished_ms: row.try_get("finished_ms")?,
                    final_train_loss: row.try_get("final_train_loss")?,
                    final_test_loss: row.try_get("final_test_loss")?,
                    final_test_accuracy: row.try_get("final_test_accuracy")?,
                    best_test_accuracy: row.try_get("best_test_accuracy")?,
                    wall_seconds: row.try_get("wall_seconds")?,
                    resumed_step: row.try_get("resumed_step")?,
                    checkpoint_step: row.try_get("checkpoint_step")?,
                    device: row.try_get("device")?,
                    threads: row.try_get("threads")?,
                    code_version: row.try_get("code_version")?,
                    libtorch: row.try_get("libtorch")?,
                    device_name: row.try_get("device_name")?,
                    dataset_sha256: row.try_get("dataset_sha256")?,
                })
            }

            async fn import_points(
                tx: &mut sqlx::Transaction<'static, $db>,
                points: &mut Vec<sweep_core::archive::PointRow>,
            ) -> Result<(), $crate::store::StoreError> {
                if points.is_empty() {
                    return Ok(());
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new($crate::store::archive::sql::POINTS_INSERT);
                qb.push_values(points.iter(), |mut b, p| {
                    b.push_bind(p.trial_id.clone())
                        .push_bind(p.name.clone())
                        .push_bind(p.step)
                        .push_bind(p.epoch)
                        .push_bind(p.value);
                });
                qb.build().execute(&mut **tx).await?;
                points.clear();
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::archive::Archive for $store {
            async fn export(
                &self,
                sweep_id: &str,
                now_ms: i64,
                out: tokio::sync::mpsc::Sender<sweep_core::archive::Record>,
            ) -> Result<(), $crate::store::StoreError> {
                use sqlx::Row;
                use sweep_core::archive::{self, Record};
                use $crate::store::archive::sql;
                let mut tx = self.read.begin().await?;
                if let Some(snapshot) = Self::SNAPSHOT_SQL {
                    sqlx::query(snapshot).execute(&mut *tx).await?;
                }
                let Some(row) = sqlx::query(sql::SWEEP).bind(sweep_id).fetch_optional(&mut *tx).await? else {
                    return Err($crate::store::StoreError::NotFound(format!("sweep {sweep_id}")));
                };
                let header = archive::Header {
                    format: archive::FORMAT.to_owned(),
                    version: archive::VERSION,
                    sweep: sweep_id.to_owned(),
                    exported_ms: now_ms,
                };
                let sweep = archive::SweepRow {
                    id: row.try_get("id")?,
                    spec_json: row.try_get("spec_json")?,
                    max_attempts: row.try_get("max_attempts")?,
                    priority: row.try_get("priority")?,
                    cancelled: row.try_get("cancelled")?,
                    created_ms: row.try_get("created_ms")?,
                    keep_weights: row.try_get("keep_weights")?,
                    adaptive: row.try_get("adaptive")?,
                };
                if out.send(Record::Header(header)).await.is_err() || out.send(Record::Sweep(sweep)).await.is_err() {
                    return Ok(());
                }
                let settings: Vec<(String, String)> =
                    sqlx::query_as(sql::SETTINGS).bind(sweep_id).fetch_all(&mut *tx).await?;
                for (hash, settings_json) in settings {
                    if out.send(Record::Settings(archive::SettingsRow { hash, settings_json })).await.is_err() {
                        return Ok(());
                    }
                }
                let rows = sqlx::query(sql::TRIALS).bind(sweep_id).fetch_all(&mut *tx).await?;
                let trials = rows.len() as u64;
                for row in &rows {
                    if out.send(Record::Trial(Box::new(Self::archive_trial(row)?))).await.is_err() {
                        return Ok(());
                    }
                }
                drop(rows);
                let mut points = 0u64;
                let mut after: (String, String, i64) = (String::new(), String::new(), i64::MIN);
                loop {
                    let page: Vec<(String, String, i64, i64, f64)> = sqlx::query_as(Self::ARCHIVE_POINTS_SQL)
                        .bind(sweep_id)
                        .bind(&after.0)
                        .bind(&after.1)
                        .bind(after.2)
                        .bind($crate::store::archive::EXPORT_PAGE)
                        .fetch_all(&mut *tx)
                        .await?;
                    let full = page.len() as i64 == $crate::store::archive::EXPORT_PAGE;
                    for (trial_id, name, step, epoch, value) in page {
                        after = (trial_id.clone(), name.clone(), step);
                        points += 1;
                        let point = archive::PointRow { trial_id, name, step, epoch, value };
                        if out.send(Record::Point(point)).await.is_err() {
                            return Ok(());
                        }
                    }
                    if !full {
                        break;
                    }
                }
                tx.commit().await?;
                let _ = out.send(Record::End(archive::End { trials, points })).await;
                Ok(())
            }

            async fn import(
                &self,
                mut records: tokio::sync::mpsc::Receiver<sweep_core::archive::Record>,
            ) -> Result<sweep_core::archive::End, $crate::store::StoreError> {
                use sweep_core::archive::Record;
                use $crate::store::archive::sql;
                use $crate::store::StoreError;
                let mut tx = self.write.begin().await?;
                let mut points = Vec::with_capacity($crate::store::archive::IMPORT_CHUNK);
                // Imported trials queue after every stored trial, in the
                // archive's order: `seq` is renumbered from the largest.
                let mut next_seq: Option<i64> = None;
                while let Some(record) = records.recv().await {
                    match record {
                        Record::Header(_) => {}
                        Record::Sweep(s) => {
                            let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM sweeps WHERE id = $1")
                                .bind(&s.id)
                                .fetch_optional(&mut *tx)
                                .await?;
                            if exists.is_some() {
                                return Err(StoreError::AlreadyExists(format!(
                                    "sweep {:?} exists in this database already: import adds whole sweeps only \
                                     (export it, or import into another database)",
                                    s.id
                                )));
                            }
                            sqlx::query(sql::SWEEP_INSERT)
                                .bind(&s.id)
                                .bind(&s.spec_json)
                                .bind(s.max_attempts)
                                .bind(s.priority)
                                .bind(s.cancelled)
                                .bind(s.created_ms)
                                .bind(s.keep_weights)
                                .bind(s.adaptive)
                                .execute(&mut *tx)
                                .await?;
                        }
                        Record::Settings(s) => {
                            sqlx::query($crate::store::sql::SETTINGS_INSERT)
                                .bind(&s.hash)
                                .bind(&s.settings_json)
                                .execute(&mut *tx)
                                .await?;
                        }
                        Record::Trial(t) => {
                            let seq = match next_seq {
                                Some(seq) => seq,
                                None => {
                                    let (max,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM trials")
                                        .fetch_one(&mut *tx)
                                        .await?;
                                    max.saturating_add(1)
                                }
                            };
                            next_seq = Some(seq.saturating_add(1));
                            let t = $crate::store::archive::requeued(*t);
                            sqlx::query(sql::TRIAL_INSERT)
                                .bind(t.id)
                                .bind(t.identity)
                                .bind(t.sweep_id)
                                .bind(t.cell_key)
                                .bind(seq)
                                .bind(t.cell)
                                .bind(t.seed)
                                .bind(t.spec_json)
                                .bind(t.settings_hash)
                                .bind(t.priority)
                                .bind(t.max_attempts)
                                .bind(t.state)
                                .bind(t.attempts)
                                .bind(t.failures)
                                .bind(t.infra_failures)
                                .bind(t.handbacks)
                                .bind(t.lease_id)
                                .bind(t.worker_id)
                                .bind(t.holder)
                                .bind(t.lease_expires_ms)
                                .bind(t.last_error)
                                .bind(t.progress_epoch)
                                .bind(t.progress_step)
                                .bind(t.progress_loss)
                                .bind(t.started_ms)
                                .bind(t.finished_ms)
                                .bind(t.final_train_loss)
                                .bind(t.final_test_loss)
                                .bind(t.final_test_accuracy)
                                .bind(t.best_test_accuracy)
                                .bind(t.wall_seconds)
                                .bind(t.resumed_step)
                                .bind(t.checkpoint_step)
                                .bind(t.device)
                                .bind(t.threads)
                                .bind(t.code_version)
                                .bind(t.libtorch)
                                .bind(t.device_name)
                                .bind(t.dataset_sha256)
                                .execute(&mut *tx)
                                .await?;
                        }
                        Record::Point(p) => {
                            points.push(p);
                            if points.len() == $crate::store::archive::IMPORT_CHUNK {
                                Self::import_points(&mut tx, &mut points).await?;
                            }
                        }
                        Record::End(end) => {
                            Self::import_points(&mut tx, &mut points).await?;
                            tx.commit().await?;
                            return Ok(end);
                        }
                    }
                }
                // Dropping the transaction rolls it back.
                Err(StoreError::InvalidArgument("the archive ended before its end record: nothing imported".into()))
            }
        }
    };
}
