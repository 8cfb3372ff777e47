"""Typed keys for what the application shares between handlers."""

from __future__ import annotations

import asyncio

import aiohttp
import aiosqlite
from aiohttp import web

from daemon.config import Settings
from daemon.deliver.worker import DeliveryWorkers
from daemon.live import Broadcaster
from daemon.record.jobs import OutputPlan
from daemon.record.writer import Writer
from daemon.replicate.client import ReplicateClient
from daemon.replicate.signing import SigningKeys
from daemon.stats import DeliveryStats

SETTINGS = web.AppKey("settings", Settings)
SIGNING_KEYS = web.AppKey("signing_keys", SigningKeys)
BODY_SLOTS = web.AppKey("body_slots", asyncio.Semaphore)
WRITER = web.AppKey("writer", Writer)
READER = web.AppKey("reader", aiosqlite.Connection)
STATS = web.AppKey("stats", DeliveryStats)
OUTPUT_PLAN = web.AppKey("output_plan", OutputPlan)
HTTP = web.AppKey("http", aiohttp.ClientSession)
WORKERS = web.AppKey("workers", DeliveryWorkers)
REPLICATE = web.AppKey("replicate", ReplicateClient)
LIVE = web.AppKey("live", Broadcaster)
