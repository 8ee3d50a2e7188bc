-- Adaptive seeds (issue 11). Keep in step with the other dialect's file.
-- Whether the sweep's grid has a seed plan (`[run] target_halfwidth`): a
-- finished trial of such a sweep is judged with its stratum, in the same
-- transaction, and may add a seed. The plan itself is in `spec_json`.
ALTER TABLE sweeps ADD COLUMN adaptive BOOLEAN NOT NULL DEFAULT FALSE;
-- A stratum's trials by cell (and a group lease's cell-mates).
CREATE INDEX trials_cell ON trials (sweep_id, cell_key);
-- New trials are numbered after the newest (MAX(seq)), now also when a
-- finished trial queues a seed.
CREATE INDEX trials_seq ON trials (seq);
