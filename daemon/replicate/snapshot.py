"""A training or prediction object from the API, recorded like a webhook.

Polling, cancelling and submitting all learn a job's state from an API answer;
each answer goes through the webhook's own state machine as a synthetic delivery
`<label>:<job>:<sha256>`, so an unchanged answer is a duplicate no-op.
"""

from __future__ import annotations

import hashlib
import logging
import time

from daemon.record.events import parse_body
from daemon.record.jobs import Delivery, OutputPlan, Receipt, record_delivery
from daemon.record.writer import Writer

log = logging.getLogger(__name__)


async def apply_snapshot(
    writer: Writer, plan: OutputPlan, job_id: str, body: bytes, *, label: str
) -> Receipt:
    """Record a training or prediction object from the API as a synthetic delivery
    `<label>:<job>:<sha256>`, through the webhook's own state machine."""
    event = parse_body(body)
    if event.job_id != job_id:
        raise ValueError(f"Replicate answered for another id {event.job_id!r}")
    digest = hashlib.sha256(body).hexdigest()
    delivery = Delivery(
        webhook_id=f"{label}:{job_id}:{digest}",
        received_at=time.time(),
        body_bytes=len(body),
        body_sha256=digest,
        signature=label,
        event=event,
    )
    return await writer.submit(lambda conn: record_delivery(conn, delivery, plan))


def log_transition(receipt: Receipt, reason: str) -> None:
    if receipt.status_changed:
        log.info(
            "job %s: %s -> %s (%s)",
            receipt.job_id,
            receipt.previous_status or "new",
            receipt.status,
            reason,
        )
