"""The /api/cloud/replicate/ endpoints and the client's lifetime in the app.

Replicate's refusals become the daemon's one error shape: no token configured is
503, a token Replicate refuses is 401 with the hints, anything else from Replicate
(or no answer at all) is 502 with Replicate's own `detail`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from daemon import cost
from daemon.appkeys import READER, REPLICATE, SETTINGS
from daemon.errors import ApiError
from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import InvalidToken, ReplicateError, TokenMissing
from daemon.replicate.status import replicate_status


async def client_context(app: web.Application) -> AsyncIterator[None]:
    client = ReplicateClient(app[SETTINGS].replicate)
    app[REPLICATE] = client
    try:
        yield
    finally:
        await client.close()


async def validate(request: web.Request) -> web.Response:
    """Whether the token works, and whose account it is."""
    try:
        account = await request.app[REPLICATE].account()
    except ReplicateError as exc:
        raise as_api_error(exc) from None
    return web.json_response(
        {key: account.get(key) for key in ("type", "username", "name")}
    )


async def versions(request: web.Request) -> web.Response:
    """Every version of the configured trainer model, newest first."""
    client = request.app[REPLICATE]
    try:
        found = await client.model_versions(client.trainer_model)
    except ReplicateError as exc:
        raise as_api_error(exc) from None
    return web.json_response({"model": client.trainer_model, "versions": found})


async def status(request: web.Request) -> web.Response:
    """Replicate's public status page; 200 with "unknown" when it cannot be read."""
    found = await replicate_status(request.app[SETTINGS].replicate.status_url)
    return web.json_response(found)


async def billing(request: web.Request) -> web.Response:
    """Recorded spend in the current period against the limit; needs no token."""
    settings = request.app[SETTINGS].cost
    spend = await cost.period_spend(request.app[READER], settings, time.time())
    credit = request.app[REPLICATE].last_insufficient_credit
    return web.json_response(cost.billing_report(spend, settings, credit))


def as_api_error(exc: ReplicateError) -> ApiError:
    if isinstance(exc, TokenMissing):
        return ApiError(503, "replicate_token_missing", str(exc))
    if isinstance(exc, InvalidToken):
        return ApiError(401, "replicate_invalid_token", str(exc))
    if exc.status == 402:
        return ApiError(502, "replicate_insufficient_credit", str(exc))
    return ApiError(502, "replicate_error", f"Replicate: {exc}")
