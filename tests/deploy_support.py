"""Helpers for the deploy/ tests: tools, certificates, config rewrites, clients.

The shipped files in deploy/ are copied to a temporary folder with only ports,
upstreams, paths, certificate files and the source ranges rewritten; every rewrite
must find its text, so a changed shipped file fails the test instead of being
tested half-rewritten.
"""

from __future__ import annotations

import datetime
import http.client
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import REPO

DEPLOY = REPO / "deploy"
HOSTNAME = "webhooks.example.com"  # the placeholder host name in every config

# The test stands in for the real ranges with two loopback clients: 127.0.0.2 is
# the webhook sender (Replicate's ranges) and 127.0.0.1 the private network. The
# proxy reaches the daemon from 127.0.0.1, the daemon's trusted proxy, so the
# webhook sender must be another address for the forwarded header to matter.
SENDER = "127.0.0.2"
PRIVATE = "127.0.0.1"


def tool(name: str, hint: str) -> str:
    """The path of a program from the venv or PATH; a clear failure when absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise AssertionError(f"{name} is not installed: {hint}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rewrite(text: str, replacements: Sequence[tuple[str, str]]) -> str:
    for old, new in replacements:
        assert old in text, f"the shipped config no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def readme_toml(heading: str) -> str:
    """The first TOML block after `heading` in deploy/README.md: the settings a
    user copies, so the tests run the daemon with exactly those."""
    text = (DEPLOY / "README.md").read_text()
    assert heading in text, f"deploy/README.md has no {heading!r}"
    after = text[text.index(heading) :]
    start = after.index("```toml\n") + len("```toml\n")
    return after[start : after.index("```", start)]


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOSTNAME; the test trusts it as its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Response:
    status: int
    text: str


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with HOSTNAME as SNI and Host, from a chosen source."""

    def connect(self) -> None:
        raw = socket.create_connection(
            ("127.0.0.1", self.port), self.timeout, self.source_address
        )
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(raw, server_hostname=self.host)


def https(
    port: int,
    method: str,
    path: str,
    *,
    source: str,
    cafile: Path,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Response:
    context = ssl.create_default_context(cafile=str(cafile))
    connection = _PinnedHTTPS(
        HOSTNAME, port, timeout=10, source_address=(source, 0), context=context
    )
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        answer = connection.getresponse()
        return Response(answer.status, answer.read().decode(errors="replace"))
    finally:
        connection.close()


@dataclass
class Server:
    """A proxy as a real process, stopped by its PID."""

    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env or None,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = 20) -> None:
        """Poll `ready()` until it is true; fail with the log if the process died."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log_text()}")
            try:
                if ready():
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready ({last}):\n{self.log_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
