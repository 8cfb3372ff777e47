"""POST /api/cloud/replicate/submit: start a training the daemon then follows.

Steps, in order: check the request (422 naming the field); return the recorded
job when the idempotency key was seen with the same request; check the cost
limit (block: 402 naming spend, limit and period; warn: a warning); record a
pending submission; upload the dataset (`POST /v1/files`, streamed from disk);
resolve "latest"; create the training with Replicate's own `webhook` and
`webhook_events_filter`; record the answer through the webhook state machine.
Without a public URL the training gets no webhook and reconciliation follows it.

Replicate's answers: 401 and 402 pass through; another 4xx is 422 with its
detail and the submission failed; 429 after the client's retries is 503. No
answer or a 5xx leaves the submission pending, since the training may exist:
reconciliation then finds it among the account's newest trainings, or gives up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import cost, limits
from daemon.live import LiveSettings
from daemon.record.events import epoch
from daemon.record.writer import Writer
from daemon.replicate import dataset
from daemon.replicate import submissions as rows
from daemon.replicate.client import ReplicateClient
from daemon.replicate.errors import InvalidToken, ReplicateError, TokenMissing
from daemon.replicate.snapshot import apply_snapshot, log_transition
from daemon.replicate.submissions import SubmitRefused, SubmitRequest
from daemon.settings import Settings

log = logging.getLogger(__name__)

SUBMIT_LABEL = "submit"


@dataclass
class Submitter:
    client: ReplicateClient
    writer: Writer
    reader: Any  # aiosqlite.Connection
    live: LiveSettings
    in_flight: set[str] = field(default_factory=set)
    # Pending rows untouched since before this process started are orphans at
    # once; younger ones after this long (see limits).
    orphan_after_s: float = limits.SUBMIT_ORPHAN_AFTER_S
    started_at: float = field(default_factory=time.time)

    async def submit(
        self, request: SubmitRequest, key: str | None, fingerprint: str
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for a checked request."""
        if not self.client.has_token:
            raise SubmitRefused(
                503, "replicate_token_missing", "REPLICATE_API_TOKEN not set"
            )
        if key is not None:
            replayed = await self.writer.submit(lambda conn: rows.find(conn, key=key))
            if replayed is not None and replayed["state"] == "submitted":
                rows.check_replay(replayed, fingerprint)
                return 200, self._view(replayed, [], replay=True)
        settings = self.live.current
        if request.dataset is not None:
            try:
                await asyncio.to_thread(
                    dataset.check_source, Path(request.dataset), _private(settings)
                )
            except dataset.DatasetError as exc:
                raise SubmitRefused(
                    422, "invalid_dataset", str(exc), "dataset"
                ) from None
        warnings = await self._cost_warnings(settings)
        if settings.webhook_url is None:
            warnings.append(
                "public_url is not set: the training gets no webhook; the daemon "
                "follows it by polling every "
                f"{settings.replicate.reconcile_interval_s:g} s"
            )
        row = await self.writer.submit(
            lambda conn: rows.begin(conn, request, key, fingerprint)
        )
        self.in_flight.add(row["id"])
        try:
            row = await self._run(row, request, settings, warnings)
        finally:
            self.in_flight.discard(row["id"])
        return 201, self._view(row, warnings, replay=False)

    async def _cost_warnings(self, settings: Settings) -> list[str]:
        limit = settings.cost
        if limit.limit_amount <= 0:
            return []
        spend = await cost.period_spend(self.reader, limit, time.time())
        told = (
            f"${spend.total:.2f} spent of the ${limit.limit_amount:.2f} "
            f"{limit.limit_period} limit (period from {spend.start.date()})"
        )
        if spend.total >= limit.limit_amount:
            if limit.limit_action == "block":
                raise SubmitRefused(402, "cost_limit_reached", f"cost limit: {told}")
            log.warning("submit over the cost limit: %s", told)
            return [f"over the cost limit: {told}"]
        if spend.total >= limits.COST_WARN_SHARE * limit.limit_amount:
            log.warning("submit near the cost limit: %s", told)
            return [f"near the cost limit: {told}"]
        return []

    async def _run(
        self,
        row: dict[str, Any],
        request: SubmitRequest,
        settings: Settings,
        warnings: list[str],
    ) -> dict[str, Any]:
        try:
            files_url, skipped = await self._upload(row, request, settings)
            version = request.version or await self.client.latest_version(request.model)
            body = _training_body(request, files_url, settings)
            raw = await self.client.create_training(request.model, version, body)
        except dataset.DatasetError as exc:
            await self._fail(row, str(exc))
            raise SubmitRefused(422, "invalid_dataset", str(exc), "dataset") from None
        except ReplicateError as exc:
            raise await self._refused(row, exc) from None
        except Exception as exc:
            # Never leave a submission pending for an error of our own.
            await self._fail(row, f"unexpected error: {type(exc).__name__}")
            raise
        row = await self._record(row, raw, version)
        row["skipped"] = skipped
        if skipped:
            warnings.append(f"{len(skipped)} dataset file(s) left out: see skipped")
        return row

    async def _upload(
        self, row: dict[str, Any], request: SubmitRequest, settings: Settings
    ) -> tuple[str | None, list[dict[str, str]]]:
        if request.dataset is None:
            return None, []
        work = settings.data_dir / "uploads"
        packed = await asyncio.to_thread(
            dataset.prepare, Path(request.dataset), work, row["id"], _private(settings)
        )
        skipped = [{"path": s.path, "reason": s.reason} for s in packed.skipped]
        try:
            uploaded = await self.client.upload_file(packed.path, packed.name)
        finally:
            if packed.temporary:
                packed.path.unlink(missing_ok=True)
        url = (uploaded.get("urls") or {}).get("get")
        if not isinstance(url, str):
            raise ReplicateError(201, None, "files: the answer has no urls.get")
        await self.writer.submit(
            lambda conn: rows.update(conn, row["id"], skipped_json=json.dumps(skipped))
        )
        return url, skipped

    async def _record(
        self, row: dict[str, Any], raw: bytes, version: str
    ) -> dict[str, Any]:
        job_id = str(json.loads(raw).get("id"))
        receipt = await apply_snapshot(
            self.writer, self.live.plan, job_id, raw, label=SUBMIT_LABEL
        )
        await self.writer.submit(
            lambda conn: rows.mark_submitted(conn, row, job_id, version)
        )
        log_transition(receipt, f"submitted as {row['id']}")
        return {**row, "state": "submitted", "job_id": job_id, "version": version}

    async def _fail(self, row: dict[str, Any], reason: str) -> None:
        await self.writer.submit(
            lambda conn: rows.update(conn, row["id"], state="failed", error=reason)
        )
        log.warning("submission %s failed: %s", row["id"], reason)

    async def _refused(self, row: dict[str, Any], exc: ReplicateError) -> SubmitRefused:
        if exc.status is None or exc.status >= 500:
            log.warning("submission %s unconfirmed: %s", row["id"], exc)
            return SubmitRefused(
                502,
                "replicate_unconfirmed",
                f"Replicate did not confirm the training ({exc}); the daemon "
                f"looks for it and links it to submission {row['id']}",
            )
        await self._fail(row, str(exc))
        if isinstance(exc, TokenMissing):
            return SubmitRefused(503, "replicate_token_missing", str(exc))
        if isinstance(exc, InvalidToken):
            return SubmitRefused(401, "replicate_invalid_token", str(exc))
        if exc.status == 402:
            return SubmitRefused(402, "replicate_insufficient_credit", str(exc))
        if exc.status == 429:
            return SubmitRefused(503, "replicate_throttled", str(exc))
        return SubmitRefused(422, "replicate_refused", f"Replicate refused: {exc}")

    def _view(
        self, row: dict[str, Any], warnings: list[str], *, replay: bool
    ) -> dict[str, Any]:
        skipped = row.get("skipped")
        if skipped is None:
            skipped = json.loads(row.get("skipped_json") or "[]")
        return {
            "submission_id": row["id"],
            "job_id": row["job_id"],
            "model": row["model"],
            "version": row["version"],
            "destination": row["destination"],
            "hardware": row["hardware"],
            "webhook_url": self.live.current.webhook_url,
            "replayed": replay,
            "warnings": warnings,
            "skipped": skipped,
        }

    async def recover(self) -> None:
        """Settle pending submissions that outlived their request: link the
        training Replicate created, or give up once it is clearly not there."""
        now = time.time()
        before = max(self.started_at, now - self.orphan_after_s)
        found, linked = await self.writer.submit(
            lambda conn: rows.orphans(conn, before)
        )
        found = [row for row in found if row["id"] not in self.in_flight]
        if not found:
            return
        recent = await self.client.recent_trainings()
        recent = [t for t in recent if t.get("id") not in linked]
        for row in found:
            match = _match(row, recent)
            if match is not None:
                recent.remove(match)
                raw = json.dumps(match).encode()
                await self._record(row, raw, str(match.get("version") or ""))
            elif now - row["created_at"] > limits.SUBMIT_ORPHAN_GIVE_UP_S:
                await self._fail(row, "Replicate has no training for it")


def _private(settings: Settings) -> tuple[Path, ...]:
    """The daemon's own folders: never part of a dataset."""
    return (settings.data_dir, settings.outputs_dir)


def _training_body(
    request: SubmitRequest, files_url: str | None, settings: Settings
) -> dict[str, Any]:
    job_input = request.training_input(files_url)
    if request.hub_model_id is not None and settings.hub.token is not None:
        job_input["hf_token"] = settings.hub.token.reveal()  # a secret input
    body: dict[str, Any] = {"destination": request.destination, "input": job_input}
    if settings.webhook_url is not None:
        body["webhook"] = settings.webhook_url
        body["webhook_events_filter"] = list(limits.WEBHOOK_EVENTS)
    return body


def _match(row: dict[str, Any], recent: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The training created for `row`: same trainer model and configuration,
    created after the submission began (less clock skew)."""
    request = json.loads(row["request_json"])
    config = rows.canonical(request["config"])
    since = row["created_at"] - limits.SUBMIT_MATCH_SKEW_S
    for training in recent:
        job_input = training.get("input") or {}
        created = epoch(training.get("created_at")) or 0.0
        if (
            training.get("model") == row["model"]
            and isinstance(job_input, dict)
            and job_input.get("config_json") == config
            and created >= since
        ):
            return training
    return None
