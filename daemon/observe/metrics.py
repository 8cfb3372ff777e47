"""The Prometheus series the daemon exposes at /metrics, in one registry per app.

Each application has its own CollectorRegistry, so several apps in one process
(the tests) never share a series. What happens on a request path is counted in
memory where it happens: webhook outcomes in DeliveryStats (read at scrape time),
request latency and delivery outcomes in prometheus_client objects. What is held
in the database (jobs by status, the delivery queue) is read with two grouped
queries on the reader connection when /metrics is scraped, never per webhook.

Series (all prefixed replicate_webhookd_):
    webhooks_received_total{outcome,reason}   accepted|duplicate|rejected
    http_request_duration_seconds{route,method}   route template, not the path
    jobs{status}                                  recorded jobs
    delivery_queue_tasks{destination,state}       unfinished tasks: queued|running
    delivery_queue_oldest_age_seconds             oldest unfinished task; 0: none
    deliveries_total{destination,outcome}         succeeded|failed|retried
    last_verified_webhook_age_seconds             absent until the first one
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import aiosqlite
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from daemon.stats import DeliveryStats

PREFIX = "replicate_webhookd_"
# Statuses shown even at zero, so a dashboard has a line for each from the start.
KNOWN_JOB_STATUSES = ("starting", "processing", "succeeded", "failed", "canceled")
PENDING_STATES = ("queued", "running")
# From a 1 ms committed delivery to the 30 s body-read limit.
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass
class StateSnapshot:
    """What the database held at the last scrape."""

    jobs: dict[str, int] = field(default_factory=dict)
    queue: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_created_at: float | None = None


class Metrics:
    """The registry and the series that are updated where things happen."""

    def __init__(self, stats: DeliveryStats, destinations: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            PREFIX + "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.deliveries = Counter(
            PREFIX + "deliveries",
            "Output delivery attempts that ended, by destination and outcome "
            "(succeeded, failed for good, or retried later).",
            ["destination", "outcome"],
            registry=self.registry,
        )
        self.state = _StateCollector(stats, tuple(destinations))
        self.registry.register(self.state)
        ProcessCollector(registry=self.registry)  # process_* series

    def delivery_ended(self, destination: str, outcome: str) -> None:
        self.deliveries.labels(destination, outcome).inc()

    async def refresh(self, reader: aiosqlite.Connection) -> None:
        """Read the database-backed gauges; called by /metrics before rendering."""
        snapshot = StateSnapshot()
        async with reader.execute(
            "SELECT status, count(*) FROM jobs GROUP BY status"
        ) as cursor:
            snapshot.jobs = {status: n async for status, n in cursor}
        async with reader.execute(
            "SELECT destination, state, count(*), min(created_at) FROM output_tasks"
            " WHERE state IN ('queued', 'running') GROUP BY destination, state"
        ) as cursor:
            async for destination, state, n, oldest in cursor:
                snapshot.queue[(destination, state)] = n
                if snapshot.oldest_created_at is None:
                    snapshot.oldest_created_at = oldest
                snapshot.oldest_created_at = min(snapshot.oldest_created_at, oldest)
        self.state.snapshot = snapshot


class _StateCollector(Collector):
    """Series computed at scrape time from the stats and the last snapshot."""

    def __init__(self, stats: DeliveryStats, destinations: tuple[str, ...]) -> None:
        self._stats = stats
        self._destinations = destinations
        self.snapshot = StateSnapshot()

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        yield self._webhooks()
        yield from self._database(now)
        age = GaugeMetricFamily(
            PREFIX + "last_verified_webhook_age_seconds",
            "Seconds since a webhook last passed the signature check "
            "(absent until the first since start-up).",
        )
        if self._stats.last_verified_at is not None:
            age.add_metric([], max(0.0, now - self._stats.last_verified_at))
        yield age

    def _webhooks(self) -> Metric:
        family = CounterMetricFamily(
            PREFIX + "webhooks_received",
            "Webhook deliveries answered, by outcome (accepted, duplicate, "
            "rejected) and reason (the receipt's outcome or the error code).",
            labels=["outcome", "reason"],
        )
        for (outcome, reason), n in sorted(self._stats.counts.items()):
            family.add_metric([outcome, reason], n)
        return family

    def _database(self, now: float) -> Iterator[Metric]:
        snapshot = self.snapshot
        jobs = GaugeMetricFamily(
            PREFIX + "jobs", "Recorded jobs by status.", labels=["status"]
        )
        counts = dict.fromkeys(KNOWN_JOB_STATUSES, 0) | snapshot.jobs
        for status, n in sorted(counts.items()):
            jobs.add_metric([status], n)
        yield jobs
        queue = GaugeMetricFamily(
            PREFIX + "delivery_queue_tasks",
            "Delivery tasks not finished yet, by destination and state.",
            labels=["destination", "state"],
        )
        known = {(d, s): 0 for d in self._destinations for s in PENDING_STATES}
        for (destination, state), n in sorted((known | snapshot.queue).items()):
            queue.add_metric([destination, state], n)
        yield queue
        oldest = snapshot.oldest_created_at
        yield GaugeMetricFamily(
            PREFIX + "delivery_queue_oldest_age_seconds",
            "Age of the oldest unfinished delivery task (0 when there is none).",
            value=0.0 if oldest is None else max(0.0, now - oldest),
        )
