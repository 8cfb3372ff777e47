"""Typed keys for what the application shares between handlers."""

from __future__ import annotations

import aiosqlite
from aiohttp import web

from daemon.config import Settings
from daemon.record.writer import Writer
from daemon.stats import DeliveryStats

SETTINGS = web.AppKey("settings", Settings)
HMAC_KEYS = web.AppKey("hmac_keys", tuple[bytes, ...])
WRITER = web.AppKey("writer", Writer)
READER = web.AppKey("reader", aiosqlite.Connection)
STATS = web.AppKey("stats", DeliveryStats)
