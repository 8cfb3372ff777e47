-- Logs arrive as cumulative snapshots. Rewriting the whole text on every delivery
-- made each one cost the full log size in writes; chunks store only what a new
-- snapshot appends, so the database grows with the log, not with the deliveries.
CREATE TABLE job_log_chunks (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    start_byte INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, start_byte)
) STRICT;

ALTER TABLE jobs ADD COLUMN logs_bytes INTEGER NOT NULL DEFAULT 0;
-- NULL means "not known yet": the next snapshot is compared with the stored bytes.
ALTER TABLE jobs ADD COLUMN logs_sha256 TEXT;

INSERT INTO job_log_chunks (job_id, start_byte, data)
SELECT id, 0, CAST(logs AS BLOB) FROM jobs WHERE logs <> '';

UPDATE jobs SET logs_bytes = length(CAST(logs AS BLOB));

ALTER TABLE jobs DROP COLUMN logs;
