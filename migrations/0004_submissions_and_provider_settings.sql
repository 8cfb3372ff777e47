-- Trainings started through the daemon. A row is written before Replicate is
-- called, so a daemon that dies mid-call leaves a pending row that start-up
-- reconciliation matches to the training Replicate created (or marks failed).
-- Secrets are never part of request_json; the fingerprint is the sha256 of it.
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT UNIQUE,
    model TEXT NOT NULL,
    version TEXT,
    destination TEXT NOT NULL,
    hardware TEXT NOT NULL,
    request_json TEXT NOT NULL,
    skipped_json TEXT NOT NULL DEFAULT '[]',
    warnings_json TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

CREATE INDEX submissions_by_state ON submissions (state, created_at);

-- Provider settings changed through PUT /api/cloud/providers/replicate: each row
-- overrides one configuration key ("section.key") with a JSON value. Never secrets.
CREATE TABLE provider_settings (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

-- The hardware a submitted job was started on, for its cost; NULL for jobs the
-- daemon only heard of (their input's "hardware", else the default, is used).
ALTER TABLE jobs ADD COLUMN hardware TEXT;
