"""Assemble the delivery workers from settings: the local copy, then publishers.

The local copy is always the first destination; the Hub and S3 publishers are
added when configured. A publisher receives the job's complete local files only;
once every destination of a job has succeeded, the local copy can be removed
(`delivery.delete_local_after_publish`, off by default).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from typing import Any

import aiohttp

from daemon.config import Settings
from daemon.deliver import queue
from daemon.deliver.errors import Permanent
from daemon.deliver.local import LocalCopier, complete_files
from daemon.deliver.publish import LocalFile, Publisher, PublishRequest
from daemon.deliver.worker import (
    DeliveryWorkers,
    Destination,
    Handler,
    Notify,
    TaskContext,
)
from daemon.record.jobs import OutputPlan
from daemon.record.writer import Writer

log = logging.getLogger(__name__)


def publishers(settings: Settings) -> dict[str, tuple[Publisher, int]]:
    """The configured publishers by destination name, with their concurrency."""
    found: dict[str, tuple[Publisher, int]] = {}
    if settings.hub.model_id:
        from daemon.deliver.hub import HubPublisher

        if settings.hub.token is None:
            log.warning(
                "hub.model_id is %s but HF_TOKEN is not set: Hub deliveries will fail",
                settings.hub.model_id,
            )

        found["hub"] = (HubPublisher(settings.hub), settings.hub.concurrency)
    if settings.s3.enabled:
        from daemon.deliver.s3 import S3Publisher

        found["s3"] = (S3Publisher(settings.s3), settings.s3.concurrency)
    return found


def output_plan(settings: Settings) -> OutputPlan:
    names = []
    if settings.hub.model_id:
        names.append("hub")
    if settings.s3.enabled:
        names.append("s3")
    return OutputPlan(tuple(names), settings.delivery.max_attempts)


def build_workers(
    settings: Settings,
    writer: Writer,
    session: aiohttp.ClientSession,
    notify: Notify | None = None,
) -> DeliveryWorkers:
    copier = LocalCopier(settings, writer, session)
    destinations = {
        queue.LOCAL: Destination(
            queue.LOCAL, _local(copier), settings.delivery.concurrency
        )
    }
    found = publishers(settings)
    for name, (publisher, concurrency) in found.items():
        destinations[name] = Destination(
            name, _publish(publisher, copier, writer), concurrency
        )

    async def after_success(task: queue.Task) -> None:
        if settings.delivery.delete_local_after_publish and found:
            await _drop_local_copy(writer, copier, task.job_id)

    return DeliveryWorkers(
        writer,
        destinations,
        lease_s=settings.delivery.lease_s,
        backoff_base_s=settings.delivery.backoff_base_s,
        after_success=after_success,
        notify=notify,
    )


def _local(copier: LocalCopier) -> Handler:
    async def run(context: TaskContext) -> dict[str, Any]:
        return await copier(context.task.job_id, context.report)

    return run


def _publish(publisher: Publisher, copier: LocalCopier, writer: Writer) -> Handler:
    async def run(context: TaskContext) -> dict[str, Any]:
        job_id = context.task.job_id
        folder = copier.job_dir(job_id)
        files, model, version = await writer.submit(
            lambda conn: _publish_inputs(conn, job_id, folder)
        )
        if not files:
            return {"files": [], "skipped": "the job has no output files"}
        missing = [f.name for f in files if not _intact(f)]
        if missing:
            raise Permanent(
                "local_copy_missing",
                f"local file changed or missing: {', '.join(missing)}; retry the "
                "local delivery first",
            )
        request = PublishRequest(job_id, tuple(files), model, version)
        return await publisher(request)

    return run


def _publish_inputs(
    conn: sqlite3.Connection, job_id: str, folder: Any
) -> tuple[list[LocalFile], str | None, str | None]:
    row = conn.execute(
        "SELECT model, output_json ->> '$.version' FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    model, version = (row[0], row[1]) if row else (None, None)
    return complete_files(conn, job_id, folder), model, version


def _intact(file: LocalFile) -> bool:
    try:
        return file.path.is_file() and file.path.stat().st_size == file.size
    except OSError:
        return False


async def _drop_local_copy(writer: Writer, copier: LocalCopier, job_id: str) -> None:
    pending = await writer.submit(
        lambda conn: conn.execute(
            "SELECT count(*) FROM output_tasks"
            " WHERE job_id = ? AND state <> 'succeeded'",
            (job_id,),
        ).fetchone()[0]
    )
    if pending:
        return
    folder = copier.job_dir(job_id)
    await asyncio.to_thread(shutil.rmtree, folder, True)
    log.info(
        "job %s: every destination succeeded; removed local copy %s", job_id, folder
    )
