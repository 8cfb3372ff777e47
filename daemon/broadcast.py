"""Live updates: an in-process broadcaster of "something changed" notices.

Writers (the webhook handler, reconciliation, cancel, retry, the delivery workers)
publish a small notice after their change has committed; each open event stream
(GET /api/events) holds a subscription and forwards the notices to its browser,
which then reads what changed through the ordinary read API. A notice carries
only what the publisher already has in hand, so publishing costs no database
query and never waits: it is a loop over the subscribers that appends to each
one's queue.

Each queue is bounded. A subscriber that falls behind by more than its capacity
loses what was pending and gets a single `resync` notice instead, telling its
client to read everything again; the publisher never waits for it. Closing the
broadcaster (at shutdown) wakes every subscriber with the end of its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from daemon import limits
from daemon.record.jobs import Receipt


@dataclass(frozen=True)
class Notice:
    """One change: `kind` is "job", "delivery" or "resync"."""

    kind: str
    job_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


RESYNC = Notice("resync")


class StreamClosed(Exception):
    """The broadcaster is closed: the daemon is stopping."""


class TooManySubscribers(Exception):
    pass


class Subscription:
    """One event stream's queue; `job_id` None means every job."""

    def __init__(self, job_id: str | None, capacity: int) -> None:
        self.job_id = job_id
        self.dropped = 0  # times this subscriber fell behind
        self._capacity = capacity
        self._pending: deque[Notice] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, notice: Notice) -> None:
        """Queue without waiting; a full queue is replaced by one `resync`."""
        if len(self._pending) >= self._capacity:
            self._pending.clear()
            self._pending.append(RESYNC)
            self.dropped += 1
        else:
            self._pending.append(notice)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def next(self, wait_s: float) -> Notice | None:
        """The next notice; None when none came within `wait_s` (time for a
        keep-alive); StreamClosed once the broadcaster is closed."""
        if not self._pending and not self._closed:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._ready.wait()
        if self._closed:
            raise StreamClosed
        return self._pending.popleft() if self._pending else None


class Broadcaster:
    def __init__(
        self,
        *,
        capacity: int = limits.LIVE_QUEUE_NOTICES,
        max_subscribers: int = limits.LIVE_MAX_STREAMS,
    ) -> None:
        self._capacity = capacity
        self._max_subscribers = max_subscribers
        self._subscribers: set[Subscription] = set()
        self.closed = False

    def subscribe(self, job_id: str | None = None) -> Subscription:
        if self.closed:
            raise StreamClosed
        if len(self._subscribers) >= self._max_subscribers:
            raise TooManySubscribers
        subscription = Subscription(job_id, self._capacity)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, job_id: str, **data: Any) -> None:
        """Tell every subscriber of all jobs, or of `job_id`, what changed."""
        if not self._subscribers:
            return
        notice = Notice(kind, job_id, data)
        for subscription in self._subscribers:
            if subscription.job_id is None or subscription.job_id == job_id:
                subscription.offer(notice)

    def job_changed(self, receipt: Receipt) -> None:
        """A committed delivery (webhook, poll or cancel answer); duplicates
        changed nothing and are not told."""
        if not receipt.duplicate:
            self.publish(
                "job", receipt.job_id, status=receipt.status, outcome=receipt.outcome
            )

    def close(self) -> None:
        """End every stream; idempotent. New subscriptions are refused."""
        self.closed = True
        for subscription in self._subscribers:
            subscription.close()
