"""Run the daemon until SIGTERM or SIGINT, then stop in order.

Stopping closes the listening socket first, gives in-flight requests
`SHUTDOWN_GRACE_S` to finish, closes the database after its last commit, and logs
one summary line of what was accepted and refused.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web

from daemon import limits
from daemon.access import WEBHOOK_PATH
from daemon.app import create_app
from daemon.appkeys import STATS
from daemon.config import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
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
    await runner.cleanup()
    log.info(
        "stopped after %.0f s: %s", time.monotonic() - started, app[STATS].summary()
    )
