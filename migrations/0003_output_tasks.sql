-- Delivery of a succeeded job's outputs: one task per job and destination (the
-- local copy first, then each publisher), claimed by workers under a lease so that
-- a task held by a crashed process is taken up again once the lease runs out.
CREATE TABLE output_tasks (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    reason TEXT,
    message TEXT,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER,
    result_json TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    UNIQUE (job_id, destination)
) STRICT;

CREATE INDEX output_tasks_due ON output_tasks (destination, state, next_attempt_at);

-- The files of a job's local copy: names are fixed once, in output order, so that a
-- restart resumes each URL into the same file.
CREATE TABLE output_files (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    position INTEGER NOT NULL,
    url TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER,
    sha256 TEXT,
    completed_at REAL,
    PRIMARY KEY (job_id, position),
    UNIQUE (job_id, name)
) STRICT;
