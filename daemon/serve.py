"""Run the daemon until SIGTERM or SIGINT, then stop in order.

Stopping closes the listening socket first, gives in-flight requests
`SHUTDOWN_GRACE_S` to finish, closes the database after its last commit, and logs
one summary line of what was accepted and refused.

aiohttp's own shutdown closes every connection before it waits, and a closed
connection drops the rest of a request body still arriving, so a slow upload in
flight would never finish. The grace is therefore given here first: idle
connections are closed, connections with a request in flight are only told not to
keep alive, and their bodies are still read until the handlers are done. Event
streams (GET /api/events) never finish by themselves: they are ended then, so
they do not hold the grace up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from daemon import limits
from daemon.app import create_app
from daemon.appkeys import BROADCAST, STATS
from daemon.config import WEBHOOK_PATH, Settings
from daemon.errors import Handler

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    in_flight = _InFlight()
    app.middlewares.insert(0, in_flight.middleware)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()  # stops what started before the failing step
        raise
    site = web.TCPSite(
        runner, settings.host, settings.port, shutdown_timeout=limits.SHUTDOWN_GRACE_S
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    started = time.monotonic()
    for address in runner.addresses:
        host, port = address[0], address[1]
        shown = f"[{host}]" if ":" in host else host
        log.info("listening on http://%s:%d%s", shown, port, WEBHOOK_PATH)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info(
        "stopping: no new connections, %.0f s grace for requests in flight",
        limits.SHUTDOWN_GRACE_S,
    )
    await _finish_in_flight(
        runner, in_flight, limits.SHUTDOWN_GRACE_S, end_streams=app[BROADCAST].close
    )
    await runner.cleanup()
    log.info(
        "stopped after %.0f s: %s", time.monotonic() - started, app[STATS].summary()
    )


class _InFlight:
    """The connections whose request is being handled right now."""

    def __init__(self) -> None:
        self.connections: Counter[RequestHandler] = Counter()
        self.idle = asyncio.Event()
        self.idle.set()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        connection = request.protocol
        self.connections[connection] += 1
        self.idle.clear()
        try:
            return await handler(request)
        finally:
            self.connections[connection] -= 1
            if self.connections[connection] <= 0:
                del self.connections[connection]
            if not self.connections:
                self.idle.set()


async def _finish_in_flight(
    runner: web.AppRunner,
    in_flight: _InFlight,
    grace_s: float,
    *,
    end_streams: Callable[[], None],
) -> None:
    """Stop listening, close idle connections, let requests in flight finish."""
    for site in runner.sites:
        await site.stop()
    server = runner.server
    for connection in server.connections if server else []:
        if connection in in_flight.connections:
            connection.keep_alive(False)  # answer, then close
        else:
            connection.close()
    end_streams()  # after the marking: an ended stream's connection then closes
    try:
        async with asyncio.timeout(grace_s):
            await in_flight.idle.wait()
    except TimeoutError:
        log.warning(
            "%d requests still in flight after %.0f s: closing their connections",
            len(in_flight.connections),
            grace_s,
        )
        for connection in list(in_flight.connections):
            connection.force_close()
