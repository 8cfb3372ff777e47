"""GET /metrics, and the middleware that times every request for it.

Latency is labelled by route template (`/api/jobs/{job_id}`) and method, never by
the raw path, and unknown methods share one label, so a scanner cannot grow the
number of series. /metrics follows the admin rule of daemon.access.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.appkeys import METRICS, READER
from daemon.errors import Handler

UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def metrics(request: web.Request) -> web.Response:
    series = request.app[METRICS]
    await series.refresh(request.app[READER])
    return web.Response(
        body=generate_latest(series.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


@web.middleware
async def timing_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        elapsed_s = time.perf_counter() - started
        request.app[METRICS].request_seconds.labels(
            _route(request), request.method if request.method in _METHODS else "other"
        ).observe(elapsed_s)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical
