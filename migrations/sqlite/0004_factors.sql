-- Factors as data (issue 9). Keep in step with migrations/postgres.
-- A trial's cell is stored as the canonical JSON of its factor map (sorted
-- keys, typed levels) instead of one column per factor, and its identity
-- (the trial ID under the current hash domain, sweep.trial.v2) in its own
-- unique column: rows stored under v1 keep their `id` (metrics, leases and
-- checkpoints refer to it) and get `cell` and `identity` when the
-- coordinator first opens the database (store/upgrade.rs rewrites their
-- spec into the v2 form in one transaction).
ALTER TABLE trials ADD COLUMN cell TEXT NOT NULL DEFAULT '';
ALTER TABLE trials ADD COLUMN identity TEXT;
CREATE UNIQUE INDEX trials_identity ON trials (identity);
ALTER TABLE trials DROP COLUMN depth;
ALTER TABLE trials DROP COLUMN skip;
ALTER TABLE trials DROP COLUMN init;
ALTER TABLE trials DROP COLUMN batchnorm;
