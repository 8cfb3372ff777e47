"""Numbered migrations: fresh databases, upgrades with data, and newer databases."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from daemon.record import db
from tests.helpers import WEBHOOK_PATH, cli_env, run_cli, signed_headers

OLD_LOGS = "Starting train job\nflux_train_replicate:  10%|█         | 100/1000\n"
DB_NAME = "webhookd.sqlite3"


def known_names() -> list[str]:
    return [f"{m.version:04d}_{m.name}" for m in db.known_migrations()]


def old_schema_database(tmp_path: Path) -> Path:
    """A database as the previous daemon left it: only 0001 applied, with data."""
    only_first = tmp_path / "only-0001"
    only_first.mkdir()
    (first,) = db.migrations_dir().glob("0001_*.sql")
    shutil.copy(first, only_first / first.name)
    path = tmp_path / "data" / DB_NAME
    conn = db.connect(path)
    try:
        assert db.migrate(conn, only_first) == [first.stem]
        now = time.time()
        conn.execute(
            "INSERT INTO jobs (id, status, model, created_at, created_ts, logs,"
            " first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "oldjob",
                "processing",
                "acme/trainer",
                "2025-03-04T10:15:02.118Z",
                1741083302.118,
                OLD_LOGS,
                now,
                now,
            ),
        )
        conn.execute(
            "INSERT INTO jobs (id, status, first_seen_at, updated_at)"
            " VALUES ('nologs', 'starting', ?, ?)",
            (now, now),
        )
        conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, job_id, kind, status,"
            " received_at, body_bytes, body_sha256, signature, outcome)"
            " VALUES ('msg_old', 'oldjob', 'logs', 'processing', ?, 321, ?,"
            " 'v1 key 1', 'created')",
            (now, hashlib.sha256(b"old").hexdigest()),
        )
    finally:
        conn.close()
    return path


def versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            )
        ]


def test_fresh_database_records_every_known_migration(tmp_path):
    conn = db.connect(tmp_path / DB_NAME)
    try:
        applied = db.migrate(conn)
        assert applied == known_names()
        assert len(applied) >= 2
        assert db.pending(conn) == []
        assert db.migrate(conn) == []  # a second run has nothing to do
    finally:
        conn.close()
    expected = [m.version for m in db.known_migrations()]
    assert versions(tmp_path / DB_NAME) == expected


def test_upgrade_moves_old_logs_into_chunks_and_keeps_rows(tmp_path):
    path = old_schema_database(tmp_path)
    conn = db.connect(path)
    try:
        applied = db.migrate(conn)
        assert applied == known_names()[1:]
        job = conn.execute("SELECT * FROM jobs WHERE id = 'oldjob'").fetchone()
        chunks = conn.execute(
            "SELECT start_byte, data FROM job_log_chunks WHERE job_id = 'oldjob'"
        ).fetchall()
        empty = conn.execute(
            "SELECT logs_bytes, (SELECT count(*) FROM job_log_chunks"
            " WHERE job_id = 'nologs') FROM jobs WHERE id = 'nologs'"
        ).fetchone()
        delivery = conn.execute(
            "SELECT job_id, body_bytes, outcome FROM webhook_deliveries"
            " WHERE webhook_id = 'msg_old'"
        ).fetchone()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    finally:
        conn.close()
    assert job["status"] == "processing"
    assert job["model"] == "acme/trainer"
    assert job["logs_bytes"] == len(OLD_LOGS.encode())  # bytes, not characters
    assert [(c["start_byte"], bytes(c["data"])) for c in chunks] == [
        (0, OLD_LOGS.encode())
    ]
    assert tuple(empty) == (0, 0)
    assert tuple(delivery) == ("oldjob", 321, "created")
    assert "logs" not in columns
    assert versions(path) == [m.version for m in db.known_migrations()]


async def test_upgraded_logs_are_served_and_keep_growing(
    tmp_path, daemon_client, secret
):
    old_schema_database(tmp_path)
    client = await daemon_client()  # the app migrates at start-up

    response = await client.get("/api/jobs/oldjob/logs")
    assert await response.read() == OLD_LOGS.encode()
    assert response.headers["X-Log-Bytes"] == str(len(OLD_LOGS.encode()))
    job = await (await client.get("/api/jobs/oldjob")).json()
    assert job["logs_bytes"] == len(OLD_LOGS.encode())
    assert [item["webhook_id"] for item in job["history"]] == ["msg_old"]

    grown = OLD_LOGS + "flux_train_replicate:  20%|██        | 200/1000\n"
    body = json.dumps({"id": "oldjob", "status": "processing", "logs": grown}).encode()
    posted = await client.post(
        WEBHOOK_PATH, data=body, headers=signed_headers(secret, body)
    )
    assert posted.status == 200, await posted.text()
    assert await (await client.get("/api/jobs/oldjob/logs")).read() == grown.encode()
    tail = await client.get(f"/api/jobs/oldjob/logs?offset={len(OLD_LOGS.encode())}")
    assert await tail.read() == grown.encode()[len(OLD_LOGS.encode()) :]
    with sqlite3.connect(tmp_path / "data" / DB_NAME) as conn:
        starts = [
            row[0]
            for row in conn.execute(
                "SELECT start_byte FROM job_log_chunks WHERE job_id = 'oldjob'"
                " ORDER BY start_byte"
            )
        ]
    assert starts == [0, len(OLD_LOGS.encode())]  # appended to the migrated chunk


def newer_database(tmp_path: Path) -> Path:
    path = tmp_path / "data" / DB_NAME
    conn = db.connect(path)
    try:
        db.migrate(conn)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)"
            " VALUES (9999, 'from_the_future', 0)"
        )
    finally:
        conn.close()
    return path


def test_database_with_a_newer_migration_is_refused(tmp_path):
    path = newer_database(tmp_path)
    conn = db.connect(path)
    try:
        with pytest.raises(db.SchemaError, match=r"9999.*newer"):
            db.migrate(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_cli_refuses_a_newer_database_with_exit_1(tmp_path, secret, command):
    path = newer_database(tmp_path)
    before = path.read_bytes()
    result = run_cli(
        command,
        "--data-dir",
        str(path.parent),
        *(["--port", "0"] if command == "serve" else []),
        env=cli_env(REPLICATE_WEBHOOK_SECRET=secret),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "database error" in last
    assert "9999" in last
    assert "newer than this daemon knows" in last
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr + result.stdout
    assert versions(path)[-1] == 9999
    assert len(path.read_bytes()) == len(before)


def test_daemon_applies_migrations_at_start_up(daemon_process, tmp_path):
    data_dir = tmp_path / "data"
    assert not (data_dir / DB_NAME).exists()
    proc = daemon_process(data_dir=data_dir)
    expected = [m.version for m in db.known_migrations()]
    assert versions(data_dir / DB_NAME) == expected
    assert proc.stop() == 0
    for name in known_names():
        assert name in proc.log_text()


def test_migration_with_a_failing_statement_is_rolled_back(tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    for migration in db.known_migrations():
        shutil.copy(migration.path, folder / migration.path.name)
    (folder / "9000_broken.sql").write_text(
        "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    conn = db.connect(tmp_path / DB_NAME)
    try:
        with pytest.raises(sqlite3.OperationalError):
            db.migrate(conn, folder)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert "half_done" not in tables
    assert versions(tmp_path / DB_NAME) == [m.version for m in db.known_migrations()]


def test_migration_edited_after_it_was_applied_is_refused(tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(db.migrations_dir(), folder)
    conn = db.connect(tmp_path / "edited.sqlite3")
    try:
        assert db.migrate(conn, folder)
        first = sorted(folder.glob("0001_*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited in place\n")
        with pytest.raises(db.SchemaError, match="changed after it was applied"):
            db.migrate(conn, folder)
    finally:
        conn.close()


def test_database_recorded_before_checksums_were_kept_still_upgrades(tmp_path):
    # A database from before checksums were recorded: 0001 applied, and a
    # schema_migrations table with no checksum column.
    path = tmp_path / "early.sqlite3"
    first = db.known_migrations()[0]
    conn = sqlite3.connect(path)
    conn.executescript(first.path.read_text())
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL, applied_at REAL NOT NULL) STRICT"
    )
    conn.execute("INSERT INTO schema_migrations VALUES (1, ?, 0)", (first.name,))
    conn.commit()
    conn.close()
    conn = db.connect(path)
    try:
        assert db.migrate(conn) == known_names()[1:]
        assert db.migrate(conn) == []
    finally:
        conn.close()
