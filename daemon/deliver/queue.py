"""The durable task queue in SQLite; every function runs in the writer's transaction.

A task moves queued -> running -> succeeded, or back to queued with a later
`next_attempt_at` after a retryable failure, or to a final failure state:
`failed`, `blocked_host` or `source_expired`. A running task belongs to the worker
that holds its lease; a lease that runs out (the process died) makes the task
claimable again. Publishers wait for the job's local copy: they are claimable only
once the `local` task has succeeded, and fail with it when it fails for good.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon import limits
from daemon.deliver.errors import DeliveryError, SourceExpired

LOCAL = "local"
FINAL_FAILURES = ("failed", "blocked_host", "source_expired")
FINAL_STATES = ("succeeded", *FINAL_FAILURES)


class TaskStateError(ValueError):
    """A task cannot make the asked change from the state it is in."""


@dataclass(frozen=True)
class Task:
    id: int
    job_id: str
    destination: str
    attempts: int
    max_attempts: int


def create_tasks(
    conn: sqlite3.Connection,
    job_id: str,
    destinations: Sequence[str],
    now: float,
    max_attempts: int,
) -> int:
    """Queue the local copy and each publisher once per job; return how many are new."""
    created = 0
    for destination in (LOCAL, *[d for d in destinations if d != LOCAL]):
        cursor = conn.execute(
            "INSERT OR IGNORE INTO output_tasks (job_id, destination, state,"
            " max_attempts, next_attempt_at, created_at, updated_at)"
            " VALUES (?, ?, 'queued', ?, ?, ?, ?)",
            (job_id, destination, max_attempts, now, now, now),
        )
        created += cursor.rowcount
    return created


def claim(
    conn: sqlite3.Connection, destination: str, owner: str, now: float, lease_s: float
) -> Task | None:
    """Take the most overdue claimable task for `destination`, if any."""
    # A lease that ran out on the last attempt means the worker died every time
    # (a task that crashes the process): end it instead of trying forever.
    conn.execute(
        "UPDATE output_tasks SET state = 'failed', reason = 'worker_lost',"
        " message = 'the worker stopped during every attempt', lease_owner = NULL,"
        " lease_until = NULL, updated_at = ?, finished_at = ?"
        " WHERE destination = ? AND state = 'running' AND lease_until < ?"
        " AND attempts >= max_attempts",
        (now, now, destination, now),
    )
    if destination == LOCAL:
        conn.execute(
            "UPDATE output_tasks SET state = 'failed', reason = 'local_copy_failed',"
            " message = 'the local copy failed', updated_at = ?, finished_at = ?"
            " WHERE destination <> 'local' AND state = 'queued' AND job_id IN"
            " (SELECT job_id FROM output_tasks WHERE destination = 'local'"
            "  AND reason = 'worker_lost')",
            (now, now),
        )
    row = conn.execute(
        "UPDATE output_tasks SET state = 'running', lease_owner = ?, lease_until = ?,"
        " attempts = attempts + 1, updated_at = ?"
        " WHERE id = (SELECT t.id FROM output_tasks t WHERE t.destination = ?"
        "  AND ((t.state = 'queued' AND t.next_attempt_at <= ?)"
        "       OR (t.state = 'running' AND t.lease_until < ?))"
        "  AND (t.destination = 'local' OR EXISTS (SELECT 1 FROM output_tasks l"
        "       WHERE l.job_id = t.job_id AND l.destination = 'local'"
        "       AND l.state = 'succeeded'))"
        "  ORDER BY t.next_attempt_at, t.id LIMIT 1)"
        " RETURNING id, job_id, destination, attempts, max_attempts",
        (owner, now + lease_s, now, destination, now, now),
    ).fetchone()
    return Task(*row) if row else None


def renew(
    conn: sqlite3.Connection,
    task: Task,
    owner: str,
    now: float,
    lease_s: float,
    progress: tuple[int, int | None] | None = None,
) -> bool:
    """Extend the lease (and record progress); False if the task is no longer ours."""
    done, total = progress if progress else (None, None)
    cursor = conn.execute(
        "UPDATE output_tasks SET lease_until = ?, updated_at = ?,"
        " bytes_done = coalesce(?, bytes_done), bytes_total = coalesce(?, bytes_total)"
        " WHERE id = ? AND state = 'running' AND lease_owner = ?",
        (now + lease_s, now, done, total, task.id, owner),
    )
    return cursor.rowcount == 1


def succeed(
    conn: sqlite3.Connection,
    task: Task,
    owner: str,
    now: float,
    result: dict[str, Any],
    progress: tuple[int, int | None] | None = None,
) -> bool:
    done, total = progress if progress else (None, None)
    cursor = conn.execute(
        "UPDATE output_tasks SET state = 'succeeded', lease_owner = NULL,"
        " lease_until = NULL, reason = NULL, message = NULL, result_json = ?,"
        " updated_at = ?, finished_at = ?,"
        " bytes_done = coalesce(?, bytes_done), bytes_total = coalesce(?, bytes_total)"
        " WHERE id = ? AND state = 'running' AND lease_owner = ?",
        (json.dumps(result), now, now, done, total, task.id, owner),
    )
    return cursor.rowcount == 1


def fail(
    conn: sqlite3.Connection,
    task: Task,
    owner: str,
    now: float,
    error: DeliveryError,
    backoff_base_s: float = limits.DELIVERY_BACKOFF_BASE_S,
) -> tuple[str, float | None]:
    """Record a failed attempt; return the new state and, if queued, when it runs."""
    state, due = _after_failure(task, error, now, backoff_base_s)
    cursor = conn.execute(
        "UPDATE output_tasks SET state = ?,"
        " next_attempt_at = coalesce(?, next_attempt_at),"
        " lease_owner = NULL, lease_until = NULL, reason = ?, message = ?,"
        " updated_at = ?, finished_at = CASE WHEN ? = 'queued' THEN NULL ELSE ? END"
        " WHERE id = ? AND state = 'running' AND lease_owner = ?",
        (state, due, error.code, error.message, now, state, now, task.id, owner),
    )
    if cursor.rowcount == 1 and task.destination == LOCAL and state != "queued":
        conn.execute(
            "UPDATE output_tasks SET state = 'failed', reason = 'local_copy_failed',"
            " message = ?, updated_at = ?, finished_at = ?"
            " WHERE job_id = ? AND destination <> 'local' AND state = 'queued'",
            (f"the local copy ended {state}: {error.message}", now, now, task.job_id),
        )
    return state, due


def retry(conn: sqlite3.Connection, task_id: int, now: float) -> str:
    """Queue a finally failed task again with fresh attempts; return its job id."""
    row = conn.execute(
        "SELECT job_id, destination, state FROM output_tasks WHERE id = ?", (task_id,)
    ).fetchone()
    if row is None:
        raise LookupError(task_id)
    job_id, destination, state = row
    if state not in FINAL_FAILURES:
        raise TaskStateError(
            f"task {task_id} is {state}; only failed tasks are retried"
        )
    ids = [task_id]
    if destination == LOCAL:  # publishers that failed with it come back too
        ids += [
            r[0]
            for r in conn.execute(
                "SELECT id FROM output_tasks WHERE job_id = ?"
                " AND destination <> 'local' AND reason = 'local_copy_failed'",
                (job_id,),
            )
        ]
    conn.executemany(
        "UPDATE output_tasks SET state = 'queued', attempts = 0, next_attempt_at = ?,"
        " reason = NULL, message = NULL, updated_at = ?, finished_at = NULL"
        " WHERE id = ?",
        [(now, now, task) for task in ids],
    )
    return str(job_id)


def _after_failure(
    task: Task, error: DeliveryError, now: float, base_s: float
) -> tuple[str, float | None]:
    if isinstance(error, SourceExpired):
        if task.attempts >= min(task.max_attempts, limits.SOURCE_EXPIRED_ATTEMPTS):
            return "source_expired", None
    elif not error.retryable:
        return ("blocked_host" if error.code == "blocked_host" else "failed"), None
    if task.attempts >= task.max_attempts:
        return "failed", None
    return "queued", now + backoff_s(task.attempts, error.retry_after_s, base_s)


def backoff_s(attempts: int, retry_after_s: float | None, base_s: float) -> float:
    """Exponential backoff with jitter, never sooner than Retry-After."""
    ceiling = min(limits.DELIVERY_BACKOFF_MAX_S, base_s * 2 ** max(attempts - 1, 0))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after_s or 0.0)


def release(conn: sqlite3.Connection, task: Task, owner: str) -> None:
    """Give a task back at shutdown: queued again at once, this attempt not counted."""
    conn.execute(
        "UPDATE output_tasks SET state = 'queued', attempts = max(attempts - 1, 0),"
        " lease_owner = NULL, lease_until = NULL"
        " WHERE id = ? AND state = 'running' AND lease_owner = ?",
        (task.id, owner),
    )


def requeue_job(conn: sqlite3.Connection, job_id: str, now: float) -> int:
    """Run every finished task of a job again (its output changed); return how many."""
    cursor = conn.execute(
        "UPDATE output_tasks SET state = 'queued', attempts = 0, next_attempt_at = ?,"
        " reason = NULL, message = NULL, updated_at = ?, finished_at = NULL"
        " WHERE job_id = ? AND state <> 'running'",
        (now, now, job_id),
    )
    return cursor.rowcount
