"""Live updates: GET /api/events (server-sent events) and the broadcaster behind it.

The app is the production factory on a loopback port; the shutdown test runs the
real `serve` process and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from daemon import limits
from daemon.broadcast import RESYNC, Broadcaster, StreamClosed
from tests.helpers import WEBHOOK_PATH, signed_headers


async def post_webhook(client: Any, secret: str, body: dict[str, Any]) -> float:
    """POST a signed webhook; returns how long the answer took, in seconds."""
    raw = json.dumps(body).encode()
    started = time.monotonic()
    response = await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )
    assert response.status == 200, await response.text()
    return time.monotonic() - started


async def next_event(stream: Any, timeout_s: float = 1.0) -> tuple[str, Any]:
    """The next `event:`/`data:` pair from an SSE body; comments are skipped."""
    kind, data = "message", None
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await stream.readline()).decode()
            if line == "":
                raise EOFError("the event stream ended")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif line == "" and data is not None:
                return kind, data


async def open_stream(client: Any, query: str = "") -> Any:
    response = await client.get(f"/api/events{query}")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Request-Id"]
    assert await next_event(response.content) == ("ready", {})
    return response


async def test_event_stream_tells_of_a_webhook_within_a_second(daemon_client, secret):
    client = await daemon_client()
    stream = await open_stream(client)
    posted = time.monotonic()
    await post_webhook(client, secret, {"id": "live-job-1", "status": "processing"})
    kind, data = await next_event(stream.content, timeout_s=1.0)
    assert time.monotonic() - posted < 1.0
    assert kind == "job"
    assert data == {
        "job_id": "live-job-1",
        "status": "processing",
        "outcome": "created",
    }


async def test_event_stream_for_one_job_leaves_out_other_jobs(daemon_client, secret):
    client = await daemon_client()
    stream = await open_stream(client, "?job=live-job-b")
    await post_webhook(client, secret, {"id": "live-job-a", "status": "starting"})
    await post_webhook(client, secret, {"id": "live-job-b", "status": "starting"})
    kind, data = await next_event(stream.content)
    assert (kind, data["job_id"]) == ("job", "live-job-b")


async def test_duplicate_webhook_sends_no_event(daemon_client, secret):
    client = await daemon_client()
    stream = await open_stream(client)
    raw = json.dumps({"id": "live-dup", "status": "starting"}).encode()
    headers = signed_headers(secret, raw)
    for _ in range(2):
        response = await client.post(WEBHOOK_PATH, data=raw, headers=headers)
        assert response.status == 200
    await post_webhook(client, secret, {"id": "live-after", "status": "starting"})
    assert (await next_event(stream.content))[1]["job_id"] == "live-dup"
    assert (await next_event(stream.content))[1]["job_id"] == "live-after"


async def test_event_stream_tells_of_delivery_state_changes(daemon_client, secret):
    client = await daemon_client()
    stream = await open_stream(client, "?job=live-delivered")
    # Outputs are allowed from loopback only in tests: this one ends blocked_host
    # before any request is made.
    output = ["https://replicate.delivery/pbxt/abc/weights.tar"]
    body = {"id": "live-delivered", "status": "succeeded", "output": output}
    await post_webhook(client, secret, body)
    assert (await next_event(stream.content))[0] == "job"
    states = []
    while "blocked_host" not in states:
        kind, data = await next_event(stream.content, timeout_s=2.0)
        assert (kind, data["destination"]) == ("delivery", "local")
        states.append(data["state"])
    assert states[0] == "running"

    retried = await client.post(f"/api/deliveries/{data['task_id']}/retry")
    assert retried.status == 200
    kind, data = await next_event(stream.content)
    # The worker may have claimed it again before the retry's own notice went out.
    assert (kind, data["state"]) in (("delivery", "queued"), ("delivery", "running"))


async def test_stalled_subscriber_does_not_slow_the_webhook_path(daemon_client, secret):
    client = await daemon_client()
    stalled = await open_stream(client)  # never read while the webhooks arrive
    waits = []
    for index in range(40):
        body = {"id": f"live-busy-{index}", "status": "processing"}
        waits.append(await post_webhook(client, secret, body))
    assert max(waits) < 1.0, waits
    # What the stalled stream gets later is either every notice or a resync.
    kind, _ = await next_event(stalled.content)
    assert kind in ("job", "resync")


async def test_subscriber_that_falls_behind_gets_one_resync_instead_of_a_backlog():
    broadcaster = Broadcaster(capacity=8)
    slow = broadcaster.subscribe()
    started = time.perf_counter()
    for index in range(10_000):
        broadcaster.publish("job", f"job-{index}", status="processing")
    assert time.perf_counter() - started < 1.0  # publishing never waits
    assert await slow.next(0.1) == RESYNC
    pending = [await slow.next(0.01) for _ in range(8)]
    assert all(notice is not None and notice.kind == "job" for notice in pending[:7])
    assert await slow.next(0.01) is None  # nothing left: a bounded queue
    assert slow.dropped > 1


async def test_closing_the_broadcaster_ends_waiting_subscribers():
    broadcaster = Broadcaster()
    waiting = broadcaster.subscribe()
    reader = asyncio.ensure_future(waiting.next(30))
    await asyncio.sleep(0)
    broadcaster.close()
    try:
        await asyncio.wait_for(reader, 1)
    except StreamClosed:
        pass
    else:
        raise AssertionError("the subscriber was not told the stream closed")
    try:
        broadcaster.subscribe()
    except StreamClosed:
        pass
    else:
        raise AssertionError("a closed broadcaster took a new subscriber")


async def test_streams_past_the_limit_are_refused_with_503(daemon_client):
    client = await daemon_client()
    streams = [await open_stream(client) for _ in range(limits.LIVE_MAX_STREAMS)]
    refused = await client.get("/api/events")
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "too_many_streams"
    streams.pop().close()  # a browser that left frees its place
    async with asyncio.timeout(limits.LIVE_KEEPALIVE_S + 5):
        while (again := await client.get("/api/events")).status == 503:
            await asyncio.sleep(0.2)
    assert again.status == 200


async def test_serve_frees_a_closed_streams_place_within_two_seconds(daemon_process):
    # The real `serve`, not the test server: aiohttp's test server cancels the
    # handler of a dropped connection, which would hide a stream left waiting.
    daemon = daemon_process()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        streams = []
        for _ in range(limits.LIVE_MAX_STREAMS):
            stream = await session.get(f"{daemon.url}/api/events")
            assert await next_event(stream.content) == ("ready", {})
            streams.append(stream)
        refused = await session.get(f"{daemon.url}/api/events")
        assert refused.status == 503
        streams.pop().close()  # the browser tab went away
        closed = time.monotonic()
        async with asyncio.timeout(limits.LIVE_KEEPALIVE_S + 5):
            while (
                again := await session.get(f"{daemon.url}/api/events")
            ).status == 503:
                await asyncio.sleep(0.1)
        took_s = time.monotonic() - closed
        assert again.status == 200
        for stream in (*streams, again):
            stream.close()
    assert took_s < 2 * limits.LIVE_CLIENT_CHECK_S + 0.5, took_s


async def test_event_stream_needs_the_admin_token_when_set(daemon_client):
    client = await daemon_client(env={"REPLICATE_WEBHOOKD_ADMIN_TOKEN": "t0ken-live"})
    response = await client.get("/api/events")
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"
    allowed = await client.get(
        "/api/events", headers={"Authorization": "Bearer t0ken-live"}
    )
    assert allowed.status == 200
    allowed.close()


async def test_sigterm_ends_open_event_streams_and_stops_promptly(daemon_process):
    daemon = daemon_process()
    async with aiohttp.ClientSession() as session:
        streams = [await session.get(f"{daemon.url}/api/events") for _ in range(3)]
        for stream in streams:
            assert await next_event(stream.content) == ("ready", {})
        started = time.monotonic()
        daemon.process.send_signal(15)
        for stream in streams:
            async with asyncio.timeout(3):
                assert await stream.content.read() == b""  # the stream ended
        code = await asyncio.to_thread(daemon.process.wait, 10)
    assert code == 0, daemon.log_text()
    assert time.monotonic() - started < 5, daemon.log_text()
    assert "stopped after" in daemon.log_text()
