-- Captured output of trials (issue 13, `sweep logs`). Keep in step with
-- the other dialect's file. One row per attempt: the tail of its output
-- (at most 64 KiB) as its worker last sent it (PushLog).
CREATE TABLE trial_logs (
    trial_id TEXT NOT NULL REFERENCES trials (id),
    attempt BIGINT NOT NULL,
    worker_id TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (trial_id, attempt)
);
