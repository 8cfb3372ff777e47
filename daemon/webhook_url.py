"""The webhook URL to give Replicate: the public base URL plus the webhook path.

The base is where the daemon is reached from the internet: a reverse proxy's
https://host, or a tunnel's address. It may carry a path prefix (a proxy that
mounts the daemon below one), never credentials, a query or a fragment.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

WEBHOOK_PATH = "/api/webhooks/replicate"  # the one route Replicate posts to
_HOST_NAME = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$"
)


def normalise_base(text: str) -> str:
    """The base URL without a trailing slash; ValueError says what is wrong."""
    value = text.strip()
    if not value or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("empty, or contains spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must start with https:// (or http://)")
    if "@" in parts.netloc:
        raise ValueError("must not contain a user name or password")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError("must not have a query or fragment")
    host = parts.hostname or ""
    if not (_HOST_NAME.match(host) or (":" in host and "[" in parts.netloc)):
        raise ValueError("has no valid host name")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        raise ValueError("has an invalid port") from None
    path = parts.path.rstrip("/")
    if path.endswith(WEBHOOK_PATH):  # the full webhook URL was given
        path = path[: -len(WEBHOOK_PATH)]
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"


def webhook_url(base: str) -> str:
    return normalise_base(base) + WEBHOOK_PATH


def shown(value: str) -> str:
    """The value for an error message: never one that may carry a password or a
    token (user information, or a query string)."""
    if "@" in value or "?" in value:
        return "(value hidden: it may contain credentials)"
    return repr(value)


def is_https(url: str) -> bool:
    return url.lower().startswith("https://")
