"""Apply one verified delivery to its job, inside the writer's transaction.

Rules, from Replicate's advice on retries and ordering:
- a webhook-id seen before is a duplicate (same bytes) or a conflict (other bytes);
- a job is created the first time its id is seen, whoever submitted it;
- status only moves forward: starting < processing < any terminal status;
- a terminal status is final: a different terminal status later is recorded as a
  conflict and not applied; events after the terminal one only fill empty fields;
- logs and output are cumulative snapshots: a shorter one than stored is ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Any

from daemon.deliver.queue import create_tasks, requeue_job
from daemon.record.events import Event, is_terminal, output_rank, status_rank


class WebhookIdConflict(ValueError):
    """The webhook-id was recorded before with a different body."""


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    received_at: float
    body_bytes: int
    body_sha256: str
    signature: str  # which check passed, e.g. "v1 key 1"
    event: Event
    client_address: str | None = None  # None: fetched from Replicate, not received


@dataclass(frozen=True)
class Receipt:
    job_id: str
    status: str
    previous_status: str | None
    outcome: str  # created | applied | updated | filled | ignored | conflict
    duplicate: bool = False
    tasks_created: int = 0
    output_filled: bool = False  # a finished job's output arrived only now

    @property
    def succeeded_now(self) -> bool:
        return self.status == "succeeded" and self.previous_status != "succeeded"

    @property
    def status_changed(self) -> bool:
        return self.status != self.previous_status


@dataclass(frozen=True)
class OutputPlan:
    """Where a succeeded job's outputs go: queued in the same transaction."""

    destinations: tuple[str, ...]  # publishers; the local copy is always first
    max_attempts: int


def record_delivery(
    conn: sqlite3.Connection, delivery: Delivery, outputs: OutputPlan | None = None
) -> Receipt:
    event = delivery.event
    seen = conn.execute(
        "SELECT body_sha256 FROM webhook_deliveries WHERE webhook_id = ?",
        (delivery.webhook_id,),
    ).fetchone()
    job = conn.execute("SELECT * FROM jobs WHERE id = ?", (event.job_id,)).fetchone()
    if seen is not None:
        if seen[0] != delivery.body_sha256:
            raise WebhookIdConflict(delivery.webhook_id)
        status = job["status"] if job else event.status
        return Receipt(event.job_id, status, status, "ignored", duplicate=True)

    if job is None:
        _insert_job(conn, event, delivery.received_at)
        _store_logs(conn, event.job_id, 0, None, event.logs)
        receipt = Receipt(event.job_id, event.status, None, "created")
    else:
        receipt = _update_job(conn, job, event, delivery.received_at)

    conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, job_id, kind, status, received_at,"
        " body_bytes, body_sha256, signature, outcome, client_address)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            delivery.webhook_id,
            event.job_id,
            event.kind,
            event.status,
            delivery.received_at,
            delivery.body_bytes,
            delivery.body_sha256,
            delivery.signature,
            receipt.outcome,
            delivery.client_address,
        ),
    )
    if outputs is not None and receipt.succeeded_now:
        created = create_tasks(
            conn,
            event.job_id,
            outputs.destinations,
            delivery.received_at,
            outputs.max_attempts,
        )
        receipt = dataclasses.replace(receipt, tasks_created=created)
    elif outputs is not None and receipt.output_filled:
        # The outputs were delivered as "none"; now that they are known, again.
        again = requeue_job(conn, event.job_id, delivery.received_at)
        receipt = dataclasses.replace(receipt, tasks_created=again)
    return receipt


def _insert_job(conn: sqlite3.Connection, event: Event, now: float) -> None:
    columns = {
        "id": event.job_id,
        "status": event.status,
        "first_seen_at": now,
        "updated_at": now,
        **event.fields,
    }
    # Column names come from events.Event.fields, a fixed set, never from input.
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO jobs ({names}) VALUES ({marks})"  # noqa: S608
    conn.execute(sql, tuple(columns.values()))


def _update_job(
    conn: sqlite3.Connection, job: sqlite3.Row, event: Event, now: float
) -> Receipt:
    current = job["status"]
    changes: dict[str, Any] = {}
    logs_allowed = True
    if is_terminal(current):
        if is_terminal(event.status) and event.status != current:
            # A conflicting terminal body is recorded, never applied, even to
            # empty fields: a failed job must not gain a succeeded job's output.
            logs_allowed = False
            outcome = "conflict"
            if job["conflict_status"] is None:
                changes["conflict_status"] = event.status
        else:
            changes = _missing_fields(job, event)
            logs_allowed = job["logs_bytes"] == 0
            outcome = "filled" if changes else "ignored"
    elif status_rank(event.status) > status_rank(current):
        changes = {"status": event.status, **event.fields}
        if event.output_rank < output_rank(job["output_json"]):
            changes.pop("output_json", None)
        outcome = "applied"
    else:
        changes = _missing_fields(job, event)
        if event.output_rank > output_rank(job["output_json"]):
            changes["output_json"] = event.fields["output_json"]
        outcome = "updated" if changes else "ignored"

    if logs_allowed and _store_logs(
        conn, job["id"], job["logs_bytes"], job["logs_sha256"], event.logs
    ):
        outcome = "updated" if outcome == "ignored" else outcome
    if changes or outcome != "ignored":
        changes["updated_at"] = now
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ?"  # noqa: S608
        conn.execute(sql, (*changes.values(), job["id"]))
    status = changes.get("status", current)
    late_output = current == "succeeded" and "output_json" in changes
    return Receipt(job["id"], status, current, outcome, output_filled=late_output)


def _missing_fields(job: sqlite3.Row, event: Event) -> dict[str, Any]:
    return {name: value for name, value in event.fields.items() if job[name] is None}


def _store_logs(
    conn: sqlite3.Connection,
    job_id: str,
    stored_bytes: int,
    stored_sha: str | None,
    text: str | None,
) -> bool:
    """Keep the longer snapshot: append what it adds, or replace a diverged one."""
    if text is None:
        return False
    data = text.encode("utf-8", "replace")
    if len(data) <= stored_bytes:
        return False
    if stored_bytes and _extends(conn, job_id, stored_bytes, stored_sha, data):
        conn.execute(
            "INSERT INTO job_log_chunks (job_id, start_byte, data) VALUES (?, ?, ?)",
            (job_id, stored_bytes, data[stored_bytes:]),
        )
    else:
        conn.execute("DELETE FROM job_log_chunks WHERE job_id = ?", (job_id,))
        conn.execute(
            "INSERT INTO job_log_chunks (job_id, start_byte, data) VALUES (?, 0, ?)",
            (job_id, data),
        )
    conn.execute(
        "UPDATE jobs SET logs_bytes = ?, logs_sha256 = ? WHERE id = ?",
        (len(data), hashlib.sha256(data).hexdigest(), job_id),
    )
    return True


def _extends(
    conn: sqlite3.Connection,
    job_id: str,
    stored_bytes: int,
    stored_sha: str | None,
    data: bytes,
) -> bool:
    prefix = data[:stored_bytes]
    if stored_sha is not None:
        return hashlib.sha256(prefix).hexdigest() == stored_sha
    rows = conn.execute(
        "SELECT data FROM job_log_chunks WHERE job_id = ? ORDER BY start_byte",
        (job_id,),
    )
    return b"".join(row[0] for row in rows) == prefix
