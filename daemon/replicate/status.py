"""Replicate's public status page, read as advice that never blocks anything.

The page is an Atlassian Statuspage: GET {status_url}/api/v2/status.json answers
{"status": {"indicator": "none" | "minor" | "major" | "critical",
"description": ...}}. No token is sent. Anything but such an answer within
REPLICATE_STATUS_TIMEOUT_S (no answer, an HTTP error, a body that is not that
shape) gives the indicator "unknown" with the reason, never an exception.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from daemon import __version__, limits
from daemon.replicate.client import read_up_to

log = logging.getLogger(__name__)

INDICATORS = ("none", "minor", "major", "critical")


async def replicate_status(status_url: str) -> dict[str, Any]:
    """{"indicator", "description", "operational"}; "unknown" when unreadable."""
    url = f"{status_url}/api/v2/status.json"
    try:
        body = await _fetch(url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unknown(f"status page unreachable ({type(exc).__name__})")
    if isinstance(body, str):
        return _unknown(body)

    found = body.get("status") if isinstance(body, dict) else None
    indicator = found.get("indicator") if isinstance(found, dict) else None
    if indicator not in INDICATORS:
        return _unknown("status page answered without a known indicator")
    assert isinstance(found, dict)
    description = found.get("description")
    return {
        "indicator": indicator,
        "description": description[:200] if isinstance(description, str) else "",
        "operational": indicator == "none",
    }


async def _fetch(url: str) -> Any:
    """The decoded JSON, or a string saying why there is none."""
    timeout = aiohttp.ClientTimeout(total=limits.REPLICATE_STATUS_TIMEOUT_S)
    headers = {"User-Agent": f"replicate-webhookd/{__version__}"}
    async with (
        aiohttp.ClientSession(
            timeout=timeout, trust_env=True, headers=headers
        ) as session,
        session.get(url, allow_redirects=False) as answer,
    ):
        if answer.status != 200:
            return f"status page answered HTTP {answer.status}"
        raw = await read_up_to(answer.content, limits.REPLICATE_STATUS_MAX_BYTES + 1)
    if len(raw) > limits.REPLICATE_STATUS_MAX_BYTES:
        return "status page answer larger than the cap"
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return "status page answered with no JSON"


def _unknown(reason: str) -> dict[str, Any]:
    log.info("replicate status unknown: %s", reason)
    return {"indicator": "unknown", "description": reason, "operational": False}
