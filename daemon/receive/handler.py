"""POST /api/webhooks/replicate: check, verify, record, then answer.

Checks run in this order and stop at the first failure: client address (403), body
size and encoding (413/415), signature headers and signature (400/401), body shape
(400/422), then the delivery is recorded and applied in one transaction: a repeated
webhook-id with the same bytes is a 200 duplicate, with other bytes a 409. Only a
committed write is answered 200; storage that cannot commit in time is a 503 with
Retry-After, which is safe because a retry of the same message is a duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from aiohttp import web

from daemon import limits
from daemon.access import CLIENT_ADDRESS, client_of
from daemon.appkeys import (
    BODY_SLOTS,
    BROADCAST,
    SETTINGS,
    SIGNING_KEYS,
    STATS,
    WORKERS,
    WRITER,
)
from daemon.errors import ApiError
from daemon.receive.body import check_declared, read_capped
from daemon.receive.client_ip import contains
from daemon.receive.signature import Verdict, Verification, header_problem, verify
from daemon.record.events import BodyError, Event, parse_body
from daemon.record.jobs import Delivery, Receipt, WebhookIdConflict, record_delivery
from daemon.record.writer import StorageUnavailable
from daemon.stats import ACCEPTED, DUPLICATE, REJECTED

log = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


async def receive_webhook(request: web.Request) -> web.Response:
    started = time.perf_counter()
    stats = request.app[STATS]
    try:
        receipt = await _receive(request)
    except ApiError as exc:
        stats.count(REJECTED, exc.code)
        log.warning(
            "webhook refused %s %s from %s webhook-id=%s: %s",
            exc.status,
            exc.code,
            request.get(CLIENT_ADDRESS, request.remote),
            _printable(request.headers.get("webhook-id")),
            exc.message,
        )
        raise
    elapsed_ms = (time.perf_counter() - started) * 1000
    if receipt.duplicate:
        stats.count(DUPLICATE, "webhook_id_seen")
    else:
        stats.count(ACCEPTED, receipt.outcome)
    _log_receipt(receipt, request.headers["webhook-id"], elapsed_ms)
    return web.json_response(
        {
            "ok": True,
            "job_id": receipt.job_id,
            "status": receipt.status,
            "outcome": receipt.outcome,
            "duplicate": receipt.duplicate,
        }
    )


async def _receive(request: web.Request) -> Receipt:
    settings = request.app[SETTINGS].current
    client = client_of(request)
    if settings.allowed_ips and not contains(settings.allowed_ips, client):
        raise ApiError(403, "forbidden_ip", f"{client} is not in webhook.allowed_ips")

    # Everything the headers alone can refuse is refused before the body is read.
    check_declared(request, settings.max_body_bytes)
    msg_id, timestamp, signature = _signature_headers(request)
    problem = header_problem(msg_id, timestamp, signature)
    if problem:
        raise ApiError(401, "invalid_signature", problem)

    keys = request.app[SIGNING_KEYS]
    if not keys.current():  # fail closed: no secret, no delivery is accepted
        raise ApiError(
            503,
            "secret_unavailable",
            "the signing secret could not be fetched from Replicate; retry later",
            headers={"Retry-After": str(limits.RETRY_AFTER_S)},
        )
    body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)

    def check() -> Verification:
        return verify(
            keys.current(),
            msg_id,
            timestamp,
            signature,
            body,
            now=time.time(),
            tolerance_s=settings.timestamp_tolerance_s,
        )

    verification = check()
    # A fetched secret may have rotated: refetch (rate-limited), then retry once.
    if verification.verdict is Verdict.INVALID:
        changed = await keys.refresh_within(limits.SECRET_REFRESH_WAIT_S)
        if changed is None:
            raise ApiError(
                503,
                "secret_refreshing",
                "the signing secret is being fetched again from Replicate; retry",
                headers={"Retry-After": str(limits.RETRY_AFTER_S)},
            )
        if changed:
            verification = check()
    if not verification.ok:
        raise ApiError(401, verification.verdict.value, verification.reason)
    request.app[STATS].verified()

    try:
        event = parse_body(body)
    except BodyError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    delivery = _delivery(msg_id, body, verification, event, str(client))
    return await _commit(request, delivery)


async def _read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """Read under a bounded number of body slots, so memory stays bounded."""
    slots = request.app[BODY_SLOTS]
    try:
        async with asyncio.timeout(limits.BODY_SLOT_WAIT_S):
            await slots.acquire()
    except TimeoutError:
        raise ApiError(
            503,
            "busy",
            "too many deliveries in flight; retry later",
            headers={"Retry-After": "1"},
        ) from None
    try:
        return await read_capped(request, max_bytes, timeout_s)
    finally:
        slots.release()


def _signature_headers(request: web.Request) -> tuple[str, str, str]:
    values = []
    for name in SIGNATURE_HEADERS:
        lines = request.headers.getall(name, [])
        if len(set(lines)) > 1:
            raise ApiError(
                400, "duplicate_header", f"{name} sent twice with two values"
            )
        if not lines:
            raise ApiError(401, "invalid_signature", f"{name} header is missing")
        values.append(lines[0])
    return values[0], values[1], values[2]


def _delivery(
    msg_id: str, body: bytes, verification: Verification, event: Event, client: str
) -> Delivery:
    return Delivery(
        webhook_id=msg_id,
        received_at=time.time(),
        body_bytes=len(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
        signature=f"v1 key {verification.key_index}",
        event=event,
        client_address=client,
    )


async def _commit(request: web.Request, delivery: Delivery) -> Receipt:
    writer, plan = request.app[WRITER], request.app[SETTINGS].plan
    try:
        async with asyncio.timeout(limits.COMMIT_WAIT_S):
            receipt = await writer.submit(
                lambda conn: record_delivery(conn, delivery, plan)
            )
    except WebhookIdConflict:
        raise ApiError(
            409, "webhook_id_conflict", "webhook-id was seen before with another body"
        ) from None
    except (StorageUnavailable, TimeoutError):
        raise _unavailable() from None
    except Exception:
        log.exception("recording webhook-id=%s failed", delivery.webhook_id)
        raise _unavailable() from None
    if receipt.tasks_created:
        request.app[WORKERS].wake()
    request.app[BROADCAST].job_changed(receipt)  # committed: dashboards may read it
    return receipt


def _unavailable() -> ApiError:
    return ApiError(
        503,
        "storage_unavailable",
        "the delivery could not be stored; retry later",
        headers={"Retry-After": str(limits.RETRY_AFTER_S)},
    )


def _log_receipt(receipt: Receipt, msg_id: str, elapsed_ms: float) -> None:
    if receipt.duplicate:
        log.info("job %s: duplicate webhook-id=%s ignored", receipt.job_id, msg_id)
    elif receipt.status_changed:
        log.info(
            "job %s: %s -> %s (webhook-id=%s, %.1f ms)",
            receipt.job_id,
            receipt.previous_status or "new",
            receipt.status,
            msg_id,
            elapsed_ms,
        )
    elif receipt.outcome == "conflict":
        log.warning(
            "job %s: conflicting terminal status after %s (webhook-id=%s)",
            receipt.job_id,
            receipt.status,
            msg_id,
        )
    else:
        log.debug("job %s: %s (webhook-id=%s)", receipt.job_id, receipt.outcome, msg_id)


def _printable(value: str | None) -> str:
    if value and value.isascii() and value.isprintable() and len(value) <= 64:
        return value
    return "-" if not value else "<unprintable>"
