"""Debian's Chromium driven by Playwright, and the fixtures of the dashboard tests.

No browser is downloaded: Playwright launches /usr/bin/chromium (installed by
scripts/install-test-deps) with a fresh profile and the flags that work on these
machines (../shared/components.md, section 7). A missing Chromium fails the test
with the command that installs it. Screenshots go under TEST_ARTIFACTS_DIR
(default tests/artifacts/). `browser` is a page in a fresh profile that fails the
test on any script error the page reports; `dashboard` starts `serve` pointed at
the fake Replicate API.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import REPO, WEBHOOK_PATH, DaemonProcess, signed_headers

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS_DIR") or REPO / "tests" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def screenshot(page: Any, name: str) -> Path:
    """Keep a full-page PNG of what the test saw, named after the page."""
    path = artifacts_dir() / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@asynccontextmanager
async def chromium_page(
    profile_dir: Path, viewport: dict[str, int] | None = None
) -> AsyncIterator[Any]:
    """A page in a fresh Chromium profile; closed with its browser."""
    if not CHROMIUM.exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: run scripts/install-test-deps "
            "(apt-get install chromium chromium-driver)"
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport=viewport or DESKTOP,
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(5000)
            yield page
        finally:
            await context.close()


class Page:
    """The Playwright page plus what the browser reported as broken, and any
    request it made to a host other than the daemon on loopback."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.elsewhere: list[str] = []  # requests to anything but loopback
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.on("request", self._request)

    def _request(self, request: Any) -> None:
        if not re.match(r"(http://127\.0\.0\.1:\d+/|data:)", request.url):
            self.elsewhere.append(request.url)

    def _console(self, message: Any) -> None:
        # A refused call (401 before the token, 409...) is logged by the browser
        # itself; anything else at error level is a bug in the page.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Page]:
    async with chromium_page(tmp_path / "chromium-profile") as page:
        checked = Page(page)
        yield checked
    assert checked.errors == [], checked.errors
    assert checked.elsewhere == [], "the page must load nothing from elsewhere"


@pytest.fixture
def dashboard(
    daemon_process: Callable[..., DaemonProcess], fake_replicate: Any
) -> Callable[..., DaemonProcess]:
    """Start the daemon (with the fake Replicate's token and URLs)."""

    def start(**env: str) -> DaemonProcess:
        return daemon_process(extra_env={**fake_replicate.env(), **env})

    return start


async def post_webhook(
    daemon: DaemonProcess, secret: str, body: dict[str, Any]
) -> None:
    raw = json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            daemon.url + WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
        )
        assert response.status == 200, await response.text()


async def tab_to(page: Any, selector: str, limit: int = 40) -> None:
    """Press Tab until `selector` has the focus, as a keyboard-only user would."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate(
            "(selector) => document.activeElement?.matches(selector) ?? false",
            selector,
        ):
            return
    raise AssertionError(f"{selector} never got the focus after {limit} Tab presses")
