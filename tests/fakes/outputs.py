"""An HTTPS output server on loopback that stands in for replicate.delivery.

It runs its own event loop in a thread, so async tests (the app in-process) and
sync tests (the daemon as a process) use it alike. A throwaway CA signs a server
certificate for "localhost" and 127.0.0.1; the CA's PEM file is what the daemon is
told to trust (delivery.ca_file). Every registered file has a URL like
https://localhost:PORT/xezq/<token>/trained_model.tar and a Script that says how
the next requests for it go wrong: failures with a status and Retry-After, a
connection cut after K bytes, a Content-Length that promises more than is sent,
Range ignored, a redirect, a slow stream, or a stall until the test releases it.
Every request is recorded with its path and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_RANGE_PREFIX = "bytes="


@dataclass
class Script:
    """How requests for one file are answered; the deques are used up in order."""

    data: bytes
    honour_range: bool = True
    misplaced_ranges: int = 0  # answer the next N ranges with 206 from byte 0
    failures: deque[tuple[int, str | None]] = field(default_factory=deque)
    cuts: deque[int] = field(default_factory=deque)  # close after K body bytes
    overstated: deque[int] = field(default_factory=deque)  # Content-Length + N
    stalls: deque[int] = field(default_factory=deque)  # stop after K until released
    gone: int | None = None  # 404 or 410 on every request
    redirect: str | None = None  # Location for a 302
    chunked: bool = False  # no Content-Length at all
    chunk_bytes: int = 64 * 1024
    delay_s: float = 0.0  # pause between chunks


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    token: str | None

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")


@dataclass
class OutputServer:
    ca_file: Path
    port: int = 0
    _scripts: dict[str, Script] = field(default_factory=dict)
    _seen: list[Seen] = field(default_factory=list)
    _sent: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _released: asyncio.Event | None = None
    _stopping: bool = False

    @property
    def host(self) -> str:
        """The entry for delivery.allowed_hosts."""
        return f"localhost:{self.port}"

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that makes the daemon trust and allow this server only."""
        return {
            "REPLICATE_WEBHOOKD_OUTPUT_HOSTS": self.host,
            "REPLICATE_WEBHOOKD_OUTPUTS_CA_FILE": str(self.ca_file),
        }

    # -- files and scripts -------------------------------------------------------

    def add(self, data: bytes, name: str = "trained_model.tar") -> str:
        """Serve `data`; `name` is put in the URL path as given (already encoded)."""
        token = secrets.token_hex(12)
        with self._lock:
            self._scripts[token] = Script(data)
        return f"{self.base}/xezq/{token}/{name}"

    def add_with_query_token(self, data: bytes, path: str) -> str:
        """Serve `data` at an arbitrary path; the file is found by ?t=<token>."""
        token = secrets.token_hex(12)
        with self._lock:
            self._scripts[token] = Script(data)
        return f"{self.base}{path}?t={token}"

    def script(self, url: str) -> Script:
        """The script of a URL made by add(); change it under `edit()`."""
        return self._scripts[_token_of_url(url)]

    @contextlib.contextmanager
    def edit(self, url: str) -> Iterator[Script]:
        with self._lock:
            yield self._scripts[_token_of_url(url)]

    def fail(
        self, url: str, times: int, status: int, retry_after: str | None = None
    ) -> None:
        with self.edit(url) as script:
            script.failures.extend([(status, retry_after)] * times)

    def release(self) -> None:
        """Let every response stalled so far go on; later stalls wait again."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._release_now)

    def _release_now(self) -> None:
        if self._released is not None:
            self._released.set()
        if not self._stopping:
            self._released = asyncio.Event()

    # -- what happened -----------------------------------------------------------

    def requests(self, url: str | None = None) -> list[Seen]:
        token = _token_of_url(url) if url is not None else None
        with self._lock:
            return [s for s in self._seen if token is None or s.token == token]

    def sent(self, url: str) -> int:
        """Body bytes written so far for `url`, over all requests."""
        with self._lock:
            return self._sent.get(_token_of_url(url), 0)

    # -- serving -----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = _token_of_request(request.raw_path, self._scripts)
        headers = dict(request.headers)
        with self._lock:
            self._seen.append(Seen(request.raw_path, headers, time.monotonic(), token))
            script = self._scripts.get(token) if token else None
            if script is None:
                return web.Response(status=404, text="no such file")
            plan = _Plan.take(script)
        if plan.failure is not None:
            status, retry_after = plan.failure
            extra = {"Retry-After": retry_after} if retry_after else {}
            return web.Response(status=status, text="scripted failure", headers=extra)
        if plan.gone is not None:
            return web.Response(status=plan.gone, text="gone")
        if plan.redirect is not None:
            return web.Response(status=302, headers={"Location": plan.redirect})
        return await self._send(request, token or "", script, plan)

    async def _send(
        self, request: web.Request, token: str, script: Script, plan: _Plan
    ) -> web.StreamResponse:
        data, start = script.data, 0
        response = web.StreamResponse(status=200)
        wanted = request.headers.get("Range", "")
        if plan.honour_range and wanted.startswith(_RANGE_PREFIX):
            first = wanted[len(_RANGE_PREFIX) :].split("-", 1)[0]
            with self._lock:
                misplaced = _use_one(script)
            start = 0 if misplaced else int(first)
            if start >= len(data):
                return web.Response(
                    status=416, headers={"Content-Range": f"bytes */{len(data)}"}
                )
            response.set_status(206)
            response.headers["Content-Range"] = (
                f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        body = data[start:]
        if not script.chunked:
            response.content_length = len(body) + plan.overstated
        response.content_type = "application/x-tar"
        response.headers["Accept-Ranges"] = "bytes" if plan.honour_range else "none"
        await response.prepare(request)
        limit = len(body) if plan.cut is None else min(plan.cut, len(body))
        sent = 0
        try:
            while sent < limit:
                if plan.stall is not None and sent >= plan.stall:
                    assert self._released is not None
                    await self._released.wait()
                    plan.stall = None
                step = min(script.chunk_bytes, limit - sent)
                if plan.stall is not None:
                    step = min(step, plan.stall - sent)
                await response.write(body[sent : sent + step])
                sent += step
                with self._lock:
                    self._sent[token] = self._sent.get(token, 0) + step
                if script.delay_s:
                    await asyncio.sleep(script.delay_s)
        except (ConnectionError, RuntimeError):
            _abort(request)  # the client went away (or was killed)
            return response
        if plan.cut is not None or plan.overstated:
            _abort(request)  # fewer bytes than announced: end the connection
            return response
        await response.write_eof()
        return response

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> OutputServer:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout=20) or failure:
            raise AssertionError(f"output server did not start: {failure}")
        return self

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            runner = loop.run_until_complete(self._open())
        except BaseException as exc:  # reported to start()
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(_close(runner))
            loop.close()

    async def _open(self) -> web.AppRunner:
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", 0, ssl_context=_server_context(self.ca_file)
        )
        await site.start()
        self.port = runner.addresses[0][1]
        return runner

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._stopping = True
        self.release()
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=20)


@dataclass
class _Plan:
    """What the current request does, taken from the script under the lock."""

    failure: tuple[int, str | None] | None
    gone: int | None
    redirect: str | None
    honour_range: bool
    cut: int | None
    overstated: int
    stall: int | None

    @classmethod
    def take(cls, script: Script) -> _Plan:
        return cls(
            failure=script.failures.popleft() if script.failures else None,
            gone=script.gone,
            redirect=script.redirect,
            honour_range=script.honour_range,
            cut=script.cuts.popleft() if script.cuts else None,
            overstated=script.overstated.popleft() if script.overstated else 0,
            stall=script.stalls.popleft() if script.stalls else None,
        )


def _use_one(script: Script) -> bool:
    if script.misplaced_ranges <= 0:
        return False
    script.misplaced_ranges -= 1
    return True


async def _close(runner: web.AppRunner) -> None:
    """Drop open connections at once: the client may not be there to say goodbye."""
    if runner.server is not None:
        for handler in list(runner.server.connections):
            if handler.transport is not None:
                handler.transport.abort()
    await runner.cleanup()
    await asyncio.sleep(0.05)  # let the aborted sockets be closed


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _token_of_url(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query).get("t")
    if query:
        return query[0]
    return parts.path.split("/")[2]


def _token_of_request(raw_path: str, scripts: dict[str, Script]) -> str | None:
    path, _, query = raw_path.partition("?")
    found = parse_qs(query).get("t")
    if found and found[0] in scripts:
        return found[0]
    for segment in path.split("/"):
        if segment in scripts:
            return segment
    return None


# -- certificates ----------------------------------------------------------------


def _server_context(ca_file: Path) -> ssl.SSLContext:
    """Make a CA (written to `ca_file`) and a localhost certificate it signs."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhookd test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    folder = ca_file.parent
    cert_file, key_file = folder / "output-server.pem", folder / "output-server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
