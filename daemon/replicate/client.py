"""A small client for Replicate's HTTP API over one aiohttp session.

The token comes from REPLICATE_API_TOKEN only and leaves the process only in the
Authorization header, and only towards the configured API base: absolute URLs
from a response (`next`, `urls.get`) are followed only when they point there.

Errors (all ReplicateError, whose message is the one line to show):
    TokenMissing          no token configured; nothing was sent
    InvalidToken          401: "Invalid token" and the hints that apply
    ReplicateError(402)   insufficient credit; remembered in `last_insufficient_credit`
    ReplicateError(4xx)   permanent: the problem+json `detail`, never retried
    ReplicateError(429)   throttled: retried for every method, honouring Retry-After
    ReplicateError(5xx)   retried for GET only, since a POST may have taken effect
    ReplicateError(None)  transport failure or timeout: retried for GET only
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from daemon import __version__, limits
from daemon.replicate.errors import (
    CreditNotice,
    InvalidToken,
    ReplicateError,
    TokenMissing,
    token_hints,
)
from daemon.sensitive import Secret
from daemon.settings import ReplicateSettings

log = logging.getLogger(__name__)

# A request body, built anew for each attempt: aiohttp keyword arguments.
Payload = Callable[[], dict[str, Any]]

_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ReplicateClient:
    def __init__(
        self,
        settings: ReplicateSettings,
        *,
        max_attempts: int = limits.REPLICATE_MAX_ATTEMPTS,
        backoff_base_s: float = limits.REPLICATE_BACKOFF_BASE_S,
    ) -> None:
        self.base = settings.api_base
        self.trainer_model = settings.trainer_model
        self._token = settings.token
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._session: aiohttp.ClientSession | None = None
        self.last_insufficient_credit: CreditNotice | None = None

    def __repr__(self) -> str:
        return f"ReplicateClient({self.base!r}, token={self._token!r})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def account(self) -> dict[str, Any]:
        return _object(await self._get_json("/account"))

    async def model_versions(self, model: str) -> list[dict[str, Any]]:
        """Every version of `model`, newest first, across all pages."""
        if not _MODEL.match(model):
            raise ValueError(f"not an owner/name model: {model!r}")
        url: str | None = f"{self.base}/models/{model}/versions"
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        while url is not None and len(seen) < limits.REPLICATE_MAX_PAGES:
            seen.add(url)
            page = _object(await self._get_json(url))
            results.extend(r for r in page.get("results") or [] if isinstance(r, dict))
            following = page.get("next")
            url = following if isinstance(following, str) and following else None
            if url in seen:
                raise ReplicateError(None, None, "versions: `next` repeats a page")
        results.sort(key=lambda r: str(r.get("created_at") or ""), reverse=True)
        return results

    async def get_training(self, job_id: str) -> dict[str, Any]:
        return _object(await self._get_json(f"/trainings/{_checked(job_id)}"))

    async def get_prediction(self, job_id: str) -> dict[str, Any]:
        return _object(await self._get_json(f"/predictions/{_checked(job_id)}"))

    async def cancel(self, job_id: str, kind: str = "trainings") -> dict[str, Any]:
        if kind not in ("trainings", "predictions"):
            raise ValueError(f"kind must be trainings or predictions, got {kind!r}")
        path = f"/{kind}/{_checked(job_id)}/cancel"
        return _object(_decode(await self._request("POST", path)))

    async def cancel_job(self, job_id: str) -> bytes:
        """Cancel a training, or the prediction when no training has the id; the
        raw JSON of the answer, as a webhook would carry it."""
        job_id = _checked(job_id)
        try:
            return await self._request("POST", f"/trainings/{job_id}/cancel")
        except ReplicateError as exc:
            if exc.status != 404:
                raise
        return await self._request("POST", f"/predictions/{job_id}/cancel")

    async def default_webhook_secret(self) -> Secret:
        body = _object(await self._get_json("/webhooks/default/secret"))
        key = body.get("key")
        if not isinstance(key, str) or not key:
            raise ReplicateError(200, None, "webhook secret: answer has no `key`")
        return Secret(key)

    async def job_snapshot(self, job_id: str, get_url: str | None = None) -> bytes:
        """The raw JSON of a training or prediction, as a webhook would carry it."""
        job_id = _checked(job_id)
        for kind in ("trainings", "predictions"):
            if get_url == f"{self.base}/{kind}/{job_id}":
                return await self._request("GET", get_url)
        try:
            return await self._request("GET", f"/trainings/{job_id}")
        except ReplicateError as exc:
            if exc.status != 404:
                raise
        return await self._request("GET", f"/predictions/{job_id}")

    async def latest_version(self, model: str) -> str:
        """The id of the model's newest version."""
        found = await self.model_versions(model)
        if not found or not isinstance(found[0].get("id"), str):
            raise ReplicateError(None, None, f"{model} has no versions")
        return str(found[0]["id"])

    async def upload_file(self, path: Path, name: str) -> dict[str, Any]:
        """POST /files: the file streamed from disk as the `content` part; a 429
        sends it again from the start."""

        def form() -> dict[str, Any]:
            data = aiohttp.FormData()
            handle = path.open("rb")  # aiohttp reads it in chunks, then closes it
            data.add_field(
                "content", handle, filename=name, content_type=_content_type(name)
            )
            return {"data": data}

        return _object(_decode(await self._request("POST", "/files", form)))

    async def create_training(
        self, model: str, version: str, body: dict[str, Any]
    ) -> bytes:
        """POST a training of `model` at `version`; the raw JSON answer."""
        if not _MODEL.match(model):
            raise ValueError(f"not an owner/name model: {model!r}")
        path = f"/models/{model}/versions/{_checked(version)}/trainings"
        return await self._request("POST", path, lambda: {"json": body})

    async def recent_trainings(self) -> list[dict[str, Any]]:
        """The newest page of the account's trainings."""
        page = _object(await self._get_json("/trainings"))
        return [r for r in page.get("results") or [] if isinstance(r, dict)]

    async def _get_json(self, path: str) -> Any:
        return _decode(await self._request("GET", path))

    async def _request(
        self, method: str, path: str, payload: Payload | None = None
    ) -> bytes:
        url = self._url(path)
        for attempt in range(1, self._max_attempts + 1):
            try:
                return await self._send(method, url, payload)
            except ReplicateError as exc:
                retry = exc.status == 429 or (
                    method == "GET" and (exc.status is None or exc.status >= 500)
                )
                if isinstance(exc, TokenMissing | InvalidToken) or not retry:
                    raise
                if attempt == self._max_attempts:
                    raise
                delay = self._delay(attempt, exc.retry_after_s)
                log.warning(
                    "replicate %s %s: %s; retry %d of %d in %.1f s",
                    method,
                    urlsplit(url).path,
                    exc.status or exc,
                    attempt,
                    self._max_attempts - 1,
                    delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - loop always returns

    async def _send(self, method: str, url: str, payload: Payload | None) -> bytes:
        if self._token is None:
            raise TokenMissing()
        headers = {"Authorization": f"Bearer {self._token.reveal().strip()}"}
        extra = payload() if payload is not None else {}
        try:
            async with self._client().request(
                method, url, headers=headers, **extra
            ) as answer:
                body = await _read(answer)
                if answer.status < 300:
                    log.debug("replicate %s %s: %d", method, urlsplit(url).path, 200)
                    return body
                raise self._error(answer, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
            raise ReplicateError(
                None, None, f"Replicate unreachable ({reason})"
            ) from None

    def _error(self, answer: aiohttp.ClientResponse, body: bytes) -> ReplicateError:
        problem = _problem(body)
        title, detail = problem.get("title"), problem.get("detail")
        if answer.status == 401:
            assert self._token is not None
            return InvalidToken(detail, token_hints(self._token.reveal()))
        if answer.status == 402:
            self.last_insufficient_credit = CreditNotice(
                time.time(), detail or title or "insufficient credit"
            )
        retry_after_s = _retry_after(answer.headers.get("Retry-After"))
        return ReplicateError(answer.status, title, detail, retry_after_s=retry_after_s)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, limits.REPLICATE_BACKOFF_MAX_S)
        delay: float = self._backoff_base_s * 2.0 ** (attempt - 1)
        jitter = random.uniform(0.9, 1.1)
        return min(delay, limits.REPLICATE_BACKOFF_MAX_S) * jitter

    def _url(self, path: str) -> str:
        if path.startswith("/"):
            return self.base + path
        if not path.startswith(self.base + "/"):
            # The token must not follow a link to another host.
            raise ReplicateError(None, None, "refusing a URL outside the API base")
        return path

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    sock_connect=limits.REPLICATE_CONNECT_TIMEOUT_S,
                    sock_read=limits.REPLICATE_READ_TIMEOUT_S,
                ),
                trust_env=True,  # HTTPS_PROXY / NO_PROXY
                headers={"User-Agent": f"replicate-webhookd/{__version__}"},
            )
        return self._session


async def read_up_to(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The stream's bytes until its end or `limit` bytes, whichever comes first
    (one read() gives only what has arrived so far)."""
    found = bytearray()
    while len(found) < limit:
        chunk = await stream.read(limit - len(found))
        if not chunk:
            break
        found += chunk
    return bytes(found)


async def _read(answer: aiohttp.ClientResponse) -> bytes:
    cap = (
        limits.REPLICATE_MAX_RESPONSE_BYTES
        if answer.status < 300
        else limits.REPLICATE_ERROR_BODY_BYTES
    )
    body = await read_up_to(answer.content, cap + 1)
    if len(body) > cap and answer.status < 300:
        raise ReplicateError(answer.status, None, "answer larger than the cap")
    return body[:cap]


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ReplicateError(200, None, "Replicate answered with no JSON") from None


def _problem(body: bytes) -> dict[str, str]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        key: text[:500]
        for key, text in value.items()
        if key in ("title", "detail") and isinstance(text, str) and text
    }


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = parsedate_to_datetime(value)
        return max(0.0, float(moment.timestamp()) - time.time())
    except (TypeError, ValueError):
        return None


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplicateError(200, None, "Replicate answered with no JSON object")
    return value


def _checked(job_id: str) -> str:
    if not _ID.match(job_id):
        raise ValueError(f"not a Replicate id: {job_id!r}")
    return job_id


def _content_type(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".zip"):
        return "application/zip"
    if lowered.endswith((".tar.gz", ".tgz")):
        return "application/gzip"
    if lowered.endswith(".tar"):
        return "application/x-tar"
    return "application/octet-stream"
