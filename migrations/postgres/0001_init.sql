-- sweep schema, PostgreSQL flavour. Keep in step with migrations/sqlite.
CREATE TABLE sweeps (
    id           TEXT PRIMARY KEY,
    spec_json    TEXT NOT NULL,
    max_attempts BIGINT NOT NULL,
    priority     BIGINT NOT NULL,
    cancelled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms   BIGINT NOT NULL
);

CREATE TABLE trials (
    id              TEXT PRIMARY KEY,
    sweep_id        TEXT NOT NULL REFERENCES sweeps(id),
    cell_key        TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    depth           BIGINT NOT NULL,
    skip            BOOLEAN NOT NULL,
    init            TEXT NOT NULL,
    batchnorm       BOOLEAN NOT NULL,
    seed            BIGINT NOT NULL,
    spec_json       TEXT NOT NULL,
    priority        BIGINT NOT NULL,
    max_attempts    BIGINT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    failures        BIGINT NOT NULL DEFAULT 0,
    lease_id        TEXT,
    worker_id       TEXT,
    lease_expires_ms BIGINT,
    last_error      TEXT,
    progress_epoch  BIGINT,
    progress_step   BIGINT,
    progress_loss   DOUBLE PRECISION,
    started_ms      BIGINT,
    finished_ms     BIGINT,
    final_train_loss    DOUBLE PRECISION,
    final_test_loss     DOUBLE PRECISION,
    final_test_accuracy DOUBLE PRECISION,
    best_test_accuracy  DOUBLE PRECISION,
    wall_seconds        DOUBLE PRECISION
);

CREATE INDEX trials_queue ON trials (state, priority DESC, seq);
CREATE INDEX trials_sweep ON trials (sweep_id, state);
CREATE INDEX trials_lease ON trials (lease_id);

CREATE TABLE metrics (
    trial_id TEXT NOT NULL REFERENCES trials(id),
    name     TEXT NOT NULL,
    step     BIGINT NOT NULL,
    epoch    BIGINT NOT NULL,
    value    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trial_id, name, step)
);
