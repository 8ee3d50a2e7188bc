//! The body of [`Store`](super::Store) shared by both backends.
//!
//! sqlx's query API is generic over the database, but spelling the bounds out
//! for a generic impl is longer than the code itself; a macro expands the same
//! code once per backend instead. Each backend supplies `self.write` (the pool
//! that performs writes: a single connection for SQLite, so writers never
//! contend for the file lock) and `self.read`, plus its own lease statement
//! (`LEASE_SQL`, and `LEASE_SAME_CELL_SQL` for the rest of a group lease,
//! both built by `sql::lease_sql!`) and its lock on an adaptive sweep's row
//! (`ADAPTIVE_SPEC_SQL`), the places where the dialects differ.

macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Claims up to `max` trials for `who` on `conn`: the queue's head
            /// (none for a quarantined caller), then its cell-mates one by
            /// one, each by its own guarded UPDATE with its own lease ID.
            async fn claim(
                conn: &mut <$db as sqlx::Database>::Connection,
                who: $crate::store::Leaser<'_>,
                max: u32,
                now_ms: i64,
                ttl_ms: i64,
            ) -> Result<Vec<(String, $crate::store::rows::LeasedRow)>, $crate::store::StoreError> {
                use $crate::store::rows::LeasedRow;
                let mut rows: Vec<(String, LeasedRow)> = Vec::new();
                while rows.len() < max.max(1) as usize {
                    let lease_id = $crate::store::new_lease_id();
                    let sql = if rows.is_empty() { Self::LEASE_SQL } else { Self::LEASE_SAME_CELL_SQL };
                    let query = sqlx::query_as::<$db, LeasedRow>(sql)
                        .bind(&lease_id)
                        .bind(who.worker_id)
                        .bind(now_ms + ttl_ms)
                        .bind(now_ms)
                        .bind(who.holder)
                        .bind(who.device)
                        .bind(who.threads as i64);
                    let query = match rows.first() {
                        None => query.bind(who.quarantine_after.map_or(i64::MAX, i64::from)),
                        Some((_, head)) => query
                            .bind(&head.sweep_id)
                            .bind(&head.cell_key)
                            .bind(head.settings_hash.as_deref())
                            .bind(head.checkpoint_step),
                    };
                    let Some(row) = query.fetch_optional(&mut *conn).await? else { break };
                    rows.push((lease_id, row));
                }
                Ok(rows)
            }

            /// Stores a batch of points of `trial_id` (whose lease the caller
            /// checked in this transaction): the stored points past
            /// `truncate_after` go first, re-sent points are stored once, and
            /// the checkpoint step becomes vouched for. Returns the points
            /// newly stored.
            async fn store_points(
                tx: &mut <$db as sqlx::Database>::Connection,
                trial_id: &str,
                batch: $crate::store::PointBatch<'_>,
            ) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::sql;
                if let Some(step) = batch.truncate_after {
                    sqlx::query(sql::TRUNCATE_METRICS).bind(trial_id).bind(step).execute(&mut *tx).await?;
                    sqlx::query(sql::SET_RESUMED).bind(trial_id).bind(step).execute(&mut *tx).await?;
                }
                let mut stored = 0;
                for chunk in batch.points.chunks(1000) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("INSERT INTO metrics (trial_id, name, step, epoch, value) ");
                    qb.push_values(chunk, |mut b, p| {
                        b.push_bind(trial_id.to_owned())
                            .push_bind(p.name.clone())
                            .push_bind(p.step)
                            .push_bind(p.epoch as i64)
                            .push_bind(p.value);
                    });
                    qb.push(sql::METRICS_CONFLICT);
                    stored += qb.build().execute(&mut *tx).await?.rows_affected();
                }
                if let Some(step) = batch.checkpoint_step {
                    sqlx::query(sql::SET_CHECKPOINT).bind(trial_id).bind(step).execute(&mut *tx).await?;
                }
                Ok(stored)
            }

            /// Records the provenance of the attempt running under `lease_id`
            /// (nothing when the lease is not current: a retried Complete, or
            /// a lost lease, which the completion then answers for; every new
            /// lease clears what an earlier attempt recorded).
            async fn record_provenance(
                conn: &mut <$db as sqlx::Database>::Connection,
                lease_id: &str,
                p: &sweep_core::Provenance,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::SET_PROVENANCE)
                    .bind(lease_id)
                    .bind(&p.code_version)
                    .bind(&p.libtorch)
                    .bind(&p.device_name)
                    .bind(&p.dataset_sha256)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            /// The shared settings stored under `hash` (from the cache, else
            /// read once and kept: a settings row never changes).
            async fn settings_of(&self, hash: &str) -> Result<Option<std::sync::Arc<str>>, $crate::store::StoreError> {
                if let Some(json) = self.settings.get(hash) {
                    return Ok(Some(json));
                }
                let row: Option<(String,)> =
                    sqlx::query_as($crate::store::sql::SETTINGS).bind(hash).fetch_optional(&self.read).await?;
                Ok(row.map(|(json,)| {
                    let json: std::sync::Arc<str> = json.into();
                    self.settings.insert(hash, json.clone());
                    json
                }))
            }

            /// Stores `trials` of `spec`'s sweep, after every stored trial in
            /// queue order, skipping those stored already; returns how many
            /// were new.
            async fn insert_trials(
                tx: &mut <$db as sqlx::Database>::Connection,
                spec: &sweep_core::GridSpec,
                settings_hash: &str,
                trials: &[sweep_core::TrialSpec],
            ) -> Result<u64, $crate::store::StoreError> {
                if trials.is_empty() {
                    return Ok(0);
                }
                let (base_seq,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM trials")
                    .fetch_one(&mut *tx)
                    .await?;
                let mut added = 0u64;
                let rows: Vec<(usize, &sweep_core::TrialSpec)> = trials.iter().enumerate().collect();
                for chunk in rows.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new($crate::store::sql::TRIAL_INSERT);
                    qb.push_values(chunk, |mut b, (i, t)| {
                        let id = t.id(&spec.name).0;
                        b.push_bind(id.clone())
                            .push_bind(id)
                            .push_bind(spec.name.clone())
                            .push_bind(t.cell_key(&spec.name))
                            .push_bind(base_seq + 1 + *i as i64)
                            .push_bind(t.cell.canonical())
                            .push_bind(t.seed as i64)
                            .push_bind($crate::store::spec::own_part(t))
                            .push_bind(settings_hash.to_owned())
                            .push_bind(spec.run.priority as i64)
                            .push_bind(spec.run.max_attempts as i64)
                            .push_bind("queued");
                    });
                    qb.push($crate::store::sql::TRIAL_INSERT_END);
                    added += qb.build().execute(&mut *tx).await?.rows_affected();
                }
                Ok(added)
            }

            /// Judges the strata of `spec`'s seed plan (the stratum of `cell`,
            /// or every stratum) with `sweep_core::adaptive::review` and
            /// stores the seeds it asks for; returns the trials added. Only
            /// trials with the grid's current settings (`settings_hash`,
            /// from `spec::shared_settings`) count.
            async fn adapt(
                tx: &mut <$db as sqlx::Database>::Connection,
                spec: &sweep_core::GridSpec,
                settings_hash: &str,
                cell: Option<&sweep_core::Cell>,
            ) -> Result<u64, $crate::store::StoreError> {
                use sweep_core::adaptive::{cells_of, review, Next};
                let Some(plan) = &spec.run.adaptive else { return Ok(0) };
                let levels = spec.levels(&plan.contrast);
                let runs = Self::stratum_runs(&mut *tx, spec, settings_hash, cell).await?;
                let mut new = Vec::new();
                for stratum in review(plan, spec.schema(), &runs) {
                    if let Next::SeedDue(seed) = stratum.next {
                        new.extend(cells_of(&stratum.at, &plan.contrast, levels).into_iter().map(|c| spec.trial(c, seed)));
                    }
                }
                if new.is_empty() {
                    return Ok(0);
                }
                let added = Self::insert_trials(tx, spec, settings_hash, &new).await?;
                tracing::info!(sweep = %spec.name, trials = added, "adaptive seeds: effects still open; seeds added");
                Ok(added)
            }

            /// The trials of `spec`'s current settings (`settings_hash`) in
            /// the stratum of `cell` (every stratum when `None`), as the seed
            /// plan judges them.
            async fn stratum_runs<'e, E: sqlx::Executor<'e, Database = $db>>(
                executor: E,
                spec: &sweep_core::GridSpec,
                settings_hash: &str,
                cell: Option<&sweep_core::Cell>,
            ) -> Result<Vec<sweep_core::adaptive::Run>, $crate::store::StoreError> {
                let Some(plan) = &spec.run.adaptive else { return Ok(Vec::new()) };
                let mut qb = sqlx::QueryBuilder::<$db>::new($crate::store::sql::STRATUM_RUNS);
                qb.push_bind(spec.name.clone()).push(" AND settings_hash = ").push_bind(settings_hash.to_owned());
                if let Some(cell) = cell {
                    let mut at = cell.clone();
                    at.0.remove(&plan.contrast);
                    qb.push(" AND cell_key IN (");
                    let mut keys = qb.separated(", ");
                    for c in sweep_core::adaptive::cells_of(&at, &plan.contrast, spec.levels(&plan.contrast)) {
                        keys.push_bind(spec.trial(c, 0).cell_key(&spec.name));
                    }
                    keys.push_unseparated(")");
                }
                let rows: Vec<$crate::store::rows::StratumRunRow> = qb.build_query_as().fetch_all(executor).await?;
                // Cells the grid no longer has (a level removed) are not
                // judged, and get no seeds.
                let mut runs = Vec::with_capacity(rows.len());
                for row in rows {
                    let run: sweep_core::adaptive::Run = row.try_into()?;
                    if spec.has_cell(&run.cell) {
                        runs.push(run);
                    }
                }
                Ok(runs)
            }

            /// The grid of `sweep_id` when it has a seed plan and is not
            /// cancelled, its row locked for the rest of the transaction on
            /// PostgreSQL (`ADAPTIVE_SPEC_SQL`). There it is taken before the
            /// trial rows are touched, in the order `cancel` and `submit` take
            /// them (the sweep, then its trials), so they cannot deadlock
            /// (SQLite, one writer, reads it after: `PLAN_BEFORE_RESULT`). A
            /// stored grid that cannot be read is logged and judged as no
            /// plan: it must not stop trials from finishing.
            async fn lock_plan(
                tx: &mut <$db as sqlx::Database>::Connection,
                sweep_id: &str,
            ) -> Result<Option<sweep_core::GridSpec>, $crate::store::StoreError> {
                let row: Option<(String, String)> =
                    sqlx::query_as(Self::ADAPTIVE_SPEC_SQL).bind(sweep_id).fetch_optional(&mut *tx).await?;
                Ok(row.and_then(|(id, json)| Self::readable_plan(&id, &json)))
            }

            /// A stored grid, or `None` (logged) when it cannot be read.
            fn readable_plan(sweep_id: &str, json: &str) -> Option<sweep_core::GridSpec> {
                $crate::store::spec::stored_grid(sweep_id, json)
                    .map_err(|e| tracing::error!(sweep = %sweep_id, error = %e, "adaptive seeds: the sweep's stored grid is unreadable; no seeds are added"))
                    .ok()
            }

            /// [`Self::lock_plan`] for the sweep of the trial running under
            /// `lease_id` (`None` when none is, or it has no plan), in one
            /// statement.
            async fn plan_of_lease(
                tx: &mut <$db as sqlx::Database>::Connection,
                lease_id: &str,
            ) -> Result<Option<sweep_core::GridSpec>, $crate::store::StoreError> {
                let row: Option<(String, String)> =
                    sqlx::query_as(Self::ADAPTIVE_SPEC_OF_LEASE_SQL).bind(lease_id).fetch_optional(&mut *tx).await?;
                Ok(row.and_then(|(id, json)| Self::readable_plan(&id, &json)))
            }

            /// A trial of `spec`'s sweep (with its `settings_hash` and cell
            /// JSON) finished: its stratum is judged ([`Self::adapt`]) when
            /// the trial is one of the grid's current cells and settings.
            async fn judge_finished(
                tx: &mut <$db as sqlx::Database>::Connection,
                spec: &sweep_core::GridSpec,
                settings_hash: Option<&str>,
                cell: &str,
            ) -> Result<u64, $crate::store::StoreError> {
                let (current, _) = $crate::store::spec::shared_settings(&spec.train, &spec.data, &spec.trainer);
                if settings_hash != Some(current.as_str()) {
                    return Ok(0);
                }
                let cell = $crate::store::spec::stored_cell(cell)?;
                if !spec.has_cell(&cell) {
                    return Ok(0);
                }
                Self::adapt(tx, spec, &current, Some(&cell)).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn submit(
                &self,
                spec: &sweep_core::GridSpec,
                now_ms: i64,
            ) -> Result<$crate::store::SubmitOutcome, $crate::store::StoreError> {
                use $crate::store::StoreError;
                spec.validate().map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
                let spec_json = serde_json::to_string(spec)
                    .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
                let mut tx = self.write.begin().await?;
                let existing: Option<(bool,)> = sqlx::query_as("SELECT cancelled FROM sweeps WHERE id = $1")
                    .bind(&spec.name)
                    .fetch_optional(&mut *tx)
                    .await?;
                match existing {
                    None => {
                        sqlx::query(
                            "INSERT INTO sweeps (id, spec_json, max_attempts, priority, cancelled, created_ms, keep_weights, adaptive) \
                             VALUES ($1, $2, $3, $4, FALSE, $5, $6, $7)",
                        )
                        .bind(&spec.name)
                        .bind(&spec_json)
                        .bind(spec.run.max_attempts as i64)
                        .bind(spec.run.priority as i64)
                        .bind(now_ms)
                        .bind(spec.run.keep_weights)
                        .bind(spec.run.adaptive.is_some())
                        .execute(&mut *tx)
                        .await?;
                    }
                    Some((cancelled,)) => {
                        sqlx::query("UPDATE sweeps SET spec_json = $2, max_attempts = $3, priority = $4, keep_weights = $5, adaptive = $6, cancelled = FALSE WHERE id = $1")
                            .bind(&spec.name)
                            .bind(&spec_json)
                            .bind(spec.run.max_attempts as i64)
                            .bind(spec.run.priority as i64)
                            .bind(spec.run.keep_weights)
                            .bind(spec.run.adaptive.is_some())
                            .execute(&mut *tx)
                            .await?;
                        if cancelled {
                            sqlx::query(
                                "UPDATE trials SET state = 'queued', finished_ms = NULL, lease_id = NULL, worker_id = NULL, holder = NULL \
                                 WHERE sweep_id = $1 AND state = 'cancelled'",
                            )
                            .bind(&spec.name)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                // The grid's train and data settings are stored once; each
                // trial row keeps only its cell and seed.
                let (settings_hash, settings_json) = $crate::store::spec::shared_settings(&spec.train, &spec.data, &spec.trainer);
                sqlx::query($crate::store::sql::SETTINGS_INSERT)
                    .bind(&settings_hash)
                    .bind(&settings_json)
                    .execute(&mut *tx)
                    .await?;
                // A chunk of cells' trials at a time: a grid of 100,000
                // trials is never all in memory at once, and many small
                // cells still go in few statements.
                let mut added = 0;
                let mut chunk = Vec::new();
                for cell in spec.cells() {
                    chunk.extend(spec.trials_of(&cell));
                    if chunk.len() >= 500 {
                        added += Self::insert_trials(&mut tx, spec, &settings_hash, &chunk).await?;
                        chunk.clear();
                    }
                }
                added += Self::insert_trials(&mut tx, spec, &settings_hash, &chunk).await?;
                // A plan new to the sweep, or a higher max_seeds, may call
                // for seeds in strata that already finished.
                added += Self::adapt(&mut tx, spec, &settings_hash, None).await?;
                let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM trials WHERE sweep_id = $1")
                    .bind(&spec.name)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::store::SubmitOutcome {
                    sweep_id: spec.name.clone(),
                    total_trials: total.max(0) as u64,
                    added_trials: added,
                })
            }

            fn store_id(&self) -> &str {
                &self.store_id
            }

            async fn lease_group(
                &self,
                who: $crate::store::Leaser<'_>,
                max: u32,
                now_ms: i64,
                ttl_ms: i64,
            ) -> Result<Vec<$crate::store::Lease>, $crate::store::StoreError> {
                // One transaction: the whole group is leased, or none of it.
                // A limit of 0 quarantines everyone, a quarantine row or not.
                if who.quarantine_after == Some(0) {
                    return Ok(Vec::new());
                }
                // A lease of one trial is a single statement, which needs no
                // transaction of its own.
                let (worker_id, holder, device) = (who.worker_id.to_owned(), who.holder.to_owned(), who.device.to_owned());
                let (threads, quarantine_after) = (who.threads, who.quarantine_after);
                let rows = self
                    .write_op(max > 1, move |conn| {
                        Box::pin(async move {
                            let who = $crate::store::Leaser {
                                worker_id: &worker_id,
                                holder: &holder,
                                device: &device,
                                threads,
                                quarantine_after,
                            };
                            Self::claim(conn, who, max, now_ms, ttl_ms).await
                        })
                    })
                    .await?;
                // The group shares its settings: look them up once.
                let Some((_, head)) = rows.first() else { return Ok(Vec::new()) };
                let settings = match &head.settings_hash {
                    Some(h) => self.settings_of(h).await?,
                    None => None,
                };
                rows.into_iter().map(|(lease_id, row)| row.into_lease(lease_id, settings.as_deref())).collect()
            }

            async fn lease_owner(
                &self,
                lease_id: &str,
            ) -> Result<Option<$crate::store::LeaseOwner>, $crate::store::StoreError> {
                let row: Option<(String, Option<String>, Option<String>, Option<i64>)> =
                    sqlx::query_as($crate::store::sql::LEASE_OWNER)
                        .bind(lease_id)
                        .fetch_optional(&self.read)
                        .await?;
                Ok(row.map(|(trial_id, holder, worker_id, failures)| {
                    $crate::store::rows::lease_owner(trial_id, holder, worker_id, failures)
                }))
            }

            async fn record_failure(
                &self,
                holder: &str,
                worker_id: &str,
                now_ms: i64,
            ) -> Result<u32, $crate::store::StoreError> {
                let (n,): (i64,) = sqlx::query_as($crate::store::sql::QUARANTINE_FAIL)
                    .bind(holder)
                    .bind(worker_id)
                    .bind(now_ms)
                    .fetch_one(&self.write)
                    .await?;
                Ok($crate::store::rows::to_u32(n))
            }

            async fn clear_failures(&self, holder: &str, worker_id: &str) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::QUARANTINE_CLEAR)
                    .bind(holder)
                    .bind(worker_id)
                    .execute(&self.write)
                    .await?;
                Ok(())
            }

            async fn failures_in_a_row(&self, holder: &str, worker_id: &str) -> Result<u32, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as($crate::store::sql::QUARANTINE_GET)
                    .bind(holder)
                    .bind(worker_id)
                    .fetch_optional(&self.read)
                    .await?;
                Ok(row.map_or(0, |(n,)| $crate::store::rows::to_u32(n)))
            }

            async fn heartbeat(
                &self,
                lease_id: &str,
                progress: $crate::store::Progress,
                now_ms: i64,
                ttl_ms: i64,
            ) -> Result<$crate::store::HeartbeatVerdict, $crate::store::StoreError> {
                use $crate::store::{sql, HeartbeatVerdict};
                let lease_id = lease_id.to_owned();
                self.write_op(false, move |conn| {
                    Box::pin(async move {
                        let renewed = sqlx::query(sql::HEARTBEAT)
                            .bind(&lease_id)
                            .bind(now_ms + ttl_ms)
                            .bind(progress.epoch as i64)
                            .bind(progress.step)
                            .bind(progress.loss)
                            .fetch_optional(&mut *conn)
                            .await?;
                        if renewed.is_some() {
                            return Ok(HeartbeatVerdict::Continue);
                        }
                        let row: Option<(String, String)> =
                            sqlx::query_as(sql::STATE_BY_LEASE).bind(&lease_id).fetch_optional(&mut *conn).await?;
                        Ok(match row {
                            Some((_, state)) if state == "cancelled" => HeartbeatVerdict::Cancel,
                            _ => HeartbeatVerdict::LeaseLost,
                        })
                    })
                })
                .await
            }

            async fn put_batch(
                &self,
                lease_id: &str,
                points: &[$crate::store::MetricRow],
                truncate_after: Option<i64>,
                checkpoint_step: Option<i64>,
            ) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::StoreError;
                let lease_id = lease_id.to_owned();
                let points = points.to_vec();
                self.write_op(true, move |conn| {
                    Box::pin(async move {
                        let row: Option<(String, String)> =
                            sqlx::query_as(Self::STATE_FOR_POINTS_SQL).bind(&lease_id).fetch_optional(&mut *conn).await?;
                        let trial_id = match row {
                            Some((id, state)) if state == "running" => id,
                            _ => return Err(StoreError::LeaseLost(lease_id)),
                        };
                        let batch = $crate::store::PointBatch { points: &points, truncate_after, checkpoint_step };
                        Self::store_points(conn, &trial_id, batch).await
                    })
                })
                .await
            }

            async fn complete_with(
                &self,
                lease_id: &str,
                outcome: $crate::store::FinalOutcome,
                summary: &$crate::store::TrialSummary,
                last: $crate::store::PointBatch<'_>,
                provenance: Option<&sweep_core::Provenance>,
                now_ms: i64,
            ) -> Result<$crate::store::Completed, $crate::store::StoreError> {
                use $crate::store::{sql, Completed, StoreError};
                let state = outcome.as_str();
                let lease_id = lease_id.to_owned();
                let summary = summary.clone();
                let points = last.points.to_vec();
                let (truncate_after, checkpoint_step) = (last.truncate_after, last.checkpoint_step);
                let provenance = provenance.filter(|p| !p.is_empty()).cloned();
                // One transaction with the last points, the provenance and
                // the seeds the trial's stratum may now need: a sweep is
                // never seen finished while one is due, and a result is
                // never stored without its points.
                self.write_op(true, move |conn| {
                    Box::pin(async move {
                        let mut plan =
                            if Self::PLAN_BEFORE_RESULT { Self::plan_of_lease(conn, &lease_id).await? } else { None };
                        if let Some(p) = &provenance {
                            Self::record_provenance(conn, &lease_id, p).await?;
                        }
                        let done: Option<$crate::store::rows::CompletedRow> = sqlx::query_as(sql::COMPLETE)
                            .bind(&lease_id)
                            .bind(state)
                            .bind(now_ms)
                            .bind(summary.final_train_loss)
                            .bind(summary.final_test_loss)
                            .bind(summary.final_test_accuracy)
                            .bind(summary.best_test_accuracy)
                            .bind(summary.wall_seconds)
                            .fetch_optional(&mut *conn)
                            .await?;
                        let Some(done) = done else {
                            // A retried Complete whose first answer was lost
                            // finds its own result already stored under the
                            // same lease.
                            let row: Option<(String, String)> =
                                sqlx::query_as(sql::STATE_BY_LEASE).bind(&lease_id).fetch_optional(&mut *conn).await?;
                            return match row {
                                Some((_, s)) if s == state => Ok(Completed::default()),
                                _ => Err(StoreError::LeaseLost(lease_id)),
                            };
                        };
                        if !Self::PLAN_BEFORE_RESULT && done.adaptive == Some(true) {
                            plan = Self::lock_plan(conn, &done.sweep_id).await?;
                        }
                        let $crate::store::rows::CompletedRow {
                            id: trial_id, settings_hash, cell, holder, worker_id, failures, ..
                        } = done;
                        let stored = if points.is_empty() && truncate_after.is_none() && checkpoint_step.is_none() {
                            0
                        } else {
                            let batch = $crate::store::PointBatch { points: &points, truncate_after, checkpoint_step };
                            Self::store_points(conn, &trial_id, batch).await?
                        };
                        let added = match &plan {
                            Some(spec) => Self::judge_finished(conn, spec, settings_hash.as_deref(), &cell).await?,
                            None => 0,
                        };
                        let owner = $crate::store::rows::lease_owner(trial_id, holder, worker_id, failures);
                        Ok(Completed { added, stored, owner: Some(owner) })
                    })
                })
                .await
            }

            async fn fail(&self, lease_id: &str, reason: &str, now_ms: i64) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::{sql, StoreError};
                let mut tx = self.write.begin().await?;
                let plan = Self::plan_of_lease(&mut tx, lease_id).await?;
                let row: Option<(String, Option<String>, String)> = sqlx::query_as(sql::FAIL)
                    .bind(lease_id)
                    .bind(reason)
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some((state, settings_hash, cell)) = row else {
                    return Err(StoreError::LeaseLost(lease_id.to_owned()));
                };
                if let (Some(spec), "failed") = (&plan, state.as_str()) {
                    Self::judge_finished(&mut tx, spec, settings_hash.as_deref(), &cell).await?;
                }
                tx.commit().await?;
                Ok(state == "queued")
            }

            async fn reap_expired(&self, now_ms: i64) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                // The adaptive sweeps' rows first, in one order (see
                // `lock_plan`).
                let sweeps: Vec<(String,)> = sqlx::query_as($crate::store::sql::EXPIRED_SWEEPS)
                    .bind(now_ms)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut plans = std::collections::HashMap::new();
                for (sweep_id,) in sweeps {
                    if let Some(spec) = Self::lock_plan(&mut tx, &sweep_id).await? {
                        plans.insert(sweep_id, spec);
                    }
                }
                let rows: Vec<(String, String, Option<String>, String)> = sqlx::query_as($crate::store::sql::REAP)
                    .bind(now_ms)
                    .bind($crate::store::MAX_INFRA_FAILURES as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                for (state, sweep_id, settings_hash, cell) in &rows {
                    if let (Some(spec), "failed") = (plans.get(sweep_id), state.as_str()) {
                        Self::judge_finished(&mut tx, spec, settings_hash.as_deref(), cell).await?;
                    }
                }
                tx.commit().await?;
                Ok(rows.len() as u64)
            }

            async fn release(&self, lease_id: &str, reason: &str) -> Result<(), $crate::store::StoreError> {
                let row: Option<(String,)> = sqlx::query_as($crate::store::sql::RELEASE)
                    .bind(lease_id)
                    .bind(reason)
                    .fetch_optional(&self.write)
                    .await?;
                row.map(|_| ()).ok_or_else(|| $crate::store::StoreError::LeaseLost(lease_id.to_owned()))
            }

            async fn extend_running_leases(&self, now_ms: i64, ttl_ms: i64) -> Result<u64, $crate::store::StoreError> {
                Ok(sqlx::query($crate::store::sql::EXTEND_LEASES)
                    .bind(now_ms + ttl_ms)
                    .execute(&self.write)
                    .await?
                    .rows_affected())
            }

            async fn status(
                &self,
                sweep_id: Option<&str>,
            ) -> Result<Vec<$crate::store::SweepStatus>, $crate::store::StoreError> {
                use $crate::store::rows::RunningRow;
                use $crate::store::{sql, StateCounts, StoreError, SweepStatus};
                let sweeps: Vec<(String, bool, i64)> = match sweep_id {
                    Some(id) => sqlx::query_as(sql::SWEEPS_ONE).bind(id).fetch_all(&self.read).await?,
                    None => sqlx::query_as(sql::SWEEPS_ALL).fetch_all(&self.read).await?,
                };
                if let (Some(id), true) = (sweep_id, sweeps.is_empty()) {
                    return Err(StoreError::NotFound(format!("sweep {id:?}")));
                }
                let counts: Vec<(String, String, i64)> = match sweep_id {
                    Some(id) => sqlx::query_as(sql::COUNTS_ONE).bind(id).fetch_all(&self.read).await?,
                    None => sqlx::query_as(sql::COUNTS_ALL).fetch_all(&self.read).await?,
                };
                let running: Vec<RunningRow> = match sweep_id {
                    Some(id) => sqlx::query_as(sql::RUNNING_ONE).bind(id).fetch_all(&self.read).await?,
                    None => sqlx::query_as(sql::RUNNING_ALL).fetch_all(&self.read).await?,
                };
                let mut out: Vec<SweepStatus> = sweeps
                    .into_iter()
                    .map(|(id, cancelled, created_ms)| SweepStatus {
                        sweep_id: id,
                        counts: StateCounts::default(),
                        running: Vec::new(),
                        cancelled,
                        created_ms,
                    })
                    .collect();
                let index: std::collections::HashMap<String, usize> =
                    out.iter().enumerate().map(|(i, s)| (s.sweep_id.clone(), i)).collect();
                for (sweep, state, n) in counts {
                    if let Some(&i) = index.get(&sweep) {
                        out[i].counts.add($crate::store::spec::stored_state(&state)?, n.max(0) as u64);
                    }
                }
                for row in running {
                    if let Some(&i) = index.get(&row.sweep_id) {
                        out[i].running.push(row.into_running()?);
                    }
                }
                Ok(out)
            }

            async fn cancel(&self, sweep_id: &str, now_ms: i64) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::{sql, StoreError};
                let mut tx = self.write.begin().await?;
                let found = sqlx::query(sql::CANCEL_SWEEP).bind(sweep_id).execute(&mut *tx).await?;
                if found.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("sweep {sweep_id:?}")));
                }
                let n = sqlx::query(sql::CANCEL_TRIALS)
                    .bind(sweep_id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n)
            }

            async fn strata(
                &self,
                sweep_id: &str,
            ) -> Result<Option<$crate::store::Strata>, $crate::store::StoreError> {
                use $crate::store::StoreError;
                let row: Option<(Option<String>,)> =
                    sqlx::query_as($crate::store::sql::ADAPTIVE_GRID).bind(sweep_id).fetch_optional(&self.read).await?;
                let Some((json,)) = row else { return Err(StoreError::NotFound(format!("sweep {sweep_id:?}"))) };
                let Some(json) = json else { return Ok(None) };
                let spec = $crate::store::spec::stored_grid(sweep_id, &json)?;
                let Some(plan) = spec.run.adaptive.clone() else { return Ok(None) };
                let (settings_hash, _) = $crate::store::spec::shared_settings(&spec.train, &spec.data, &spec.trainer);
                let runs = Self::stratum_runs(&self.read, &spec, &settings_hash, None).await?;
                let strata = sweep_core::adaptive::review(&plan, spec.schema(), &runs);
                Ok(Some($crate::store::Strata { plan, strata }))
            }

            async fn trials(
                &self,
                sweep_id: &str,
            ) -> Result<Vec<$crate::store::TrialRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::rows::TrialRow> =
                    sqlx::query_as($crate::store::sql::TRIALS).bind(sweep_id).fetch_all(&self.read).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn metrics(
                &self,
                trial_id: &str,
            ) -> Result<Vec<$crate::store::MetricRow>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::rows::MetricPointRow> =
                    sqlx::query_as($crate::store::sql::METRICS).bind(trial_id).fetch_all(&self.read).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn save_log(
                &self,
                lease_id: &str,
                text: &str,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                let row: Option<(String, i64)> = sqlx::query_as($crate::store::sql::SAVE_LOG)
                    .bind(lease_id)
                    .bind(now_ms)
                    .bind(text)
                    .fetch_optional(&self.write)
                    .await?;
                let (trial, attempt) =
                    row.ok_or_else(|| $crate::store::StoreError::LeaseLost(lease_id.to_owned()))?;
                let oldest_dropped = attempt - $crate::store::LOG_ATTEMPTS_KEPT;
                if oldest_dropped > 0 {
                    sqlx::query($crate::store::sql::PRUNE_LOGS)
                        .bind(&trial)
                        .bind(oldest_dropped)
                        .execute(&self.write)
                        .await?;
                }
                Ok(())
            }

            async fn logs(
                &self,
                id: &str,
            ) -> Result<(String, Vec<$crate::store::AttemptLog>), $crate::store::StoreError> {
                use $crate::store::StoreError;
                let id = id.to_ascii_lowercase();
                let id = id.as_str();
                if id.len() < 4 || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StoreError::InvalidArgument(format!(
                        "{}: a trial ID is 32 hex digits (a prefix of at least 4 will do)",
                        sweep_core::quote::short(id)
                    )));
                }
                let found: Vec<(String,)> =
                    sqlx::query_as($crate::store::sql::TRIAL_BY_PREFIX).bind(id).fetch_all(&self.read).await?;
                let trial = match found.as_slice() {
                    [] => return Err(StoreError::NotFound(format!("trial {id:?}"))),
                    [(one,)] => one.clone(),
                    _ => {
                        return Err(StoreError::InvalidArgument(format!(
                            "{id:?} is the start of more than one trial ID; give more of it"
                        )))
                    }
                };
                let logs = sqlx::query_as($crate::store::sql::LOGS).bind(&trial).fetch_all(&self.read).await?;
                Ok((trial, logs))
            }
        }
    };
}
