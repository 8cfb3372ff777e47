"""Fixtures: the real app factory on a loopback port, backed by a real SQLite file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from daemon.app import create_app
from daemon.config import load_settings
from daemon.settings import Settings
from tests.helpers import SAFE_ENV, DaemonProcess, new_secret

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def make_settings(tmp_path: Path, secret: str) -> Callable[..., Settings]:
    """Settings as the daemon builds them; keyword arguments are env overrides."""

    def build(
        *, env: dict[str, str] | None = None, toml: str | None = None, **overrides: Any
    ) -> Settings:
        environ = {**SAFE_ENV, "REPLICATE_WEBHOOK_SECRET": secret, **(env or {})}
        config_path = None
        if toml is not None:
            config_path = str(tmp_path / "config.toml")
            Path(config_path).write_text(toml)
        dotted = {"server.data_dir": str(tmp_path / "data")}
        dotted.update(
            {key.replace("__", "."): value for key, value in overrides.items()}
        )
        return load_settings(environ, config_path=config_path, overrides=dotted)

    return build


@pytest.fixture
def daemon_client(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> ClientFactory:
    """Start the production app on 127.0.0.1 and return an HTTP client for it."""

    async def start(
        settings: Settings | None = None, **kwargs: Any
    ) -> TestClient[Any, Any]:
        app = create_app(settings or make_settings(**kwargs))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return start


@pytest.fixture
def daemon_process(
    tmp_path: Path, secret: str
) -> Iterator[Callable[..., DaemonProcess]]:
    """Factory for `replicate-webhookd serve` subprocesses, all stopped at teardown."""
    started: list[DaemonProcess] = []

    def start(**kwargs: Any) -> DaemonProcess:
        kwargs.setdefault("data_dir", tmp_path / "data")
        kwargs.setdefault("secret", secret)
        proc = DaemonProcess(**kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process is not None and proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait(timeout=10)


# The dashboard's browser and daemon (tests/browser.py), registered here.
from tests.browser import browser, dashboard  # noqa: E402, F401

# S3 on loopback (moto); defined beside the other fakes, registered here.
from tests.fakes.s3 import moto_s3, moto_s3_process, s3_environment  # noqa: E402, F401


@pytest.fixture
async def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A local Hugging Face Hub on 127.0.0.1; the real client is pointed at it only."""
    from tests.fakes.hub import serve_fake_hub

    async with serve_fake_hub(tmp_path / "hf_home", monkeypatch) as hub:
        yield hub


@pytest.fixture
def output_server(tmp_path: Path) -> Iterator[Any]:
    """An HTTPS output server on 127.0.0.1 with a throwaway CA (tests.fakes.outputs)."""
    from tests.fakes.outputs import OutputServer

    folder = tmp_path / "output-server"
    folder.mkdir()
    server = OutputServer(folder / "ca.pem").start()
    yield server
    server.stop()


@pytest.fixture
async def fake_replicate(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Replicate API and status page on 127.0.0.1 (tests.fakes.replicate);
    REPLICATE_API_BASE and REPLICATE_STATUS_URL point at it, and `fake.env()`
    gives the settings env for the daemon."""
    from tests.fakes.replicate import serve_fake_replicate

    async with serve_fake_replicate() as fake:
        monkeypatch.setenv("REPLICATE_API_BASE", fake.url)
        monkeypatch.setenv("REPLICATE_STATUS_URL", fake.status_url)
        yield fake
