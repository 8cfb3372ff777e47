"""Cancelling a job at Replicate and recording what Replicate answers.

The job must be known and unfinished here; the cancel goes to the training of
that id, or to the prediction when no training has it, and Replicate's answer
goes through the webhook's state machine exactly as a reconciliation poll does
(a synthetic delivery `cancel:<job>:<sha256>`). The HTTP endpoint and the CLI
share `cancel_job`; nothing is changed locally unless Replicate answered.

Refusals (CancelRefused, with a code the handler turns into a status):
    job_not_found           no such job recorded here: nothing was sent
    job_finished            the job is already terminal here: nothing was sent
    replicate_job_not_found Replicate knows neither a training nor a prediction
    replicate_bad_answer    the answer is not a snapshot of this job
Any other ReplicateError is raised as it is.
"""

from __future__ import annotations

import aiosqlite
from aiohttp import web

from daemon.appkeys import BROADCAST, READER, REPLICATE, SETTINGS, WORKERS, WRITER
from daemon.errors import ApiError
from daemon.read import queries
from daemon.record.events import BodyError, is_terminal
from daemon.record.jobs import OutputPlan, Receipt
from daemon.record.writer import Writer
from daemon.replicate.api import as_api_error
from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import ReplicateError
from daemon.replicate.snapshot import apply_snapshot, log_transition

SIGNATURE_LABEL = "cancel"

_STATUS_BY_CODE = {
    "job_not_found": 404,
    "job_finished": 409,
    "replicate_job_not_found": 502,
    "replicate_bad_answer": 502,
}


class CancelRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def cancel_job(
    client: ReplicateClient,
    writer: Writer,
    reader: aiosqlite.Connection,
    plan: OutputPlan,
    job_id: str,
) -> Receipt:
    """Cancel `job_id` at Replicate and record the answer; the receipt says what
    the job's status became."""
    async with reader.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)) as c:
        row = await c.fetchone()
    if row is None:
        raise CancelRefused("job_not_found", f"no job with id {job_id!r}")
    if is_terminal(row[0]):
        raise CancelRefused("job_finished", f"job {job_id} is already {row[0]}")

    try:
        body = await client.cancel_job(job_id)
    except ReplicateError as exc:
        if exc.status != 404:
            raise
        raise CancelRefused(
            "replicate_job_not_found",
            f"Replicate has no training or prediction {job_id}; job left unchanged",
        ) from None

    try:
        receipt = await apply_snapshot(
            writer, plan, job_id, body, label=SIGNATURE_LABEL
        )
    except (BodyError, ValueError) as exc:
        raise CancelRefused(
            "replicate_bad_answer", f"Replicate's answer to the cancel: {exc}"
        ) from None
    log_transition(receipt, "cancel requested")
    return receipt


async def cancel(request: web.Request) -> web.Response:
    """POST /api/jobs/{job_id}/cancel: the job's new state, as GET /api/jobs/{id}."""
    app = request.app
    job_id = request.match_info["job_id"]
    try:
        receipt = await cancel_job(
            app[REPLICATE], app[WRITER], app[READER], app[SETTINGS].plan, job_id
        )
    except CancelRefused as exc:
        raise ApiError(_STATUS_BY_CODE[exc.code], exc.code, str(exc)) from None
    except ReplicateError as exc:
        raise as_api_error(exc) from None

    if receipt.tasks_created:
        app[WORKERS].wake()  # Replicate had finished it: outputs go out as usual
    app[BROADCAST].job_changed(receipt)
    return web.json_response(await queries.get_job(app[READER], job_id))
