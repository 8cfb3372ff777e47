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

Under systemd (`Type=notify`) the run is reported through daemon.notify: READY once
listening, watchdog pings while the database writer answers, STOPPING on a signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from functools import partial

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from daemon import limits
from daemon.app import create_app
from daemon.appkeys import BROADCAST, STATS, WRITER
from daemon.errors import Handler
from daemon.notify import Notifier
from daemon.settings import Settings
from daemon.webhook_url import WEBHOOK_PATH

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    in_flight = _InFlight()
    app.middlewares.insert(0, in_flight.middleware)
    runner = await _start(app, settings)
    started = time.monotonic()
    listening = []
    for address in runner.addresses:
        host, port = address[0], address[1]
        shown = f"[{host}]" if ":" in host else host
        listening.append(f"http://{shown}:{port}")
        log.info("listening on http://%s:%d%s", shown, port, WEBHOOK_PATH)

    notifier = Notifier.from_env()
    notifier.ready(f"listening on {', '.join(listening)}")
    watchdog = asyncio.create_task(
        notifier.watchdog(partial(_writer_problem, app), app[STATS].summary)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    notifier.stopping("stopping: finishing requests in flight")
    watchdog.cancel()
    log.info(
        "stopping: no new connections, %.0f s grace for requests in flight",
        limits.SHUTDOWN_GRACE_S,
    )
    await _finish_in_flight(
        runner, in_flight, limits.SHUTDOWN_GRACE_S, end_streams=app[BROADCAST].close
    )
    await runner.cleanup()
    summary = app[STATS].summary()
    notifier.status(f"stopped: {summary}")
    notifier.close()
    log.info("stopped after %.0f s: %s", time.monotonic() - started, summary)


async def _start(app: web.Application, settings: Settings) -> web.AppRunner:
    """Run the app's start-up and listen; undo what started if either fails."""
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
    return runner


async def _writer_problem(app: web.Application, timeout_s: float) -> str | None:
    """None when the database writer runs a statement within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            await app[WRITER].submit(lambda conn: conn.execute("SELECT 1").fetchone())
    except TimeoutError:
        return f"the database writer did not answer within {timeout_s:.1f} s"
    except Exception as exc:  # any failure: the daemon cannot record deliveries
        return f"the database writer failed: {type(exc).__name__}"
    return None


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
