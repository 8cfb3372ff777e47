"""Read-only queries over recorded jobs, shared by the HTTP API and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from daemon import limits

_JSON_COLUMNS = {
    "input_json": "input",
    "output_json": "output",
    "metrics_json": "metrics",
    "urls_json": "urls",
}
_HIDDEN = {"logs_sha256", "created_ts"}
_TIMES = ("first_seen_at", "updated_at")
_TASK_COLUMNS = (
    "id, job_id, destination, state, attempts, max_attempts, next_attempt_at,"
    " reason, message, bytes_done, bytes_total, result_json, created_at,"
    " updated_at, finished_at"
)


async def open_reader(path: Path) -> aiosqlite.Connection:
    """A read-only connection: the API can never write through it."""
    conn = await aiosqlite.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    conn.row_factory = aiosqlite.Row
    return conn


async def list_jobs(
    conn: aiosqlite.Connection, *, status: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    sql = (
        f"SELECT * FROM jobs {where} "  # noqa: S608 - fixed text, values are bound
        "ORDER BY coalesce(created_ts, first_seen_at) DESC, id LIMIT ? OFFSET ?"
    )
    async with conn.execute(sql, (*params, limit, offset)) as cursor:
        return [job_json(row) for row in await cursor.fetchall()]


async def count_jobs(conn: aiosqlite.Connection, status: str | None) -> int:
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    sql = f"SELECT count(*) FROM jobs {where}"  # noqa: S608 - fixed text
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def get_job(conn: aiosqlite.Connection, job_id: str) -> dict[str, Any] | None:
    async with conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    job = job_json(row)
    async with conn.execute(
        "SELECT webhook_id, kind, status, received_at, body_bytes, signature, outcome,"
        " client_address FROM webhook_deliveries WHERE job_id = ?"
        " ORDER BY received_at, rowid",
        (job_id,),
    ) as cursor:
        history = [
            {**dict(item), "received_at": iso_time(item["received_at"])}
            for item in await cursor.fetchall()
        ]
    job["history"] = history
    job["deliveries"] = await fetch_tasks(conn, job_id=job_id)
    async with conn.execute(
        "SELECT name, url, size, sha256, completed_at FROM output_files"
        " WHERE job_id = ? ORDER BY position",
        (job_id,),
    ) as cursor:
        job["files"] = [
            {**dict(item), "completed_at": _maybe_time(item["completed_at"])}
            for item in await cursor.fetchall()
        ]
    return job


async def read_logs(
    conn: aiosqlite.Connection, job_id: str, offset: int
) -> tuple[bytes, int, int] | None:
    """The stored log bytes after `offset`, the total size and the log's version;
    None if no job.

    A snapshot that extends the stored log is appended as a new chunk, while one
    that does not replaces every chunk with a single chunk at byte 0 holding the
    whole, longer log. The size of that first chunk is therefore the version: it
    stays put while the log grows and goes up at each replacement. It is read in
    the same statement as the bytes, so the two always agree."""
    async with conn.execute(
        "SELECT logs_bytes FROM jobs WHERE id = ?", (job_id,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    total = int(row[0])
    async with conn.execute(
        "SELECT start_byte, data, (SELECT length(data) FROM job_log_chunks"
        "  WHERE job_id = ?1 AND start_byte = 0) AS version FROM job_log_chunks"
        " WHERE job_id = ?1 AND start_byte + length(data) > ?2 ORDER BY start_byte",
        (job_id, offset),
    ) as cursor:
        chunks = list(await cursor.fetchall())
    if not chunks:
        return b"", total, await _log_version(conn, job_id)
    data = b"".join(chunk["data"] for chunk in chunks)
    skip = offset - chunks[0]["start_byte"]
    return data[max(skip, 0) :], total, int(chunks[0]["version"] or 0)


async def _log_version(conn: aiosqlite.Connection, job_id: str) -> int:
    async with conn.execute(
        "SELECT length(data) FROM job_log_chunks WHERE job_id = ? AND start_byte = 0",
        (job_id,),
    ) as cursor:
        row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


def job_json(row: aiosqlite.Row) -> dict[str, Any]:
    job: dict[str, Any] = {}
    for name in row.keys():  # noqa: SIM118 - sqlite rows are not mappings
        value = row[name]
        if name in _HIDDEN:
            continue
        if name in _JSON_COLUMNS:
            job[_JSON_COLUMNS[name]] = None if value is None else json.loads(value)
        elif name in _TIMES:
            job[name] = iso_time(value)
        elif name == "data_removed":
            job[name] = None if value is None else bool(value)
        else:
            job[name] = value
    return job


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def fetch_tasks(
    conn: aiosqlite.Connection,
    *,
    task_id: int | None = None,
    job_id: str | None = None,
    state: str | None = None,
    limit: int = limits.JOBS_PAGE_MAX,
    offset: int = 0,
) -> list[dict[str, Any]]:
    clauses, params = [], []
    for column, value in (("id", task_id), ("job_id", job_id), ("state", state)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    # Fixed column names; every value is bound.
    sql = (
        f"SELECT {_TASK_COLUMNS} FROM output_tasks {where}"  # noqa: S608
        " ORDER BY id DESC LIMIT ? OFFSET ?"
    )
    async with conn.execute(sql, (*params, limit, offset)) as cursor:
        return [task_json(row) for row in await cursor.fetchall()]


def task_json(row: Any) -> dict[str, Any]:
    task = dict(row)
    task["result"] = json.loads(task.pop("result_json") or "null")
    for name in ("next_attempt_at", "created_at", "updated_at", "finished_at"):
        task[name] = _maybe_time(task[name])
    return task


def _maybe_time(epoch: float | None) -> str | None:
    return None if epoch is None else iso_time(epoch)
