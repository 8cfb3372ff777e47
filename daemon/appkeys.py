"""Typed keys for what the application shares between handlers."""

from __future__ import annotations

import asyncio

import aiohttp
import aiosqlite
from aiohttp import web

from daemon.broadcast import Broadcaster
from daemon.deliver.worker import DeliveryWorkers
from daemon.live import LiveSettings
from daemon.observe.metrics import Metrics
from daemon.record.writer import Writer
from daemon.replicate.client import ReplicateClient
from daemon.replicate.signing import SigningKeys
from daemon.replicate.submit import Submitter
from daemon.stats import DeliveryStats

SETTINGS = web.AppKey("settings", LiveSettings)
SIGNING_KEYS = web.AppKey("signing_keys", SigningKeys)
BODY_SLOTS = web.AppKey("body_slots", asyncio.Semaphore)
WRITER = web.AppKey("writer", Writer)
READER = web.AppKey("reader", aiosqlite.Connection)
STATS = web.AppKey("stats", DeliveryStats)
METRICS = web.AppKey("metrics", Metrics)
HTTP = web.AppKey("http", aiohttp.ClientSession)
WORKERS = web.AppKey("workers", DeliveryWorkers)
REPLICATE = web.AppKey("replicate", ReplicateClient)
SUBMITTER = web.AppKey("submitter", Submitter)
BROADCAST = web.AppKey("broadcast", Broadcaster)
