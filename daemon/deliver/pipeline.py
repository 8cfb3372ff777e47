"""Assemble the delivery workers from settings: the local copy, then publishers.

The local copy is always the first destination; a job's outputs also go to the
Hub and to S3 when those are configured at the time the job succeeds. Publish
targets can change at run time (provider settings), so each publishing task uses
the target in force when it runs, and a task whose target was switched off fails
for good with `destination_not_configured`. A publisher receives the job's
complete local files only; once every destination of a job has succeeded, the
local copy can be removed (`delivery.delete_local_after_publish`, off by default).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from collections.abc import Callable
from typing import Any

import aiohttp

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
from daemon.live import LiveSettings
from daemon.record.writer import Writer
from daemon.settings import Settings

log = logging.getLogger(__name__)

PUBLISHERS = ("hub", "s3")


class CurrentPublisher:
    """The publisher for one destination as the settings in force configure it,
    rebuilt when they change."""

    def __init__(self, name: str, live: LiveSettings) -> None:
        self._name = name
        self._live = live
        self._built: tuple[Any, Publisher] | None = None

    def __call__(self) -> Publisher:
        target = _target(self._name, self._live.current)
        if target is None:
            raise Permanent(
                "destination_not_configured",
                f"{self._name} publishing is no longer configured; configure it "
                "and retry this delivery",
            )
        if self._built is None or self._built[0] != target:
            self._built = (target, _publisher(self._name, target))
        return self._built[1]


def _target(name: str, settings: Settings) -> Any:
    if name == "hub":
        return settings.hub if settings.hub.model_id else None
    return settings.s3 if settings.s3.enabled else None


def _publisher(name: str, target: Any) -> Publisher:
    if name == "hub":
        from daemon.deliver.hub import HubPublisher

        if target.token is None:
            log.warning("hub.model_id is %s but HF_TOKEN is not set", target.model_id)
        return HubPublisher(target)
    from daemon.deliver.s3 import S3Publisher

    return S3Publisher(target)


def build_workers(
    live: LiveSettings,
    writer: Writer,
    session: aiohttp.ClientSession,
    on_end: Callable[[str, str], None] | None = None,
    notify: Notify | None = None,
) -> DeliveryWorkers:
    settings = live.current
    copier = LocalCopier(settings, writer, session)
    concurrency = {
        queue.LOCAL: settings.delivery.concurrency,
        "hub": settings.hub.concurrency,
        "s3": settings.s3.concurrency,
    }
    destinations = {
        queue.LOCAL: Destination(queue.LOCAL, _local(copier), concurrency[queue.LOCAL])
    }
    for name in PUBLISHERS:
        handler = _publish(CurrentPublisher(name, live), copier, writer)
        destinations[name] = Destination(name, handler, concurrency[name])

    async def after_success(task: queue.Task) -> None:
        delete = live.current.delivery.delete_local_after_publish
        if delete and task.destination != queue.LOCAL:
            await _drop_local_copy(writer, copier, task.job_id)

    return DeliveryWorkers(
        writer,
        destinations,
        lease_s=settings.delivery.lease_s,
        backoff_base_s=settings.delivery.backoff_base_s,
        after_success=after_success,
        on_end=on_end,
        notify=notify,
    )


def _local(copier: LocalCopier) -> Handler:
    async def run(context: TaskContext) -> dict[str, Any]:
        return await copier(context.task.job_id, context.report)

    return run


def _publish(current: CurrentPublisher, copier: LocalCopier, writer: Writer) -> Handler:
    async def run(context: TaskContext) -> dict[str, Any]:
        publisher = current()
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
