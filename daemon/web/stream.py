"""GET /api/events: server-sent events that tell a browser what changed.

Events, each `data` a JSON object:
    ready     sent first; the stream is live (read the state now)
    job       {"job_id", "status", "outcome"}: a job's state or log changed
    delivery  {"job_id", "task_id", "destination", "state", ...}: a delivery moved
    resync    this stream fell behind and lost notices: read everything again
A comment line (`: keep-alive`) goes out when nothing happened for a while; a
browser that has gone is noticed within about a second. With
`?job=<id>` only that job's events are sent. At shutdown the stream ends, and the
browser reconnects after `retry` milliseconds.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from daemon import limits
from daemon.appkeys import BROADCAST
from daemon.broadcast import Notice, StreamClosed, Subscription, TooManySubscribers
from daemon.errors import ApiError
from daemon.observe import request_id

log = logging.getLogger(__name__)

_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-store",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}


async def stream_events(request: web.Request) -> web.StreamResponse:
    job_id = request.query.get("job") or None
    if job_id is not None and len(job_id) > limits.MAX_JOB_ID_CHARS:
        raise ApiError(400, "invalid_parameter", "job is not a job id")
    broadcaster = request.app[BROADCAST]
    try:
        subscription = broadcaster.subscribe(job_id)
    except TooManySubscribers:
        raise ApiError(
            503,
            "too_many_streams",
            f"{limits.LIVE_MAX_STREAMS} event streams are open already",
            headers={"Retry-After": str(limits.RETRY_AFTER_S)},
        ) from None
    except StreamClosed:
        raise ApiError(503, "shutting_down", "the daemon is stopping") from None
    try:
        response = web.StreamResponse(headers=_stream_headers())
        await response.prepare(request)
        await response.write(
            f"retry: {limits.LIVE_RETRY_MS}\n\n".encode() + encode(Notice("ready"))
        )
        await _forward(request, response, subscription)
    finally:
        broadcaster.unsubscribe(subscription)
        if subscription.dropped:
            log.info(
                "event stream for %s fell behind %d time(s) and was told to resync",
                request.remote,
                subscription.dropped,
            )
    return response


def _stream_headers() -> dict[str, str]:
    """The stream's headers go out before the request-id middleware could add
    its own, so it is added here."""
    headers = dict(_HEADERS)
    current_id = request_id.current.get()
    if current_id is not None:
        headers[request_id.HEADER] = current_id
    return headers


async def _forward(
    request: web.Request, response: web.StreamResponse, subscription: Subscription
) -> None:
    """Write notices until shutdown or until the browser has gone.

    The wait is cut into LIVE_CLIENT_CHECK_S slices: a browser that closed its
    tab is noticed within one slice, not at the next keep-alive."""
    quiet_s = 0.0
    while True:
        try:
            notice = await subscription.next(limits.LIVE_CLIENT_CHECK_S)
        except StreamClosed:
            return
        if _client_gone(request):
            return
        if notice is None:
            quiet_s += limits.LIVE_CLIENT_CHECK_S
            if quiet_s < limits.LIVE_KEEPALIVE_S:
                continue
        quiet_s = 0.0
        chunk = b": keep-alive\n\n" if notice is None else encode(notice)
        try:
            await response.write(chunk)
        except ConnectionError:
            return


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def encode(notice: Notice) -> bytes:
    data = dict(notice.data)
    if notice.job_id is not None:
        data["job_id"] = notice.job_id
    body = json.dumps(data, separators=(",", ":"))
    return f"event: {notice.kind}\ndata: {body}\n\n".encode()
