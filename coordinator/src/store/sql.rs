//! The SQL both backends share. Placeholders are `$N`: PostgreSQL's native
//! form, and SQLite (through sqlx) maps `$N` to argument N as well.

/// A lease statement around a backend's pick (a subquery naming at most one
/// queued trial; how it locks is where the dialects differ): the trial
/// becomes `running` under lease `$1`, for worker `$2`, until `$3`, at `$4`,
/// held by `$5` on device `$6` with `$7` threads. `AND state = 'queued'`
/// guards against a row leased between the pick and the update.
macro_rules! lease_sql {
    ($pick:expr) => {
        concat!(
            "UPDATE trials SET state = 'running', lease_id = $1, worker_id = $2, lease_expires_ms = $3, \
             attempts = attempts + 1, started_ms = COALESCE(started_ms, $4), holder = $5, device = $6, threads = $7, \
             progress_epoch = NULL, progress_step = NULL, progress_loss = NULL, \
             code_version = NULL, libtorch = NULL, device_name = NULL, dataset_sha256 = NULL \
             WHERE id = (",
            $pick,
            ") AND state = 'queued' \
             RETURNING id, sweep_id, cell_key, spec_json, settings_hash, attempts, checkpoint_step, \
             (SELECT keep_weights FROM sweeps WHERE sweeps.id = trials.sweep_id) AS keep_weights"
        )
    };
}

/// The condition a lease's head pick adds: the caller (`$5` identity, `$2`
/// worker ID) has failed fewer than `$8` trials in a row (quarantine), so a
/// quarantined worker's lease changes nothing and costs no separate read.
macro_rules! not_quarantined {
    () => {
        "NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.holder = $5 AND q.worker_id = $2 AND q.failures >= $8)"
    };
}

pub(crate) const HEARTBEAT: &str =
    "UPDATE trials SET lease_expires_ms = $2, progress_epoch = $3, progress_step = $4, progress_loss = $5 \
     WHERE lease_id = $1 AND state = 'running' RETURNING id";

/// The trial under lease `$1` and its state (each backend adds how it
/// locks the row before writing its points: `STATE_FOR_POINTS_SQL`).
macro_rules! state_by_lease_sql {
    ($lock:literal) => {
        concat!("SELECT id, state FROM trials WHERE lease_id = $1", $lock)
    };
}

pub(crate) const STATE_BY_LEASE: &str = state_by_lease_sql!("");

/// The provenance of the attempt running under lease `$1`, recorded just
/// before it completes.
pub(crate) const SET_PROVENANCE: &str = "UPDATE trials SET code_version = $2, libtorch = $3, device_name = $4, \
     dataset_sha256 = $5 WHERE lease_id = $1 AND state = 'running'";

pub(crate) const COMPLETE: &str = "UPDATE trials SET state = $2, finished_ms = $3, lease_expires_ms = NULL, \
     final_train_loss = $4, final_test_loss = $5, final_test_accuracy = $6, best_test_accuracy = $7, wall_seconds = $8 \
     WHERE lease_id = $1 AND state = 'running' RETURNING id, settings_hash, cell, holder, worker_id, \
     (SELECT q.failures FROM quarantine q WHERE q.holder = COALESCE(trials.holder, '') AND q.worker_id = trials.worker_id) AS failures, \
     sweep_id, (SELECT s.adaptive AND NOT s.cancelled FROM sweeps s WHERE s.id = trials.sweep_id) AS adaptive";

pub(crate) const FAIL: &str = "UPDATE trials SET failures = failures + 1, last_error = $2, \
     state = CASE WHEN failures + 1 >= max_attempts THEN 'failed' ELSE 'queued' END, \
     finished_ms = CASE WHEN failures + 1 >= max_attempts THEN $3 ELSE NULL END, \
     lease_id = NULL, worker_id = NULL, holder = NULL, lease_expires_ms = NULL \
     WHERE lease_id = $1 AND state = 'running' RETURNING state, settings_hash, cell";

pub(crate) const REAP: &str = "UPDATE trials SET infra_failures = infra_failures + 1, \
     last_error = 'lease expired: worker ' || COALESCE(worker_id, '?') || ' stopped heartbeating', \
     state = CASE WHEN infra_failures + 1 >= $2 THEN 'failed' ELSE 'queued' END, \
     finished_ms = CASE WHEN infra_failures + 1 >= $2 THEN $1 ELSE NULL END, \
     lease_id = NULL, worker_id = NULL, holder = NULL, lease_expires_ms = NULL \
     WHERE state = 'running' AND lease_expires_ms < $1 \
     RETURNING state, sweep_id, settings_hash, cell";

/// A sweep's grid when it has a seed plan and is not cancelled (each
/// backend adds how it locks the row: `ADAPTIVE_SPEC_SQL`).
macro_rules! adaptive_spec_sql {
    ($lock:literal) => {
        concat!("SELECT id, spec_json FROM sweeps WHERE id = $1 AND adaptive AND NOT cancelled", $lock)
    };
}

/// The same for the sweep of the trial running under lease `$1`, in one
/// statement (`$lock` locks only the sweep's row).
macro_rules! adaptive_spec_of_lease_sql {
    ($lock:literal) => {
        concat!(
            "SELECT s.id, s.spec_json FROM trials t JOIN sweeps s ON s.id = t.sweep_id \
             WHERE t.lease_id = $1 AND t.state = 'running' AND s.adaptive AND NOT s.cancelled",
            $lock
        )
    };
}
/// The sweeps with a lease past its deadline at `$1`, in one order.
pub(crate) const EXPIRED_SWEEPS: &str = "SELECT DISTINCT sweep_id FROM trials \
     WHERE state = 'running' AND lease_expires_ms < $1 ORDER BY sweep_id";
/// The start of the query for the trials of some strata of sweep `$1`
/// (the caller adds the settings and cells).
pub(crate) const STRATUM_RUNS: &str = "SELECT cell, seed, state, final_test_accuracy FROM trials WHERE sweep_id = ";

pub(crate) const COUNTS_ALL: &str = "SELECT sweep_id, state, COUNT(*) AS n FROM trials GROUP BY sweep_id, state";
pub(crate) const COUNTS_ONE: &str =
    "SELECT sweep_id, state, COUNT(*) AS n FROM trials WHERE sweep_id = $1 GROUP BY sweep_id, state";
pub(crate) const SWEEPS_ALL: &str = "SELECT id, cancelled, created_ms FROM sweeps ORDER BY created_ms, id";
pub(crate) const SWEEPS_ONE: &str = "SELECT id, cancelled, created_ms FROM sweeps WHERE id = $1";
/// A sweep's grid when it has a seed plan (NULL without one).
pub(crate) const ADAPTIVE_GRID: &str = "SELECT CASE WHEN adaptive THEN spec_json END FROM sweeps WHERE id = $1";
pub(crate) const RUNNING_ALL: &str = "SELECT t.id, t.sweep_id, t.worker_id, t.spec_json, s.settings_json, t.attempts, \
     t.progress_epoch, t.progress_step, t.progress_loss \
     FROM trials t LEFT JOIN trial_settings s ON s.hash = t.settings_hash WHERE t.state = 'running' ORDER BY t.seq";
pub(crate) const RUNNING_ONE: &str = "SELECT t.id, t.sweep_id, t.worker_id, t.spec_json, s.settings_json, t.attempts, \
     t.progress_epoch, t.progress_step, t.progress_loss \
     FROM trials t LEFT JOIN trial_settings s ON s.hash = t.settings_hash \
     WHERE t.state = 'running' AND t.sweep_id = $1 ORDER BY t.seq";
pub(crate) const SETTINGS_INSERT: &str =
    "INSERT INTO trial_settings (hash, settings_json) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING";
pub(crate) const SETTINGS: &str = "SELECT settings_json FROM trial_settings WHERE hash = $1";

pub(crate) const CANCEL_SWEEP: &str = "UPDATE sweeps SET cancelled = TRUE WHERE id = $1";
pub(crate) const CANCEL_TRIALS: &str =
    "UPDATE trials SET state = 'cancelled', finished_ms = $2, lease_expires_ms = NULL \
     WHERE sweep_id = $1 AND state IN ('queued', 'running')";

pub(crate) const RELEASE: &str = "UPDATE trials SET state = 'queued', handbacks = handbacks + 1, last_error = $2, \
     lease_id = NULL, worker_id = NULL, holder = NULL, lease_expires_ms = NULL \
     WHERE lease_id = $1 AND state = 'running' RETURNING id";

pub(crate) const EXTEND_LEASES: &str = "UPDATE trials SET lease_expires_ms = $1 \
     WHERE state = 'running' AND lease_expires_ms < $1";

/// Analysis points (`sweep_core::analysis_metric`) stay: their steps are
/// not training steps.
pub(crate) const TRUNCATE_METRICS: &str =
    "DELETE FROM metrics WHERE trial_id = $1 AND step > $2 AND name NOT LIKE 'analysis/%'";
/// A training point keeps its first value (a re-sent point is stored once);
/// an analysis point measured again replaces the stored one.
pub(crate) const METRICS_CONFLICT: &str = " ON CONFLICT (trial_id, name, step) DO UPDATE SET value = excluded.value, \
     epoch = excluded.epoch WHERE metrics.name LIKE 'analysis/%'";
/// A resumed (or restarted, T = 0) attempt: the vouched checkpoint step
/// becomes NULL for T = 0, else MIN(vouched, T) (NULL stays NULL).
pub(crate) const SET_RESUMED: &str = "UPDATE trials SET resumed_step = $2, \
     checkpoint_step = CASE WHEN $2 <= 0 OR checkpoint_step IS NULL THEN NULL \
     WHEN checkpoint_step < $2 THEN checkpoint_step ELSE $2 END \
     WHERE id = $1";
pub(crate) const SET_CHECKPOINT: &str = "UPDATE trials SET checkpoint_step = $2 WHERE id = $1";

/// The holder of lease `$1` and its quarantine count (NULL: none), in one
/// read.
pub(crate) const LEASE_OWNER: &str = "SELECT t.id, t.holder, t.worker_id, q.failures FROM trials t \
     LEFT JOIN quarantine q ON q.holder = COALESCE(t.holder, '') AND q.worker_id = t.worker_id \
     WHERE t.lease_id = $1 AND t.state = 'running'";

pub(crate) const STORE_ID_INSERT: &str =
    "INSERT INTO store_meta (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING";
pub(crate) const STORE_ID: &str = "SELECT value FROM store_meta WHERE key = 'store_id'";

pub(crate) const QUARANTINE_FAIL: &str =
    "INSERT INTO quarantine (holder, worker_id, failures, updated_ms) VALUES ($1, $2, 1, $3) \
     ON CONFLICT (holder, worker_id) DO UPDATE SET failures = quarantine.failures + 1, updated_ms = $3 \
     RETURNING failures";
pub(crate) const QUARANTINE_CLEAR: &str = "DELETE FROM quarantine WHERE holder = $1 AND worker_id = $2";
pub(crate) const QUARANTINE_GET: &str = "SELECT failures FROM quarantine WHERE holder = $1 AND worker_id = $2";

pub(crate) const TRIALS: &str = "SELECT id, sweep_id, state, attempts, failures, infra_failures, handbacks, resumed_step, last_error, worker_id, \
     checkpoint_step, device, threads, final_train_loss, final_test_loss, final_test_accuracy, best_test_accuracy, wall_seconds \
     FROM trials WHERE sweep_id = $1 ORDER BY seq";
pub(crate) const METRICS: &str = "SELECT step, epoch, name, value FROM metrics WHERE trial_id = $1 ORDER BY name, step";

/// The output tail of the attempt holding lease `$1` (none when the lease
/// is not current: no row is written, none returned).
pub(crate) const SAVE_LOG: &str = "INSERT INTO trial_logs (trial_id, attempt, worker_id, updated_ms, text) \
     SELECT id, attempts, COALESCE(worker_id, ''), $2, $3 FROM trials WHERE lease_id = $1 AND state = 'running' \
     ON CONFLICT (trial_id, attempt) DO UPDATE SET worker_id = excluded.worker_id, \
     updated_ms = excluded.updated_ms, text = excluded.text RETURNING trial_id, attempt";

/// A trial keeps the logs of its last [`super::LOG_ATTEMPTS_KEPT`] attempts.
pub(crate) const PRUNE_LOGS: &str = "DELETE FROM trial_logs WHERE trial_id = $1 AND attempt <= $2";

/// Trials whose ID starts with `$1` (hex digits only: no LIKE wildcard),
/// at most two (one is an answer, two an ambiguity).
pub(crate) const TRIAL_BY_PREFIX: &str = "SELECT id FROM trials WHERE id LIKE $1 || '%' ORDER BY id LIMIT 2";

pub(crate) const LOGS: &str =
    "SELECT attempt, worker_id, updated_ms, text FROM trial_logs WHERE trial_id = $1 ORDER BY attempt";

/// The columns a submit writes; `ON CONFLICT DO NOTHING` (no target) so a
/// trial that exists under its `id` or its `identity` is skipped.
pub(crate) const TRIAL_INSERT: &str = "INSERT INTO trials \
     (id, identity, sweep_id, cell_key, seq, cell, seed, spec_json, settings_hash, priority, max_attempts, state) ";
pub(crate) const TRIAL_INSERT_END: &str = " ON CONFLICT DO NOTHING";
