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
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiosqlite
from aiohttp import web

from daemon import limits
from daemon.appkeys import (
    LIVE,
    OUTPUT_PLAN,
    READER,
    REPLICATE,
    SETTINGS,
    WORKERS,
    WRITER,
)
from daemon.deliver.worker import DeliveryWorkers
from daemon.live import Broadcaster
from daemon.record.events import ACTIVE_STATUSES, BodyError, parse_body
from daemon.record.jobs import Delivery, OutputPlan, Receipt, record_delivery
from daemon.record.writer import Writer
from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import ReplicateError

log = logging.getLogger(__name__)

SIGNATURE_LABEL = "poll"


@dataclass(frozen=True)
class Reconciler:
    client: ReplicateClient
    writer: Writer
    reader: aiosqlite.Connection
    plan: OutputPlan
    workers: DeliveryWorkers
    live: Broadcaster | None = None

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
            self.writer, self.plan, job_id, body, label=SIGNATURE_LABEL
        )
        if receipt.tasks_created:
            self.workers.wake()
        if self.live is not None:
            self.live.job_changed(receipt)
        log_transition(receipt, "reconciliation")
        return receipt


async def apply_snapshot(
    writer: Writer, plan: OutputPlan, job_id: str, body: bytes, *, label: str
) -> Receipt:
    """Record a training or prediction object from the API as a synthetic delivery
    `<label>:<job>:<sha256>`, through the webhook's own state machine."""
    event = parse_body(body)
    if event.job_id != job_id:
        raise ValueError(f"Replicate answered for another id {event.job_id!r}")
    digest = hashlib.sha256(body).hexdigest()
    delivery = Delivery(
        webhook_id=f"{label}:{job_id}:{digest}",
        received_at=time.time(),
        body_bytes=len(body),
        body_sha256=digest,
        signature=label,
        event=event,
    )
    return await writer.submit(lambda conn: record_delivery(conn, delivery, plan))


def log_transition(receipt: Receipt, reason: str) -> None:
    if receipt.status_changed:
        log.info(
            "job %s: %s -> %s (%s)",
            receipt.job_id,
            receipt.previous_status or "new",
            receipt.status,
            reason,
        )


async def reconcile_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].replicate
    if settings.token is None:
        log.info("reconciliation off: REPLICATE_API_TOKEN not set")
        yield
        return
    reconciler = Reconciler(
        app[REPLICATE],
        app[WRITER],
        app[READER],
        app[OUTPUT_PLAN],
        app[WORKERS],
        app[LIVE],
    )
    task = asyncio.create_task(reconciler.run(settings.reconcile_interval_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
