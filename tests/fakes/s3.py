"""S3 on loopback for tests: moto's real S3 server, and a scripted misbehaving one.

`moto_s3` runs moto in a thread of the test process; `moto_s3_process` runs it as
a separate process, for tests that measure this process's memory. Both isolate
the AWS environment first: test credentials, no profile or shared files, and the
EC2 metadata lookup disabled, so nothing can reach real AWS. `ScriptedS3` is an
aiohttp app that answers S3 requests in one fixed way (an error, or a HEAD that
reports fewer bytes than were sent) and records what it was sent.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

TEST_KEY_ID = "AKIDMOTOENVIRONMENT1"
TEST_SECRET_KEY = "moto-environment-secret-value"
_AWS_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


@pytest.fixture
def s3_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """AWS settings for one test: fake keys, no files, no metadata service."""
    for name in _AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-keys"))


@pytest.fixture
def moto_s3(s3_environment: None) -> Iterator[str]:
    """moto's S3 server in a thread on 127.0.0.1; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps buckets in module state shared by every server in this process.
    _reset(port)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def moto_s3_process(s3_environment: None) -> Iterator[str]:
    """moto's S3 server as a child process on 127.0.0.1; yields its endpoint URL."""
    port = _free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


class ScriptedS3:
    """Answers every S3 request the same way and keeps each request's headers.

    With `status` 200, a PUT succeeds and a HEAD reports `head_length` bytes;
    otherwise every request gets that status with S3's XML error `code`.
    """

    def __init__(self, status: int = 200, code: str = "", head_length: int = 0):
        self.status = status
        self.code = code
        self.head_length = head_length
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests.append((request.method, request.path, dict(request.headers)))
        if self.status != 200:
            # Like S3, name the caller's key id in errors about credentials.
            key_id = request.headers.get("Authorization", "").partition("Credential=")
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{self.code}</Code><Message>scripted</Message>"
                f"<AWSAccessKeyId>{key_id[2].partition('/')[0]}</AWSAccessKeyId>"
                "<RequestId>0</RequestId></Error>"
            )
            return web.Response(
                status=self.status, text=body, content_type="application/xml"
            )
        headers = {"ETag": '"0123456789abcdef0123456789abcdef"'}
        if request.method == "HEAD":
            headers["Content-Length"] = str(self.head_length)
        return web.Response(status=200, headers=headers)


def _reset(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/moto-api/reset")
        connection.getresponse().read()
    finally:
        connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"moto server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"moto server did not listen on 127.0.0.1:{port} in 15 s")
