"""GET and PUT /api/cloud/providers/replicate: settings changed without a restart.

A PUT names any of the fields below at the top level; `cost_limit` and `publish`
are objects whose keys are set one by one. null puts a field back to its
configured value; for the publish targets, "" switches a configured one off.
The change is validated by rebuilding the settings the way start-up builds them,
so the API and the config file accept the same values. Only then are the rows
stored and the new settings put in force, for the next request or delivery
task. Stored values win over the config file and the environment; nothing secret
can be set here (tokens and keys stay in the environment).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from daemon import limits
from daemon.appkeys import READER, SETTINGS, WRITER
from daemon.config import rebuild
from daemon.errors import ApiError
from daemon.jsonbody import read_json
from daemon.settings import ConfigError, Settings

log = logging.getLogger(__name__)

# API field -> configuration key. Dotted fields are keys of an object field.
FIELDS: dict[str, str] = {
    "public_url": "server.public_url",
    "webhook_allowed_ips": "webhook.allowed_ips",
    "trusted_proxies": "webhook.trusted_proxies",
    "client_ip_header": "webhook.client_ip_header",
    "trainer_model": "replicate.trainer_model",
    "destination": "replicate.destination",
    "cost_limit.amount": "cost.limit_amount",
    "cost_limit.period": "cost.limit_period",
    "cost_limit.action": "cost.limit_action",
    "prices_per_hour": "cost.prices_per_hour",
    "publish.hub_model_id": "hub.model_id",
    "publish.s3_bucket": "s3.bucket",
    "publish.s3_prefix": "s3.prefix",
}
_FIELD_OF = {key: name for name, key in FIELDS.items()}
_OBJECTS = {"cost_limit", "publish"}


class SettingError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def stored_changes(conn: sqlite3.Connection) -> dict[str, Any]:
    """The stored overrides: configuration key -> value."""
    rows = conn.execute("SELECT key, value_json FROM provider_settings").fetchall()
    return {key: json.loads(value) for key, value in rows if key in _FIELD_OF}


def read_stored(path: Path) -> dict[str, Any]:
    """The stored overrides of the database at `path`, read-only; none before
    the table exists."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return stored_changes(conn)
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def with_stored(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """`settings` with the stored overrides; one that no longer validates (the
    config changed under it) is left out, with a warning."""
    changes = dict(changes)
    while True:
        try:
            return keep_source(settings, rebuild(settings, changes))
        except ConfigError as exc:
            if exc.key not in changes:
                raise
            log.warning("stored provider setting ignored: %s", exc)
            del changes[exc.key]


def keep_source(original: Settings, rebuilt: Settings) -> Settings:
    """A rebuilt Settings that can be rebuilt again from the original sources."""
    return replace(rebuilt, source=original.source)


def parse_change(body: Any) -> dict[str, Any]:
    """A PUT body as configuration key -> value (None: back to the configured)."""
    if not isinstance(body, dict) or not body:
        raise SettingError("", "the body must be a JSON object naming some settings")
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name in _OBJECTS:
            changes.update(_object_change(name, value))
        elif name in FIELDS:
            changes[FIELDS[name]] = value
        else:
            raise SettingError(name, f"{name}: unknown setting")
    return changes


def _object_change(name: str, value: Any) -> dict[str, Any]:
    keys = [field for field in FIELDS if field.startswith(name + ".")]
    if value is None:
        return {FIELDS[field]: None for field in keys}
    if not isinstance(value, dict):
        raise SettingError(name, f"{name}: must be an object or null")
    changes = {}
    for key, item in value.items():
        field = f"{name}.{key}"
        if field not in FIELDS:
            raise SettingError(field, f"{field}: unknown setting")
        changes[FIELDS[field]] = item
    return changes


def as_setting_error(exc: ConfigError) -> SettingError:
    """A ConfigError, worded with the API's field name instead of the key."""
    field = _FIELD_OF.get(exc.key, "")
    message = str(exc)
    if field:
        message = field + message[len(exc.key) :]
    return SettingError(field, message)


def view(settings: Settings, overridden: set[str]) -> dict[str, Any]:
    """The GET body: the settings in force, the webhook URL, warnings."""
    cost, s3 = settings.cost, settings.s3
    body = {
        "public_url": settings.public_url,
        "webhook_allowed_ips": [str(n) for n in settings.allowed_ips],
        "trusted_proxies": [str(n) for n in settings.trusted_proxies],
        "client_ip_header": settings.client_ip_header,
        "trainer_model": settings.replicate.trainer_model,
        "destination": settings.replicate.destination,
        "cost_limit": {
            "amount": cost.limit_amount,
            "period": cost.limit_period,
            "action": cost.limit_action,
        },
        "prices_per_hour": dict(cost.prices_per_hour),
        "publish": {
            "hub_model_id": settings.hub.model_id,
            "s3_bucket": s3.bucket,
            "s3_prefix": s3.prefix,
        },
    }
    return {
        "settings": body,
        "webhook_url": settings.webhook_url,
        "overridden": sorted(_FIELD_OF[key] for key in overridden),
        "warnings": warnings(settings),
    }


def warnings(settings: Settings) -> list[str]:
    found = []
    url = settings.public_url
    if url is None:
        found.append(
            "public_url is not set: submitted trainings get no webhook and are "
            "followed by polling (reconciliation) only"
        )
    elif not url.startswith("https://"):
        found.append(
            f"public_url {url} is not https: webhook bodies would cross the "
            "network unencrypted"
        )
    if not settings.allowed_ips:
        found.append(
            "webhook_allowed_ips is empty: any address may post webhooks "
            "(the signature check still applies)"
        )
    if settings.hub.model_id and settings.hub.token is None:
        found.append("publish.hub_model_id is set but HF_TOKEN is not")
    return found


async def get_provider(request: web.Request) -> web.Response:
    overridden = await _overridden(request.app[READER])
    return web.json_response(view(request.app[SETTINGS].current, overridden))


async def put_provider(request: web.Request) -> web.Response:
    body = await read_json(request, limits.SETTINGS_MAX_BODY_BYTES)
    try:
        changes = parse_change(body)
    except SettingError as exc:
        raise _invalid(exc) from None
    live, writer = request.app[SETTINGS], request.app[WRITER]
    async with live.lock:
        stored = await writer.submit(stored_changes)
        merged = {**stored, **changes}
        merged = {key: value for key, value in merged.items() if value is not None}
        try:
            settings = keep_source(live.current, rebuild(live.current, merged))
        except ConfigError as exc:
            raise _invalid(as_setting_error(exc)) from None
        await writer.submit(lambda conn: _store(conn, changes))
        live.replace(settings)
    log.info("provider settings changed: %s", ", ".join(sorted(_named(changes))))
    return web.json_response(view(settings, set(merged)))


def _named(changes: Mapping[str, Any]) -> set[str]:
    return {_FIELD_OF[key] for key in changes}


def _store(conn: sqlite3.Connection, changes: Mapping[str, Any]) -> None:
    now = time.time()
    for key, value in changes.items():
        if value is None:
            conn.execute("DELETE FROM provider_settings WHERE key = ?", (key,))
        else:
            conn.execute(
                "INSERT INTO provider_settings (key, value_json, updated_at)"
                " VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value_json = excluded.value_json,"
                " updated_at = excluded.updated_at",
                (key, json.dumps(value), now),
            )


async def _overridden(reader: Any) -> set[str]:
    async with reader.execute("SELECT key FROM provider_settings") as cursor:
        return {row[0] for row in await cursor.fetchall() if row[0] in _FIELD_OF}


def _invalid(exc: SettingError) -> ApiError:
    status = 400 if not exc.field else 422
    code = "bad_request" if status == 400 else "invalid_setting"
    extra = {"field": exc.field} if exc.field else None
    return ApiError(status, code, str(exc), extra=extra)
