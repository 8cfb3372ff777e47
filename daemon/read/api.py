"""The JSON read API over recorded jobs, and the health checks."""

from __future__ import annotations

import logging
import sqlite3
import time

from aiohttp import web

from daemon import cost, limits
from daemon.appkeys import READER, SETTINGS, WRITER
from daemon.errors import ApiError
from daemon.read import queries
from daemon.record import db

log = logging.getLogger(__name__)


async def list_jobs(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    limit = int_param(
        request, "limit", limits.JOBS_PAGE_DEFAULT, 1, limits.JOBS_PAGE_MAX
    )
    offset = int_param(request, "offset", 0, 0, 1 << 62)
    conn = request.app[READER]
    jobs = await queries.list_jobs(conn, status=status, limit=limit, offset=offset)
    total = await queries.count_jobs(conn, status)
    following = offset + len(jobs)
    now, prices = time.time(), request.app[SETTINGS].current.cost
    for job in jobs:
        job["cost"] = round(cost.job_cost(job, prices, now), 4)
    spend = await cost.period_spend(conn, prices, now)
    return web.json_response(
        {
            "jobs": jobs,
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_offset": following if following < total else None,
            "period_spend": spend.total,
        }
    )


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    job = await queries.get_job(request.app[READER], job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    prices = request.app[SETTINGS].current.cost
    job["cost"] = round(cost.job_cost(job, prices, time.time()), 4)
    return web.json_response(job)


async def get_logs(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    offset = int_param(request, "offset", 0, 0, 1 << 62)
    found = await queries.read_logs(request.app[READER], job_id, offset)
    if found is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    data, total, version = found
    headers = {
        "X-Log-Bytes": str(total),
        "X-Next-Offset": str(offset + len(data)),  # what was read, to the end
        "X-Log-Version": str(version),  # another value: read again from 0
    }
    return web.Response(
        body=data, content_type="text/plain", charset="utf-8", headers=headers
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Ready when a write commits and no migration is pending."""
    writer = request.app[WRITER]
    try:
        waiting = await writer.submit(_probe)
    except Exception as exc:  # any failure means not ready
        log.warning("readiness check failed: %s", exc)
        raise ApiError(
            503,
            "not_ready",
            f"database is not writable: {type(exc).__name__}",
            headers={"Retry-After": str(limits.RETRY_AFTER_S)},
        ) from None
    if waiting:
        raise ApiError(503, "not_ready", f"migrations pending: {waiting}")
    return web.json_response(
        {"ok": True, "database": "writable", "migrations": "current"}
    )


def _probe(conn: sqlite3.Connection) -> list[int]:
    conn.execute(
        "INSERT OR REPLACE INTO daemon_state (key, value) VALUES ('ready_probe', ?)",
        (str(time.time()),),
    )
    return db.pending(conn)


def int_param(
    request: web.Request, name: str, default: int, low: int, high: int
) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 19
    if not digits or not low <= int(raw) <= high:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be a whole number from {low} to {high}",
        )
    return int(raw)
