"""Recording: the SQLite schema, the single writer and the job state machine."""
