"""Delivery tasks over HTTP: list them, and queue a failed one again."""

from __future__ import annotations

import time

from aiohttp import web

from daemon import limits
from daemon.appkeys import BROADCAST, READER, WORKERS, WRITER
from daemon.deliver import queue
from daemon.errors import ApiError
from daemon.read.api import int_param
from daemon.read.queries import fetch_tasks


async def list_deliveries(request: web.Request) -> web.Response:
    job_id = request.query.get("job_id") or None
    state = request.query.get("state") or None
    limit = int_param(
        request, "limit", limits.JOBS_PAGE_DEFAULT, 1, limits.JOBS_PAGE_MAX
    )
    offset = int_param(request, "offset", 0, 0, 1 << 62)
    tasks = await fetch_tasks(
        request.app[READER], job_id=job_id, state=state, limit=limit, offset=offset
    )
    return web.json_response({"deliveries": tasks, "limit": limit, "offset": offset})


async def retry(request: web.Request) -> web.Response:
    raw = request.match_info["task_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ApiError(404, "delivery_not_found", f"no delivery with id {raw!r}")
    task_id, now = int(raw), time.time()
    try:
        await request.app[WRITER].submit(lambda conn: queue.retry(conn, task_id, now))
    except LookupError:
        raise ApiError(
            404, "delivery_not_found", f"no delivery with id {task_id}"
        ) from None
    except queue.TaskStateError as exc:
        raise ApiError(409, "delivery_not_failed", str(exc)) from None
    request.app[WORKERS].wake()
    tasks = await fetch_tasks(request.app[READER], task_id=task_id)
    task = tasks[0]
    request.app[BROADCAST].publish(
        "delivery",
        task["job_id"],
        task_id=task_id,
        destination=task["destination"],
        state=task["state"],
    )
    return web.json_response(task)
