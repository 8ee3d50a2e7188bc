-- sweep schema, SQLite flavour. Keep in step with migrations/postgres.
CREATE TABLE sweeps (
    id           TEXT PRIMARY KEY,          -- the sweep name: unique per coordinator
    spec_json    TEXT NOT NULL,             -- the last submitted GridSpec, for reference
    max_attempts INTEGER NOT NULL,
    priority     INTEGER NOT NULL,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL
);

CREATE TABLE trials (
    id              TEXT PRIMARY KEY,       -- hash of (sweep, canonical cell + seed)
    sweep_id        TEXT NOT NULL REFERENCES sweeps(id),
    cell_key        TEXT NOT NULL,          -- hash of (sweep, canonical cell without seed)
    seq             INTEGER NOT NULL,       -- submission order, for FIFO within a priority
    depth           INTEGER NOT NULL,
    skip            INTEGER NOT NULL,
    init            TEXT NOT NULL,
    batchnorm       INTEGER NOT NULL,
    seed            INTEGER NOT NULL,
    spec_json       TEXT NOT NULL,          -- the TrialSpec a worker trains
    priority        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    state           TEXT NOT NULL,          -- queued | running | succeeded | diverged | failed | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,  -- leases granted so far
    failures        INTEGER NOT NULL DEFAULT 0,  -- attempts that ended in failure or lease expiry
    lease_id        TEXT,
    worker_id       TEXT,
    lease_expires_ms INTEGER,
    last_error      TEXT,
    progress_epoch  INTEGER,
    progress_step   INTEGER,
    progress_loss   REAL,
    started_ms      INTEGER,
    finished_ms     INTEGER,
    final_train_loss    REAL,
    final_test_loss     REAL,
    final_test_accuracy REAL,
    best_test_accuracy  REAL,
    wall_seconds        REAL
);

CREATE INDEX trials_queue ON trials (state, priority DESC, seq);
CREATE INDEX trials_sweep ON trials (sweep_id, state);
CREATE INDEX trials_lease ON trials (lease_id);

CREATE TABLE metrics (
    trial_id TEXT NOT NULL REFERENCES trials(id),
    name     TEXT NOT NULL,
    step     INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    value    REAL NOT NULL,
    PRIMARY KEY (trial_id, name, step)
) WITHOUT ROWID;
