"""Delivery workers: claim tasks, run them under a lease, record what happened.

One loop per destination claims due tasks up to that destination's concurrency.
While a task runs, its lease is renewed and its progress recorded every third of
the lease; one INFO line is logged per change of state, with reason and timing,
and a progress line every PROGRESS_LOG_S. On shutdown the running tasks are
cancelled and put back in the queue, so the next start picks them up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon import limits
from daemon.deliver import queue
from daemon.deliver.errors import DeliveryError, Retryable
from daemon.record.writer import StorageUnavailable, Writer

log = logging.getLogger(__name__)

Handler = Callable[["TaskContext"], Awaitable[dict[str, Any]]]
# Told of each committed change of a task: its new state ("running" again for
# recorded progress). It must not wait: it runs on the worker's path.
Notify = Callable[[queue.Task, str], None]


@dataclass
class TaskContext:
    task: queue.Task
    done: int = 0
    total: int | None = None
    lease_lost: bool = False
    last_log: float = field(default_factory=time.monotonic)

    def report(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total


@dataclass(frozen=True)
class Destination:
    name: str
    handler: Handler
    concurrency: int


class DeliveryWorkers:
    def __init__(
        self,
        writer: Writer,
        destinations: Mapping[str, Destination],
        *,
        lease_s: float,
        backoff_base_s: float,
        after_success: Callable[[queue.Task], Awaitable[None]] | None = None,
        on_end: Callable[[str, str], None] | None = None,
        notify: Notify | None = None,
    ) -> None:
        self._writer = writer
        self._destinations = destinations
        self._lease_s = lease_s
        self._backoff_base_s = backoff_base_s
        self._after_success = after_success
        # Told (destination, succeeded|failed|retried) when an attempt is recorded.
        self._on_end = on_end
        self._notify = notify or _ignore
        self._owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for destination in self._destinations.values():
            loop = asyncio.create_task(self._claim_loop(destination))
            self._loops.append(loop)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming, cancel running tasks and queue them again."""
        running = len(self._running)  # the done callbacks empty the set
        for task in (*self._loops, *self._running):
            task.cancel()
        await asyncio.gather(*self._loops, *self._running, return_exceptions=True)
        log.info("delivery workers stopped (%d tasks were running)", running)

    async def _claim_loop(self, destination: Destination) -> None:
        slots = asyncio.Semaphore(destination.concurrency)
        while True:
            await slots.acquire()
            try:
                task = await self._writer.submit(
                    lambda conn: queue.claim(
                        conn, destination.name, self._owner, time.time(), self._lease_s
                    )
                )
            except StorageUnavailable as exc:
                log.warning("cannot claim %s deliveries: %s", destination.name, exc)
                task = None
            if task is None:
                slots.release()
                await self._idle()
                continue
            run = asyncio.create_task(self._run(destination, task))
            self._running.add(run)

            run.add_done_callback(functools.partial(self._finished, slots=slots))

    def _finished(self, run: asyncio.Task[None], *, slots: asyncio.Semaphore) -> None:
        self._running.discard(run)
        slots.release()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limits.DELIVERY_POLL_S):
                await self._wake.wait()
        self._wake.clear()

    async def _run(self, destination: Destination, task: queue.Task) -> None:
        context = TaskContext(task)
        started = time.monotonic()
        log.info(
            "delivery %d (%s, job %s): running, attempt %d of %d",
            task.id,
            task.destination,
            task.job_id,
            task.attempts,
            task.max_attempts,
        )
        self._notify(task, "running")
        keeper = asyncio.create_task(self._keep_lease(context, asyncio.current_task()))
        try:
            result = await destination.handler(context)
        except asyncio.CancelledError:
            if context.lease_lost:
                # Another worker may own the task now; this attempt just stops.
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                return
            await self._requeue(task)
            log.info(
                "delivery %d (%s, job %s): queued again after %.1f s: shutting down",
                task.id,
                task.destination,
                task.job_id,
                time.monotonic() - started,
            )
            raise
        except DeliveryError as exc:
            await self._record_failure(task, exc, started)
            return
        except Exception as exc:
            log.exception("delivery %d: unexpected error", task.id)
            await self._record_failure(
                task, Retryable("internal_error", repr(exc)), started
            )
            return
        finally:
            keeper.cancel()
        await self._record_success(task, result, started, (context.done, context.total))

    async def _record_success(
        self,
        task: queue.Task,
        result: dict[str, Any],
        started: float,
        progress: tuple[int, int | None],
    ) -> None:
        now = time.time()
        ours = await self._writer.submit(
            lambda conn: queue.succeed(conn, task, self._owner, now, result, progress)
        )
        if not ours:
            log.warning("delivery %d: lease was lost; result not recorded", task.id)
            return
        self._ended(task, "succeeded")
        self._notify(task, "succeeded")
        log.info(
            "delivery %d (%s, job %s): succeeded in %.1f s",
            task.id,
            task.destination,
            task.job_id,
            time.monotonic() - started,
        )
        self.wake()  # publishers may be waiting for this local copy
        if self._after_success is not None:
            await self._after_success(task)

    async def _record_failure(
        self, task: queue.Task, error: DeliveryError, started: float
    ) -> None:
        now = time.time()
        state, due = await self._writer.submit(
            lambda conn: queue.fail(
                conn, task, self._owner, now, error, self._backoff_base_s
            )
        )
        self._ended(task, "retried" if state == "queued" else "failed")
        self._notify(task, state)
        retry = f", next attempt in {due - now:.0f} s" if due is not None else ""
        log.log(
            logging.WARNING if state == "queued" else logging.ERROR,
            "delivery %d (%s, job %s): %s after %.1f s: %s: %s%s",
            task.id,
            task.destination,
            task.job_id,
            state,
            time.monotonic() - started,
            error.code,
            error.message,
            retry,
        )

    def _ended(self, task: queue.Task, outcome: str) -> None:
        if self._on_end is not None:
            self._on_end(task.destination, outcome)

    async def _requeue(self, task: queue.Task) -> None:
        with contextlib.suppress(Exception):
            await self._writer.submit(
                lambda conn: queue.release(conn, task, self._owner)
            )

    async def _keep_lease(
        self, context: TaskContext, runner: asyncio.Task[Any] | None
    ) -> None:
        task = context.task
        while True:
            await asyncio.sleep(self._lease_s / 3)
            progress = (context.done, context.total)
            now = time.time()
            ours = True
            with contextlib.suppress(StorageUnavailable):
                ours = await self._writer.submit(
                    functools.partial(
                        queue.renew,
                        task=task,
                        owner=self._owner,
                        now=now,
                        lease_s=self._lease_s,
                        progress=progress,
                    )
                )
            if ours:
                self._notify(task, "running")
            elif runner is not None:
                log.warning(
                    "delivery %d (%s, job %s): lease lost; stopping this attempt",
                    task.id,
                    task.destination,
                    task.job_id,
                )
                context.lease_lost = True
                runner.cancel()
                return
            if time.monotonic() - context.last_log >= limits.PROGRESS_LOG_S:
                context.last_log = time.monotonic()
                total = "?" if context.total is None else str(context.total)
                log.info(
                    "delivery %d (%s, job %s): %d of %s bytes",
                    task.id,
                    task.destination,
                    task.job_id,
                    context.done,
                    total,
                )


def _ignore(task: queue.Task, state: str) -> None:
    pass
