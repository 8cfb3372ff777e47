"""A Replicate HTTP API on 127.0.0.1, answering with the documented shapes.

Bodies are built from ../shared/reference/payloads/real/ at run time: the account,
a page of model versions, training objects, the default webhook secret and the
problem+json errors. Every call must carry `Authorization: Bearer <token>`.

Tests set jobs (`trainings`, `predictions`), the versions and the page size, read
what arrived (`requests`) and script the next answers of a route (`fail`): a
status, a problem+json body and optionally a Retry-After header.

Submitting: `POST /v1/files` keeps each upload's name, size and sha256 (`files`,
read in chunks); `POST .../versions/{id}/trainings` creates a training in
`starting` (`created` keeps each request body) and remembers its webhook. Then
`advance()` moves a training on the way Replicate would and, unless
`drop_webhooks` is set, POSTs the webhook signed with `webhook_key`, the secret
this API hands out at GET /v1/webhooks/default/secret.

The same server is also Replicate's public status page (Atlassian Statuspage v2,
GET /api/v2/status.json, no token): `status_page` is the body it answers and
`status_http` its HTTP status; `status_url` is its base.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, ClientSession, web

from tests.helpers import payload_json, signed_headers

TOKEN = "r8_fake" + "0123456789abcdefABCDEF0123456789ab"
_REAL = "real/"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    authorization: str | None


@dataclass
class Scripted:
    status: int
    body: dict[str, Any]
    retry_after: str | None = None


def problem(status: int) -> dict[str, Any]:
    """A problem+json body of the documented shape for `status`."""
    if status == 401:
        return payload_json(_REAL + "api_error_401_unauthenticated.json")
    if status == 429:
        return payload_json(_REAL + "docs_error_429_throttled.json")
    if status == 402:
        return {"title": "Insufficient credit", "detail": "fake: no credit left"}
    return {"title": "Server error", "detail": f"fake: status {status}"}


def training(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A training object as GET /v1/trainings/{id} returns it."""
    name = "docs_trainings_get_succeeded.json"
    if status in ("starting", "processing"):
        name = "api_trainings_get_processing_200.json"
    body = payload_json(_REAL + name)
    body.update(id=job_id, status=status, **fields)
    return body


def status_page(indicator: str, description: str | None = None) -> dict[str, Any]:
    """A Statuspage v2 status.json body."""
    descriptions = {
        "none": "All Systems Operational",
        "minor": "Minor Service Outage",
        "major": "Partial System Outage",
        "critical": "Major System Outage",
    }
    return {
        "page": {
            "id": "fake0page0id",
            "name": "Replicate",
            "url": "https://www.replicatestatus.com",
            "updated_at": "2024-01-28T12:00:00.000Z",
        },
        "status": {
            "indicator": indicator,
            "description": description or descriptions.get(indicator, indicator),
        },
    }


@dataclass(frozen=True)
class Upload:
    name: str
    content_type: str
    size: int
    sha256: str
    path: Path  # where the fake kept the bytes


@dataclass
class FakeReplicate:
    token: str = TOKEN
    store: Path = Path()  # a folder for uploaded files, set by serve_fake_replicate
    url: str = ""  # the API base, .../v1
    account: dict[str, Any] = field(
        default_factory=lambda: payload_json(_REAL + "docs_account_get.json")
    )
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page_size: int = 2
    trainings: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhook_key: str = field(default_factory=lambda: "whsec_" + secrets.token_hex(16))
    requests: list[Seen] = field(default_factory=list)
    scripted: dict[str, list[Scripted]] = field(default_factory=dict)
    status_page: Any = field(default_factory=lambda: status_page("none"))
    status_http: int = 200
    files: dict[str, Upload] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    webhooks: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    destinations: set[str] | None = None  # None: every destination exists
    drop_webhooks: bool = False
    lose_create_answer: bool = False  # create the training, then answer 500
    secret_delay_s: float = 0.0  # how long GET /v1/webhooks/default/secret takes
    sent: list[tuple[str, int]] = field(default_factory=list)  # (event, status)

    @property
    def status_url(self) -> str:
        return self.url.removesuffix("/v1")

    def env(self) -> dict[str, str]:
        return {
            "REPLICATE_API_BASE": self.url,
            "REPLICATE_API_TOKEN": self.token,
            "REPLICATE_STATUS_URL": self.status_url,
        }

    def fail(
        self, route: str, status: int, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next `times` calls of `route` (e.g. "account") with `status`."""
        queue = self.scripted.setdefault(route, [])
        queue.extend(
            Scripted(status, problem(status), retry_after) for _ in range(times)
        )

    def add_versions(self, model: str, count: int) -> list[dict[str, Any]]:
        """`count` versions of `model`, newest first, shaped like the docs' page."""
        template = payload_json(_REAL + "docs_models_versions_list.json")["results"][0]
        made = []
        for index in range(count):
            version = copy.deepcopy(template)
            version["id"] = f"{index:064x}"
            version["created_at"] = f"2024-01-{28 - index:02d}T12:00:00.000000Z"
            made.append(version)
        self.versions[model] = made
        return made

    def calls(self, path_suffix: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.path.endswith(path_suffix)]

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/v1/account", self._account, name="account")
        app.router.add_get(
            "/v1/models/{owner}/{name}/versions", self._versions, name="versions"
        )
        for kind in ("trainings", "predictions"):
            app.router.add_get(f"/v1/{kind}/{{id}}", self._job, name=kind)
            app.router.add_post(
                f"/v1/{kind}/{{id}}/cancel", self._cancel, name=f"{kind}_cancel"
            )
        app.router.add_get(
            "/v1/webhooks/default/secret", self._secret, name="webhook_secret"
        )
        app.router.add_get("/api/v2/status.json", self._status, name="status")
        app.router.add_post("/v1/files", self._upload, name="files_create")
        app.router.add_post(
            "/v1/models/{owner}/{name}/versions/{version}/trainings",
            self._create_training,
            name="trainings_create",
        )
        app.router.add_get("/v1/trainings", self._list_trainings, name="trainings_list")
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.requests.append(
            Seen(request.method, request.path, request.query_string, auth)
        )
        if request.path.startswith("/api/v2/"):  # the public status page
            return await handler(request)
        if auth != f"Bearer {self.token}":
            return _problem_response(Scripted(401, problem(401)))
        route = request.match_info.route.name or ""
        queue = self.scripted.get(route)
        if queue:
            return _problem_response(queue.pop(0))
        return await handler(request)

    async def _account(self, request: web.Request) -> web.Response:
        return web.json_response(self.account)

    async def _versions(self, request: web.Request) -> web.Response:
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        if model not in self.versions:
            return _problem_response(Scripted(404, {"detail": "fake: no such model"}))
        start = int(request.query.get("cursor", "0"))
        results = self.versions[model][start : start + self.page_size]
        following = start + self.page_size
        more = following < len(self.versions[model])
        page = {
            "next": f"{self.url}/models/{model}/versions?cursor={following}"
            if more
            else None,
            "previous": None,
            "results": results,
        }
        return web.json_response(page)

    def _jobs_of(self, request: web.Request) -> dict[str, dict[str, Any]]:
        is_training = request.path.startswith("/v1/trainings/")
        return self.trainings if is_training else self.predictions

    async def _job(self, request: web.Request) -> web.Response:
        job = self._jobs_of(request).get(request.match_info["id"])
        if job is None:
            return _problem_response(Scripted(404, {"detail": "fake: not found"}))
        return web.json_response(job)

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self._jobs_of(request).get(request.match_info["id"])
        if job is None:
            return _problem_response(Scripted(404, {"detail": "fake: not found"}))
        if job["status"] in ("starting", "processing"):
            job["status"] = "canceled"
        return web.json_response(job)

    async def _secret(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.secret_delay_s)
        body = payload_json(_REAL + "docs_webhooks_default_secret.json")
        body["key"] = self.webhook_key
        return web.json_response(body)

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(
            status=self.status_http,
            text=json.dumps(self.status_page),
            content_type="application/json",
        )

    async def _upload(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "content":
            return _problem_response(Scripted(400, {"detail": "fake: no content"}))
        file_id = secrets.token_hex(16)
        digest, size = hashlib.sha256(), 0
        kept = self.store / file_id
        with kept.open("wb") as handle:
            while chunk := await part.read_chunk(1 << 16):
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
        name = part.filename or "upload"
        kind = part.headers.get("Content-Type", "application/octet-stream")
        self.files[file_id] = Upload(name, kind, size, digest.hexdigest(), kept)
        body = payload_json(_REAL + "api_files_create_201.json")
        body.update(
            id=file_id,
            name=name,
            content_type=kind,
            size=size,
            checksums={"sha256": digest.hexdigest()},
            urls={"get": f"{self.url}/files/{file_id}"},
        )
        return web.json_response(body, status=201)

    async def _create_training(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.created.append(body)
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        version = request.match_info["version"]
        known = [v["id"] for v in self.versions.get(model, [])]
        if version not in known:
            detail = {"title": "Invalid version or not permitted", "detail": "fake"}
            return _problem_response(Scripted(422, detail))
        if (
            self.destinations is not None
            and body["destination"] not in self.destinations
        ):
            detail = payload_json(_REAL + "api_error_404_invalid_destination.json")
            return _problem_response(Scripted(404, detail))
        job = payload_json(_REAL + "api_trainings_create_201.json")
        job_id = "".join(
            secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(26)
        )
        job.update(
            id=job_id,
            model=model,
            version=version,
            input=body["input"],
            status="starting",
            created_at=_now(),
            urls={
                "get": f"{self.url}/trainings/{job_id}",
                "cancel": f"{self.url}/trainings/{job_id}/cancel",
            },
        )
        self.trainings[job_id] = job
        if body.get("webhook"):
            self.webhooks[job_id] = (
                body["webhook"],
                body.get("webhook_events_filter") or [],
            )
        if self.lose_create_answer:
            return _problem_response(Scripted(500, problem(500)))
        return web.json_response(job, status=201)

    async def _list_trainings(self, request: web.Request) -> web.Response:
        newest = sorted(
            self.trainings.values(), key=lambda t: t["created_at"], reverse=True
        )
        return web.json_response({"next": None, "previous": None, "results": newest})

    async def advance(self, job_id: str, event: str, **fields: Any) -> int | None:
        """Change the training as Replicate would for `event` (start, logs, output,
        completed) and deliver the webhook; the daemon's answer status, or None
        when no webhook went out."""
        job = self.trainings[job_id]
        job.update(fields)
        if event == "start":
            job.setdefault("started_at", _now())
        if event == "completed":
            job.setdefault("completed_at", _now())
        target = self.webhooks.get(job_id)
        if self.drop_webhooks or target is None or event not in target[1]:
            return None
        raw = json.dumps(job).encode()
        headers = signed_headers(self.webhook_key, raw)
        async with (
            ClientSession() as session,
            session.post(target[0], data=raw, headers=headers) as answer,
        ):
            self.sent.append((event, answer.status))
            return answer.status


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _problem_response(answer: Scripted) -> web.Response:
    headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
    return web.Response(
        status=answer.status,
        text=json.dumps({**answer.body, "status": answer.status}),
        content_type="application/problem+json",
        headers=headers,
    )


@asynccontextmanager
async def serve_fake_replicate() -> AsyncIterator[FakeReplicate]:
    folder = tempfile.TemporaryDirectory(prefix="fake-replicate-")
    fake = FakeReplicate(store=Path(folder.name))
    runner = web.AppRunner(fake.build(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        await runner.cleanup()
        folder.cleanup()
