"""The task queue's rules on a real SQLite file, below the workers."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.deliver import queue
from daemon.record import db


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.connect(tmp_path / "queue.sqlite3")
    db.migrate(connection)
    now = time.time()
    connection.execute(
        "INSERT INTO jobs (id, status, first_seen_at, updated_at)"
        " VALUES ('job1', 'succeeded', ?, ?)",
        (now, now),
    )
    yield connection
    connection.close()


def states(conn: sqlite3.Connection) -> dict[str, tuple[str, str | None]]:
    rows = conn.execute("SELECT destination, state, reason FROM output_tasks")
    return {dest: (state, reason) for dest, state, reason in rows}


def test_tasks_are_created_once_per_job_and_destination(conn):
    now = time.time()
    assert queue.create_tasks(conn, "job1", ("s3",), now, 3) == 2
    assert queue.create_tasks(conn, "job1", ("s3",), now, 3) == 0
    assert set(states(conn)) == {"local", "s3"}


def test_publisher_is_not_claimable_before_the_local_copy_succeeded(conn):
    now = time.time()
    queue.create_tasks(conn, "job1", ("s3",), now, 3)
    assert queue.claim(conn, "s3", "w", now, 60) is None
    local = queue.claim(conn, "local", "w", now, 60)
    assert local is not None
    assert queue.succeed(conn, local, "w", now, {})
    assert queue.claim(conn, "s3", "w", now, 60) is not None


def test_expired_lease_is_claimed_again_by_another_worker(conn):
    now = time.time()
    queue.create_tasks(conn, "job1", (), now, 3)
    first = queue.claim(conn, "local", "dead-worker", now, 1)
    assert first is not None
    assert queue.claim(conn, "local", "other", now + 0.5, 60) is None
    second = queue.claim(conn, "local", "other", now + 2, 60)
    assert second is not None
    assert second.attempts == 2
    assert not queue.renew(conn, first, "dead-worker", now + 2, 60)


def test_task_whose_worker_died_on_every_attempt_ends_worker_lost(conn):
    now = time.time()
    queue.create_tasks(conn, "job1", ("hub",), now, 2)
    for step in range(2):
        assert queue.claim(conn, "local", f"w{step}", now + step * 10, 1)
    assert queue.claim(conn, "local", "w9", now + 100, 60) is None
    assert states(conn) == {
        "local": ("failed", "worker_lost"),
        "hub": ("failed", "local_copy_failed"),
    }
