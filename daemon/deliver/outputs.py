"""Which files a succeeded job has, and whether the daemon may fetch them.

A job's `output` can be one URL, a list of them, or nested objects such as a
training's {"version": "owner/model:hash", "weights": "https://..."}; every string
that looks like a URL is an output file. Only https URLs on allowed hosts are ever
requested: `replicate.delivery` and its subdomains by default, more by
configuration. The local name of each file is made safe here, once, in output order,
so that a restart maps every URL to the same file.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from daemon import limits

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class OutputFile:
    url: str
    name: str  # a bare file name, safe inside the job's directory


def output_urls(output: Any) -> list[str]:
    """Every URL in an output value, in document order, without repeats."""
    seen: dict[str, None] = {}
    for value in _strings(output):
        if _URL.match(value):
            seen.setdefault(value, None)
    return list(seen)


def host_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """https on an allowed host or one of its subdomains (and the same port)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or not host or parts.username or parts.password:
        return False
    if "" in host.removesuffix(".").split("."):  # "a..b": no resolver takes it
        return False
    for entry in allowed_hosts:
        allowed_host, _, allowed_port = entry.lower().partition(":")
        if allowed_port and str(port) != allowed_port:
            continue
        if not allowed_port and port not in (None, 443):
            continue
        if host == allowed_host or host.endswith("." + allowed_host):
            return True
    return False


def refusal(url: str) -> str:
    """Why host_allowed refused a URL, in words, without its path or query."""
    try:
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.hostname or '?'}" + (
            f":{parts.port}" if parts.port else ""
        )
    except ValueError:
        return "the output URL is malformed"
    if parts.scheme != "https":
        return f"{shown}: only https output URLs are fetched"
    if parts.username or parts.password:
        return f"{shown}: URLs with a user name or password are not fetched"
    return f"{shown} is not in delivery.allowed_hosts (host[:port])"


def plan_files(urls: Sequence[str]) -> list[OutputFile]:
    """Give every URL a distinct safe name; a repeated name gets a -2, -3 suffix."""
    files: list[OutputFile] = []
    taken: set[str] = set()
    for index, url in enumerate(urls, start=1):
        name = safe_name(url, fallback=f"output-{index}")
        stem, dot, suffix = name.partition(".")
        candidate, counter = name, 2
        while candidate.lower() in taken:
            candidate = f"{stem}-{counter}{dot}{suffix}"
            counter += 1
        taken.add(candidate.lower())
        files.append(OutputFile(url, candidate))
    return files


def safe_name(url: str, *, fallback: str) -> str:
    """The last path segment, decoded once, reduced to a portable file name."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return fallback
    segment = unquote(posixpath.basename(path.rstrip("/")))
    # A decoded "%2F" or a backslash must not become a directory separator.
    segment = segment.replace("\\", "/").rsplit("/", 1)[-1]
    segment = unicodedata.normalize("NFKC", segment).replace("\x00", "")
    segment = _UNSAFE.sub("_", segment).strip("._-")
    if not segment:
        return fallback
    if len(segment.encode()) > limits.MAX_OUTPUT_NAME_BYTES:
        stem, dot, suffix = segment.rpartition(".")
        if not dot or len(suffix) > 16:
            stem, suffix = segment, ""
        keep = limits.MAX_OUTPUT_NAME_BYTES - len(suffix) - 1
        segment = stem[:keep] + ("." + suffix if suffix else "")
    return segment


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
