"""A Hugging Face Hub on 127.0.0.1 that the real `huggingface_hub` client can use.

It keeps model repositories in memory and answers what a commit goes through:
whoami, repo create and info, preupload, the LFS batch API with single-PUT uploads
and verify, the ndjson commit, and the four Xet CAS calls of the default upload
path (xorbs and shards are binary, so they are counted, not decoded, and a commit
made through Xet is trusted for its sha256). Every Hub call must carry the bearer
token; a read-only token may read but not write; an LFS PUT must carry none.

Tests read what arrived (`calls`, `repos[id].commits`) and can make the next calls
of an endpoint stall or fail (`fail`). `serve_fake_hub` starts one and points the
client at it: HF_ENDPOINT, a fresh HF_HOME, Xet off, and every proxy variable
aimed at a dead loopback port so that any other host fails instead of being
reached.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from huggingface_hub import close_session, constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory

TOKEN = "hf_fakeWriteToken0123456789abcdef"
READ_TOKEN = "hf_fakeReadToken0123456789abcdef"
USER = "alice"
# Like the Hub: big files, binary ones and the default .gitattributes patterns.
LFS_OVER_BYTES = 10 * 1024 * 1024
LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".gguf", ".tar", ".zip")
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves
LOOPBACK = "127.0.0.1,localhost,::1"
_UNSET = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DEBUG")
_UNSET += ("HF_XET_CACHE", "HF_XET_CLIENT_LEGACY_DIRECT_XORB_UPLOAD")
_UNSET += ("HF_XET_CLIENT_SHARD_API_VERSION",)
_WRITES = {"create", "preupload", "lfs_batch", "lfs_verify", "commit", "xet_token"}
_UNAUTHENTICATED = {"lfs_upload"}  # a presigned storage URL
_CAS = {"xet_chunk", "xet_xorb", "xet_shard"}  # the short-lived Xet token instead

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class StoredFile:
    path: str
    data: bytes | None  # None when it came through Xet
    sha256: str
    size: int
    lfs: bool


@dataclass(frozen=True)
class Commit:
    oid: str
    message: str
    description: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_id: str
    private: bool
    initial_oid: str = field(default_factory=lambda: secrets.token_hex(20))
    commits: list[Commit] = field(default_factory=list)  # those made through the API
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def sha(self) -> str:
        return self.commits[-1].oid if self.commits else self.initial_oid


@dataclass
class Fault:
    status: int | None  # None: only stall, then answer normally
    times: int
    retry_after: str | None
    delay_s: float
    message: str


class FakeHub:
    def __init__(self, token: str = TOKEN, read_token: str = READ_TOKEN) -> None:
        self.token, self.read_token = token, read_token
        self.url = ""
        self.repos: dict[str, Repo] = {}
        self.calls: list[tuple[str, str | None]] = []  # (endpoint, repo), as they came
        self.lfs: dict[str, bytes] = {}
        self.xorb_bytes = 0
        self.shards = 0
        self._xet_token = secrets.token_hex(16)
        self._faults: dict[str, list[Fault]] = {}
        self._runner: web.AppRunner | None = None

    def fail(
        self,
        endpoint: str,
        status: int | None = None,
        *,
        times: int = 1,
        retry_after: str | None = None,
        delay_s: float = 0.0,
        message: str = "injected failure",
    ) -> None:
        """Make the next `times` calls of `endpoint` wait `delay_s`, then fail.

        With no `status` the call only stalls, then is answered as usual; its body
        is read first, so a stalled commit still lands after the client gave up.
        """
        fault = Fault(status, times, retry_after, delay_s, message)
        self._faults.setdefault(endpoint, []).append(fault)

    def add_repo(self, repo_id: str, *, private: bool = True) -> Repo:
        self.repos[repo_id] = Repo(repo_id, private)
        return self.repos[repo_id]

    def calls_to(self, repo_id: str) -> list[str]:
        return [name for name, repo in self.calls if repo == repo_id]

    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate], client_max_size=1 << 30)
        self._routes(app.router)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _routes(self, router: web.UrlDispatcher) -> None:
        repo, cas = "/api/models/{ns}/{name}", "/cas/v1"
        git = "/{ns}/{name}.git/info/lfs/objects"
        router.add_get("/api/whoami-v2", self._whoami, name="whoami")
        router.add_post("/api/repos/create", self._create, name="create")
        router.add_get(repo, self._info, name="info")
        router.add_get(repo + "/revision/{rev}", self._info, name="info_revision")
        router.add_post(repo + "/preupload/{rev}", self._preupload, name="preupload")
        router.add_post(git + "/batch", self._lfs_batch, name="lfs_batch")
        router.add_put("/_lfs/{oid}", self._lfs_upload, name="lfs_upload")
        router.add_post(git + "/verify", self._lfs_verify, name="lfs_verify")
        router.add_post(repo + "/commit/{rev}", self._commit, name="commit")
        token = repo + "/xet-write-token/{rev}"
        router.add_get(token, self._xet_token_info, name="xet_token")
        router.add_get(
            cas + "/chunks/default/{hash}", self._xet_chunk, name="xet_chunk"
        )
        router.add_post(cas + "/xorbs/default/{hash}", self._xet_xorb, name="xet_xorb")
        router.add_post(cas + "/shards", self._xet_shard, name="xet_shard")

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name or f"{request.method} {request.path}"
        info = request.match_info
        repo_id = f"{info['ns']}/{info['name']}" if "ns" in info else None
        if name == "create":
            body = await request.json()
            repo_id = f"{body.get('organization') or USER}/{body.get('name')}"
        self.calls.append((name, repo_id))
        failed = await self._injected(name, request)
        refused = failed or self._refusal(name, request.headers.get("Authorization"))
        return refused or await handler(request)

    async def _injected(self, name: str, request: web.Request) -> web.Response | None:
        faults = self._faults.get(name)
        if not faults:
            return None
        fault = faults[0]
        fault.times -= 1
        if fault.times <= 0:
            faults.pop(0)
        await request.read()  # as a real server would have, before it stalls
        await asyncio.sleep(fault.delay_s)
        if fault.status is None:
            return None
        return _error(fault.status, fault.message, retry_after=fault.retry_after)

    def _refusal(self, name: str, authorization: str | None) -> web.Response | None:
        if name in _UNAUTHENTICATED:
            if authorization is not None:
                return _error(400, "storage URLs take no Authorization header")
            return None
        expected = self._xet_token if name in _CAS else None
        if expected is not None:
            ok = authorization == f"Bearer {expected}"
            return None if ok else _error(401, "bad Xet token")
        if authorization not in (f"Bearer {self.token}", f"Bearer {self.read_token}"):
            return _error(401, "Invalid credentials in Authorization header")
        if name in _WRITES and authorization != f"Bearer {self.token}":
            return _error(403, "You don't have the rights to write here")
        return None

    def _repo(self, request: web.Request) -> Repo:
        repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
        if repo_id not in self.repos:
            message = "Repository not found"
            raise web.HTTPNotFound(
                text=json.dumps({"error": message}),
                content_type="application/json",
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": message},
            )
        return self.repos[repo_id]

    async def _whoami(self, request: web.Request) -> web.Response:
        return web.json_response({"type": "user", "name": USER, "orgs": []})

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("type") not in (None, "model"):
            return _error(400, "only model repositories here")
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            return _error(409, "You already created this model repo", url=url)
        self.add_repo(repo_id, private=body.get("visibility") == "private")
        return web.json_response({"url": url, "name": repo_id})

    async def _info(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        siblings = [{"rfilename": path} for path in repo.files]
        return web.json_response(
            {"id": repo.repo_id, "sha": repo.sha, "private": repo.private}
            | {"siblings": siblings}
        )

    async def _preupload(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        answers = []
        for item in (await request.json())["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["size"] > LFS_OVER_BYTES or b"\0" in sample
            lfs = lfs or item["path"].endswith(LFS_SUFFIXES)
            answers.append(
                {"path": item["path"], "uploadMode": "lfs" if lfs else "regular"}
                | {
                    "shouldIgnore": False,
                    "oid": _oid(repo.files.get(item["path"]), lfs),
                }
            )
        return web.json_response({"files": answers})

    async def _lfs_batch(self, request: web.Request) -> web.Response:
        self._repo(request)
        body = await request.json()
        if body.get("operation") != "upload":
            return _error(400, "only uploads here")
        verify = f"{self.url}{request.path.rsplit('/', 1)[0]}/verify"
        objects = []
        for item in body["objects"]:
            oid, size = item["oid"], item["size"]
            entry: dict[str, Any] = {"oid": oid, "size": size}
            if oid not in self.lfs or len(self.lfs[oid]) != size:
                upload = {"href": f"{self.url}/_lfs/{oid}"}
                entry["actions"] = {"upload": upload, "verify": {"href": verify}}
            objects.append(entry)
        return web.json_response(
            {"transfer": "basic", "objects": objects},
            content_type="application/vnd.git-lfs+json",
        )

    async def _lfs_upload(self, request: web.Request) -> web.Response:
        oid, data = request.match_info["oid"], await request.read()
        if hashlib.sha256(data).hexdigest() != oid:
            return _error(400, "body does not match its sha256")
        self.lfs[oid] = data
        return web.Response()

    async def _lfs_verify(self, request: web.Request) -> web.Response:
        self._repo(request)
        body = await request.json()
        if len(self.lfs.get(body["oid"], b"")) != body["size"]:
            return _error(404, "object not uploaded")
        return web.json_response({})

    async def _commit(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        lines = (await request.read()).decode().splitlines()
        items = [json.loads(line) for line in lines if line.strip()]
        header = items[0]["value"]
        if header.get("parentCommit") not in (None, repo.sha):
            return _error(412, "A commit has happened since the parent commit")
        files = {}
        for item in items[1:]:
            stored = self._stored(item["key"], item["value"])
            if stored is None:
                return _error(422, f"cannot commit {item['key']} {item['value']}")
            files[stored.path] = stored
        oid = secrets.token_hex(20)
        commit = Commit(oid, header["summary"], header["description"], files)
        repo.commits.append(commit)
        repo.files.update(files)
        url = f"{self.url}/{repo.repo_id}/commit/{commit.oid}"
        return web.json_response({"commitUrl": url, "commitOid": commit.oid})

    def _stored(self, key: str, value: dict[str, Any]) -> StoredFile | None:
        path = value["path"]
        if key == "file" and value.get("encoding") == "base64":
            data = base64.b64decode(value["content"])
            digest = hashlib.sha256(data).hexdigest()
            return StoredFile(path, data, digest, len(data), lfs=False)
        if key != "lfsFile" or value.get("algo") != "sha256":
            return None
        oid, size = value["oid"], value["size"]
        data = self.lfs.get(oid)
        if data is None and self.shards == 0:
            return None  # an LFS pointer to bytes that never arrived
        if data is not None and len(data) != size:
            return None
        return StoredFile(path, data, oid, size, lfs=True)

    async def _xet_token_info(self, request: web.Request) -> web.Response:
        self._repo(request)
        return web.json_response(
            {"accessToken": self._xet_token, "casUrl": f"{self.url}/cas"}
            | {"exp": int(time.time()) + 3600}
        )

    async def _xet_chunk(self, request: web.Request) -> web.Response:
        return _error(404, "no global dedup here")

    async def _xet_xorb(self, request: web.Request) -> web.Response:
        self.xorb_bytes += len(await request.read())
        return web.json_response({"was_inserted": True})

    async def _xet_shard(self, request: web.Request) -> web.Response:
        await request.read()
        self.shards += 1
        return web.json_response({"result": 1})


def _oid(stored: StoredFile | None, lfs: bool) -> str | None:
    """What the client compares with its own to skip unchanged files."""
    if stored is None or stored.lfs != lfs:
        return None
    if lfs:
        return stored.sha256
    data = stored.data or b""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324


def _error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    retry_after: str | None = None,
    **extra: Any,
) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"error": message, **extra}
    return web.json_response(body, status=status, headers=headers)


@asynccontextmanager
async def serve_fake_hub(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeHub]:
    """Start a fake Hub and point the real client at it, and at nothing else."""
    hub = FakeHub()
    await hub.start()
    try:
        _point_client_at(hub.url, home, monkeypatch)
        yield hub
    finally:
        set_client_factory(default_client_factory)
        close_session()
        await hub.close()


def enable_xet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the default Xet upload path, with the two switches the fake's CAS needs."""
    monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    monkeypatch.setenv("HF_XET_CLIENT_LEGACY_DIRECT_XORB_UPLOAD", "1")
    monkeypatch.setenv("HF_XET_CLIENT_SHARD_API_VERSION", "1")


def _point_client_at(url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    env = {"HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1"}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env |= {proxy: DEAD_PROXY, proxy.lower(): DEAD_PROXY}
    env |= {"NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The client copied these from the environment when it was first imported.
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "harnesses.json"))
    close_session()  # the next session reads the proxy variables above
