-- Hardening (issue 8). Keep in step with migrations/postgres.
-- The store's identity: one row, key 'store_id', a UUID written once when
-- the schema is created (by the coordinator, right after this migration).
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The sweep's `[run] keep_weights`, handed to workers with each lease.
ALTER TABLE sweeps ADD COLUMN keep_weights INTEGER NOT NULL DEFAULT 0;
-- The newest checkpoint step of the trial this database vouches for
-- (MetricBatch.checkpoint_step); NULL: nothing to resume from.
ALTER TABLE trials ADD COLUMN checkpoint_step INTEGER;
-- Identity (hash of the bearer token) of the worker holding the lease;
-- empty when authentication is off.
ALTER TABLE trials ADD COLUMN holder TEXT;
-- Provenance of the latest attempt: the worker's device and libtorch threads.
ALTER TABLE trials ADD COLUMN device TEXT;
ALTER TABLE trials ADD COLUMN threads INTEGER;
-- Trials failed in a row per worker (identity + worker ID); a completed
-- trial deletes the row. Kept here so a restart forgives nobody.
CREATE TABLE quarantine (
    holder     TEXT NOT NULL,
    worker_id  TEXT NOT NULL,
    failures   INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (holder, worker_id)
);
-- A sweep's shared training and data settings, stored once (not copied into
-- every trial's spec_json): keyed by the SHA-256 of their canonical JSON.
-- Trials written from here on keep only their own part (cell and seed) in
-- spec_json and reference these settings; older rows keep their full spec
-- (settings_hash NULL) and are read as before.
CREATE TABLE trial_settings (
    hash          TEXT PRIMARY KEY,
    settings_json TEXT NOT NULL
);
ALTER TABLE trials ADD COLUMN settings_hash TEXT REFERENCES trial_settings(hash);
