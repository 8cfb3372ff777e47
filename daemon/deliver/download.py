"""Fetch one output URL into a local file, resumably, and never half-finished.

The bytes go to `<name>.part` in the job's `.partial/` folder with bounded memory;
after a failure the next attempt resumes with `Range` when the server honours it.
The count is checked against Content-Length (or Content-Range), the sha256 is
taken over the whole file, then fsync, an atomic rename into the job's folder and
an fsync of the folder. Redirects are followed by hand, and only to allowed hosts.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from daemon import limits
from daemon.deliver.errors import DeliveryError, Permanent, Retryable, from_status
from daemon.deliver.outputs import host_allowed, refusal

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 5
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    part: Path,
    final: Path,
    *,
    allowed_hosts: Sequence[str],
    max_bytes: int,
    progress: Progress,
) -> Fetched:
    """Download `url` to `final` via `part`; raise a DeliveryError on failure."""
    try:
        done, digest = await asyncio.to_thread(_resume_state, part)
        async with _get(session, url, done, allowed_hosts) as response:
            done, total, digest = _start(response, part, done, digest)
            if total is not None and total > max_bytes:
                raise _too_large(max_bytes)
            done = await _stream(
                response, part, done, total, digest, max_bytes, progress
            )
        if total is not None and done != total:
            raise Retryable("truncated", f"got {done} of {total} bytes")
        await asyncio.to_thread(_publish, part, final)
    # Network errors first: aiohttp's connection errors and TimeoutError are also
    # OSErrors, and must not be taken for a local disk failure.
    except (aiohttp.ClientError, TimeoutError) as exc:
        message = f"download interrupted: {_brief(exc)}"
        raise Retryable("connection_error", message) from None
    except OSError as exc:
        raise _disk_error(exc) from None
    except UnicodeError as exc:  # a host name no resolver accepts
        message = f"cannot fetch the output: {_brief(exc)}"
        raise Permanent("invalid_url", message) from None
    return Fetched(done, digest.hexdigest())


class _get:
    """GET with manual redirects: each hop must be https on an allowed host."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        offset: int,
        allowed_hosts: Sequence[str],
    ) -> None:
        self._session, self._url, self._offset = session, url, offset
        self._allowed = allowed_hosts
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        url = self._url
        headers = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        for _ in range(_MAX_REDIRECTS + 1):
            response = await self._session.get(
                url, headers=headers, allow_redirects=False
            )
            if response.status not in _REDIRECTS:
                self._response = response
                return response
            location = response.headers.get("Location", "")
            response.release()
            if not location:
                raise Retryable("bad_redirect", f"{response.status} without Location")
            url = urljoin(url, location)
            if not host_allowed(url, self._allowed):
                raise Permanent("blocked_host", "redirect refused: " + refusal(url))
        raise Permanent("too_many_redirects", f"more than {_MAX_REDIRECTS} redirects")

    async def __aexit__(self, *exc_info: object) -> None:
        if self._response is not None:
            self._response.release()


def _resume_state(part: Path) -> tuple[int, hashlib._Hash]:
    """Bytes already in the part file and their running hash."""
    digest = hashlib.sha256()
    if part.is_symlink():
        part.unlink()
    if not part.exists():
        return 0, digest
    with part.open("rb") as handle:
        while chunk := handle.read(limits.DOWNLOAD_CHUNK_BYTES):
            digest.update(chunk)
    return part.stat().st_size, digest


def _start(
    response: aiohttp.ClientResponse, part: Path, done: int, digest: hashlib._Hash
) -> tuple[int, int | None, hashlib._Hash]:
    """Decide from the status whether to append or start over; return the total."""
    length = response.content_length
    if response.status == 206 and done:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and int(match[1]) == done:
            total = int(match[3]) if match[3] != "*" else None
            return done, total, digest
        part.unlink(missing_ok=True)  # the next attempt asks for the whole file
        raise Retryable("bad_range", "the server resumed at another offset")
    if response.status == 200:
        part.unlink(missing_ok=True)  # the server sent the whole file again
        return 0, length, hashlib.sha256()
    if response.status == 416 and done:
        part.unlink(missing_ok=True)  # our part no longer matches the source
        raise Retryable("bad_range", "the server refused to resume; starting over")
    raise from_status(
        response.status, "the output URL", response.headers.get("Retry-After")
    )


async def _stream(
    response: aiohttp.ClientResponse,
    part: Path,
    done: int,
    total: int | None,
    digest: hashlib._Hash,
    max_bytes: int,
    progress: Progress,
) -> int:
    part.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, _OPEN_FLAGS | os.O_APPEND, 0o644)
    try:
        async for chunk in response.content.iter_chunked(limits.DOWNLOAD_CHUNK_BYTES):
            done += len(chunk)
            if done > max_bytes:
                raise _too_large(max_bytes)
            digest.update(chunk)
            await asyncio.to_thread(_write_all, fd, chunk)
            progress(done, total)
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)
    return done


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _publish(part: Path, final: Path) -> None:
    """Atomically move the finished part into place, replacing any old entry."""
    if final.is_symlink():
        final.unlink()
    os.replace(part, final)
    folder = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _too_large(max_bytes: int) -> DeliveryError:
    return Permanent(
        "too_large", f"output is larger than delivery.max_file_bytes ({max_bytes})"
    )


def _disk_error(exc: OSError) -> DeliveryError:
    """A full disk is final; anything else (a missing mount) may pass: retried."""
    where = f" ({exc.filename})" if exc.filename else ""
    message = f"cannot write the output: {exc.strerror}{where}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return Permanent("disk_full", message)
    return Retryable("local_io_error", message)


def _brief(exc: BaseException) -> str:
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")
