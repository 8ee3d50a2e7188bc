-- Infrastructure failures (lease expired, worker lost) are counted apart
-- from trial failures: only trial failures use up max_attempts.
ALTER TABLE trials ADD COLUMN infra_failures BIGINT NOT NULL DEFAULT 0;
-- Times the trial was handed back on preemption (SIGTERM): no attempt used.
ALTER TABLE trials ADD COLUMN handbacks BIGINT NOT NULL DEFAULT 0;
-- The step the latest attempt resumed from (0: started from scratch).
ALTER TABLE trials ADD COLUMN resumed_step BIGINT;
