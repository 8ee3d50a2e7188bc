-- Factors as data (issue 9). Keep in step with migrations/postgres.
-- A trial's cell is stored as data: the canonical JSON of its factor map
-- (sorted keys, typed values, e.g. {"batchnorm":true,"depth":8,"init":"default","skip":true}),
-- instead of one column per factor. The default only exists so the column
-- can be added to a filled table; every insert names the cell.
ALTER TABLE trials ADD COLUMN cell TEXT NOT NULL DEFAULT '';
-- Rows written before this migration: their cell from the four columns of
-- the only trainer that existed then (init is an identifier: no escaping).
UPDATE trials SET cell = '{"batchnorm":' || CASE WHEN batchnorm THEN 'true' ELSE 'false' END
    || ',"depth":' || CAST(depth AS TEXT)
    || ',"init":"' || init || '"'
    || ',"skip":' || CASE WHEN skip THEN 'true' ELSE 'false' END || '}';
-- The trial's identity under the current ID scheme (TrialSpec::id, domain
-- sweep.trial.v2). New rows have id = identity. Rows written before this
-- migration keep their old id (metrics, checkpoints and leases refer to it)
-- and get their identity from the coordinator when it opens the store (it
-- also rewrites their stored spec and cell key). A resubmitted grid
-- conflicts here, so it adds nothing.
ALTER TABLE trials ADD COLUMN identity TEXT;
CREATE UNIQUE INDEX trials_identity ON trials (identity);
ALTER TABLE trials DROP COLUMN depth;
ALTER TABLE trials DROP COLUMN skip;
ALTER TABLE trials DROP COLUMN init;
ALTER TABLE trials DROP COLUMN batchnorm;
