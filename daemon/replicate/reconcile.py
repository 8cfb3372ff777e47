"""Reconciliation: poll every unfinished job and apply what Replicate says.

Webhooks get lost (daemon down, tunnel down) and Replicate retries only the final
one, for about a minute. So at start-up, and then every interval with jitter, each
job still `starting` or `processing` is fetched with GET and the body goes through
the webhook's own state machine as a synthetic delivery, `poll:<job>:<sha256>`:
an unchanged answer is a duplicate no-op, and a job found succeeded has its output
tasks queued exactly as if the completed webhook had come.

A failed poll is logged once per cycle and retried next cycle; the loop never dies
of one. Without REPLICATE_API_TOKEN the loop does not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiosqlite
from aiohttp import web

from daemon import limits
from daemon.appkeys import (
    BROADCAST,
    READER,
    REPLICATE,
    SETTINGS,
    SUBMITTER,
    WORKERS,
    WRITER,
)
from daemon.broadcast import Broadcaster
from daemon.deliver.worker import DeliveryWorkers
from daemon.live import LiveSettings
from daemon.record.events import ACTIVE_STATUSES, BodyError
from daemon.record.jobs import Receipt
from daemon.record.writer import Writer
from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import ReplicateError
from daemon.replicate.snapshot import apply_snapshot, log_transition

log = logging.getLogger(__name__)

SIGNATURE_LABEL = "poll"


@dataclass(frozen=True)
class Reconciler:
    client: ReplicateClient
    writer: Writer
    reader: aiosqlite.Connection
    settings: LiveSettings
    workers: DeliveryWorkers
    # Run at the start of each cycle (settling interrupted submissions).
    before_cycle: Callable[[], Awaitable[None]] | None = None
    broadcast: Broadcaster | None = None

    async def run(self, interval_s: float) -> None:
        """Poll now, then every `interval_s` (+/- jitter), until cancelled."""
        while True:
            try:
                await self.once()
            except Exception:
                log.exception("reconciliation cycle failed")
            jitter = random.uniform(-limits.RECONCILE_JITTER, limits.RECONCILE_JITTER)
            await asyncio.sleep(interval_s * (1 + jitter))

    async def once(self) -> list[Receipt]:
        """One cycle over the unfinished jobs; returns what was recorded."""
        if self.before_cycle is not None:
            try:
                await self.before_cycle()
            except ReplicateError as exc:
                log.warning("reconciliation: submissions not settled: %s", exc)
        receipts: list[Receipt] = []
        failures: list[tuple[str, Exception]] = []
        for job_id, get_url in await self._unfinished():
            try:
                receipts.append(await self._poll(job_id, get_url))
            except (ReplicateError, BodyError, ValueError) as exc:
                failures.append((job_id, exc))
        if failures:
            last_job, last_error = failures[-1]
            log.warning(
                "reconciliation: %d job(s) could not be polled (last: job %s: %s)",
                len(failures),
                last_job,
                last_error,
            )
        return receipts

    async def _unfinished(self) -> list[tuple[str, str | None]]:
        marks = ", ".join("?" for _ in ACTIVE_STATUSES)
        cursor = await self.reader.execute(
            "SELECT id, json_extract(urls_json, '$.get') FROM jobs "  # noqa: S608
            f"WHERE status IN ({marks}) ORDER BY first_seen_at LIMIT ?",
            (*ACTIVE_STATUSES, limits.RECONCILE_MAX_JOBS),
        )
        rows = await cursor.fetchall()
        return [(row[0], row[1] if isinstance(row[1], str) else None) for row in rows]

    async def _poll(self, job_id: str, get_url: str | None) -> Receipt:
        body = await self.client.job_snapshot(job_id, get_url)
        receipt = await apply_snapshot(
            self.writer, self.settings.plan, job_id, body, label=SIGNATURE_LABEL
        )
        if receipt.tasks_created:
            self.workers.wake()
        if self.broadcast is not None:
            self.broadcast.job_changed(receipt)
        log_transition(receipt, "reconciliation")
        return receipt


async def reconcile_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].current.replicate
    if settings.token is None:
        log.info("reconciliation off: REPLICATE_API_TOKEN not set")
        yield
        return
    reconciler = Reconciler(
        app[REPLICATE],
        app[WRITER],
        app[READER],
        app[SETTINGS],
        app[WORKERS],
        before_cycle=app[SUBMITTER].recover,
        broadcast=app[BROADCAST],
    )
    task = asyncio.create_task(reconciler.run(settings.reconcile_interval_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
