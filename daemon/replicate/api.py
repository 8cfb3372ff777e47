"""The /api/cloud/replicate/ endpoints and the client's lifetime in the app.

Replicate's refusals become the daemon's one error shape: no token configured is
503, a token Replicate refuses is 401 with the hints, anything else from Replicate
(or no answer at all) is 502 with Replicate's own `detail`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from daemon import cost, limits
from daemon.appkeys import BROADCAST, READER, REPLICATE, SETTINGS, SUBMITTER, WRITER
from daemon.errors import ApiError
from daemon.jsonbody import read_json
from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import InvalidToken, ReplicateError, TokenMissing
from daemon.replicate.status import replicate_status
from daemon.replicate.submissions import SubmitRefused, parse_request
from daemon.replicate.submit import Submitter


async def client_context(app: web.Application) -> AsyncIterator[None]:
    """The client, and the submitter that uses it (needs the database)."""
    client = ReplicateClient(app[SETTINGS].current.replicate)
    app[REPLICATE] = client
    app[SUBMITTER] = Submitter(client, app[WRITER], app[READER], app[SETTINGS])
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
    model = request.app[SETTINGS].current.replicate.trainer_model
    try:
        found = await request.app[REPLICATE].model_versions(model)
    except ReplicateError as exc:
        raise as_api_error(exc) from None
    return web.json_response({"model": model, "versions": found})


async def status(request: web.Request) -> web.Response:
    """Replicate's public status page; 200 with "unknown" when it cannot be read."""
    found = await replicate_status(request.app[SETTINGS].current.replicate.status_url)
    return web.json_response(found)


async def billing(request: web.Request) -> web.Response:
    """Recorded spend in the current period against the limit; needs no token."""
    settings = request.app[SETTINGS].current.cost
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


async def submit(request: web.Request) -> web.Response:
    """Start a training; 201 with the job, 200 when the idempotency key replays."""
    try:
        body = await read_json(request, limits.SUBMIT_MAX_BODY_BYTES)
        settings = request.app[SETTINGS].current
        checked, key, fingerprint = parse_request(body, settings)
        status, answer = await request.app[SUBMITTER].submit(checked, key, fingerprint)
    except SubmitRefused as exc:
        extra = {"field": exc.field} if exc.field else None
        raise ApiError(exc.status, exc.code, exc.message, extra=extra) from None
    job_id = answer.get("job_id")
    if status == 201 and isinstance(job_id, str):  # a new job: dashboards show it
        request.app[BROADCAST].publish("job", job_id, outcome="submitted")
    return web.json_response(answer, status=status)
