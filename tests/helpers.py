"""Shared test helpers: signing, reference material, and the daemon as a process."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.receive.signature import decode_secret, sign

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "reference"
WEBHOOK_PATH = "/api/webhooks/replicate"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def reference(relative: str) -> Path:
    """A file from ../shared/reference; fails (never skips) when it is absent."""
    path = SHARED / relative
    if not path.exists():
        raise AssertionError(
            f"reference material missing: {path} (the tests need ../shared/ beside "
            "the checkout, as CI provides it)"
        )
    return path


def payload(name: str) -> bytes:
    return reference(f"payloads/{name}").read_bytes()


def payload_json(name: str) -> dict[str, Any]:
    return json.loads(payload(name))


def signature_vectors() -> list[dict[str, Any]]:
    return json.loads(reference("vectors/signature_vectors.json").read_text())


_counter = iter(range(1, 1 << 62))


def signed_headers(
    secret: str,
    body: bytes,
    *,
    msg_id: str | None = None,
    timestamp: int | str | None = None,
) -> dict[str, str]:
    msg_id = msg_id or f"msg_test{next(_counter):06d}_{os.urandom(4).hex()}"
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": sign(decode_secret(secret), msg_id, stamp, body),
    }


# Tests never fetch from the real output host: outputs are allowed from loopback
# test servers only, so a replicate.delivery URL in a payload ends blocked_host.
SAFE_ENV = {"REPLICATE_WEBHOOKD_OUTPUT_HOSTS": "localhost"}


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
    env.update(SAFE_ENV)
    env.update(extra)
    return env


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point (`python -m daemon`) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        env=env if env is not None else cli_env(),
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_LISTENING = re.compile(r"listening on http://([^:\s]+|\[[^\]]+\]):(\d+)")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class DaemonProcess:
    """`replicate-webhookd serve` as a real process on a loopback port."""

    data_dir: Path
    secret: str
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    # What follows the interpreter: `-c CODE` can set up the process before it
    # calls daemon.cli.main(sys.argv[1:]).
    launcher: list[str] = field(default_factory=lambda: ["-m", "daemon"])
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> DaemonProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"daemon-{time.time_ns()}.log"
        env = cli_env(REPLICATE_WEBHOOK_SECRET=self.secret, **self.extra_env)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *self.launcher,
                    "serve",
                    "--port",
                    "0",
                    "--data-dir",
                    str(self.data_dir),
                    *self.extra_args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_text())
            if match:
                self.port = int(match[2])
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"daemon did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One HTTP request to the daemon; any status comes back, none raises."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Answer(response.status, response.read())
        finally:
            conn.close()

    def stop(self, sig: int = 15, timeout_s: float = 20) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout_s)


async def eventually(check: Any, what: str, tries: int = 300) -> Any:
    """Await `check()` every 50 ms until it gives something true; fail after
    `tries` attempts, naming `what`."""
    for _ in range(tries):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
