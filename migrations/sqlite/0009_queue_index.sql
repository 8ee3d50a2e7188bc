-- The queue and the running trials as partial indexes (issue 14). Keep in
-- step with the other dialect's file.
--
-- The lease's pick (`state = 'queued' ORDER BY priority DESC, seq`) reads
-- `trials_queue`; holding the queue alone, it loses a trial when the trial
-- is leased and gains no entry when a running or finished trial is
-- updated. On PostgreSQL, where an update of `state` writes every index the
-- row is in, that was about a fifth of a trial's cost (64 workers: about
-- 750 -> 1,000 trials/s).
--
-- The reaper and the list of running trials (`state = 'running'`) read
-- `trials_running` (they read the old index's `state` prefix before). It
-- is on `seq`, not `lease_expires_ms`, so a heartbeat, which moves only
-- the expiry and progress, still changes no indexed column.
DROP INDEX trials_queue;
CREATE INDEX trials_queue ON trials (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX trials_running ON trials (seq) WHERE state = 'running';
