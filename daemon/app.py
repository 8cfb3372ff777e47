"""The application factory: settings in, a ready aiohttp application out.

Resources live in cleanup contexts so that teardown runs in reverse order of
start-up: the database (writer and reader) first; outbound clients and workers
stack on top of it as they arrive. Tests build the app with this same factory.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from daemon import limits
from daemon.access import METRICS_PATH, admin_middleware
from daemon.appkeys import (
    BODY_SLOTS,
    BROADCAST,
    HTTP,
    METRICS,
    READER,
    REPLICATE,
    SETTINGS,
    SIGNING_KEYS,
    STATS,
    WORKERS,
    WRITER,
)
from daemon.broadcast import Broadcaster
from daemon.deliver import pipeline, queue
from daemon.errors import error_middleware
from daemon.live import LiveSettings
from daemon.observe import endpoint
from daemon.observe.metrics import Metrics
from daemon.observe.request_id import request_id_middleware
from daemon.read import api, queries
from daemon.read import deliveries as deliveries_api
from daemon.receive.handler import receive_webhook
from daemon.record.writer import Writer
from daemon.replicate import api as replicate_api
from daemon.replicate import provider
from daemon.replicate.cancel import cancel as cancel_job
from daemon.replicate.reconcile import reconcile_context
from daemon.replicate.signing import open_signing_keys
from daemon.settings import Settings
from daemon.stats import DeliveryStats
from daemon.web import pages, stream
from daemon.webhook_url import WEBHOOK_PATH

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    # The webhook reads its own body under settings.max_body_bytes; this cap only
    # guards aiohttp's own readers. The request id comes first so that every log
    # line and every answer, errors included, carries it.
    app = web.Application(
        middlewares=[
            request_id_middleware,
            endpoint.timing_middleware,
            error_middleware,
            admin_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = LiveSettings(settings)
    app[STATS] = DeliveryStats()
    app[BODY_SLOTS] = asyncio.Semaphore(limits.MAX_BODIES_IN_FLIGHT)
    # Every publisher has a worker, configured or not (targets change at run time).
    app[METRICS] = Metrics(app[STATS], (queue.LOCAL, *pipeline.PUBLISHERS))
    app[BROADCAST] = Broadcaster()
    app.on_shutdown.append(_end_streams)  # before aiohttp waits for handlers
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(replicate_api.client_context)
    app.cleanup_ctx.append(_signing_keys)  # needs the database and the client
    app.cleanup_ctx.append(_delivery_workers)
    app.cleanup_ctx.append(reconcile_context)  # feeds the workers: started last
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    app.router.add_get("/api/jobs", api.list_jobs)
    app.router.add_get("/api/jobs/{job_id}", api.get_job)
    app.router.add_get("/api/jobs/{job_id}/logs", api.get_logs)
    app.router.add_post("/api/jobs/{job_id}/cancel", cancel_job)
    app.router.add_get("/api/deliveries", deliveries_api.list_deliveries)
    app.router.add_post("/api/deliveries/{task_id}/retry", deliveries_api.retry)
    app.router.add_get("/api/cloud/replicate/validate", replicate_api.validate)
    app.router.add_get("/api/cloud/replicate/versions", replicate_api.versions)
    app.router.add_get("/api/cloud/replicate/status", replicate_api.status)
    app.router.add_get("/api/cloud/replicate/billing", replicate_api.billing)
    app.router.add_post("/api/cloud/replicate/submit", replicate_api.submit)
    app.router.add_get("/api/cloud/providers/replicate", provider.get_provider)
    app.router.add_put("/api/cloud/providers/replicate", provider.put_provider)
    app.router.add_get("/api/events", stream.stream_events)
    pages.add_routes(app)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get(METRICS_PATH, endpoint.metrics)
    return app


async def _end_streams(app: web.Application) -> None:
    app[BROADCAST].close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    """The database, and the provider settings stored in it put in force."""
    live = app[SETTINGS]
    settings = live.current
    writer = Writer(settings.database_path, synchronous=settings.synchronous)
    applied = await asyncio.to_thread(writer.open)
    if applied:
        log.info("database %s: applied %s", settings.database_path, ", ".join(applied))
    app[WRITER] = writer
    try:
        stored = await writer.submit(provider.stored_changes)
        live.replace(provider.with_stored(settings, stored))
        app[READER] = await queries.open_reader(settings.database_path)
    except BaseException:
        await asyncio.to_thread(writer.close)
        raise
    try:
        yield
    finally:
        await app[READER].close()
        await asyncio.to_thread(writer.close)


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """Outbound HTTP for output downloads: bounded waits, an optional extra CA."""
    delivery = app[SETTINGS].current.delivery
    context = ssl.create_default_context()
    if delivery.ca_file is not None:
        context.load_verify_locations(cafile=str(delivery.ca_file))
    timeout = aiohttp.ClientTimeout(
        sock_connect=limits.HTTP_CONNECT_TIMEOUT_S, sock_read=limits.HTTP_READ_TIMEOUT_S
    )
    session = aiohttp.ClientSession(
        timeout=timeout,
        connector=aiohttp.TCPConnector(ssl=context),
        trust_env=True,  # HTTPS_PROXY / NO_PROXY
        auto_decompress=False,  # stored bytes must be the bytes served
    )
    app[HTTP] = session
    try:
        yield
    finally:
        await session.close()


async def _signing_keys(app: web.Application) -> AsyncIterator[None]:
    keys = await open_signing_keys(app[SETTINGS].current, app[REPLICATE], app[WRITER])
    app[SIGNING_KEYS] = keys
    try:
        yield
    finally:
        await keys.close()


async def _delivery_workers(app: web.Application) -> AsyncIterator[None]:
    broadcast = app[BROADCAST]

    def notify(task: queue.Task, state: str) -> None:
        broadcast.publish(
            "delivery",
            task.job_id,
            task_id=task.id,
            destination=task.destination,
            state=state,
        )

    workers = pipeline.build_workers(
        app[SETTINGS],
        app[WRITER],
        app[HTTP],
        on_end=app[METRICS].delivery_ended,
        notify=notify,
    )
    app[WORKERS] = workers
    workers.start()
    try:
        yield
    finally:
        await workers.stop()
