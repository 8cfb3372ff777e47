-- Jobs (one per Replicate prediction or training id) and the history of every
-- verified delivery, keyed by webhook-id so that a retried message is seen again.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    model TEXT,
    version TEXT,
    input_json TEXT,
    output_json TEXT,
    error TEXT,
    metrics_json TEXT,
    predict_time_s REAL,
    created_at TEXT,
    created_ts REAL,
    started_at TEXT,
    completed_at TEXT,
    source TEXT,
    urls_json TEXT,
    data_removed INTEGER,
    logs TEXT NOT NULL DEFAULT '',
    conflict_status TEXT,
    first_seen_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

CREATE INDEX jobs_by_created ON jobs (created_ts DESC, id);
CREATE INDEX jobs_by_status ON jobs (status, created_ts DESC);

CREATE TABLE webhook_deliveries (
    webhook_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    received_at REAL NOT NULL,
    body_bytes INTEGER NOT NULL,
    body_sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,
    outcome TEXT NOT NULL
) STRICT;

CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (job_id, received_at);

CREATE TABLE daemon_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
