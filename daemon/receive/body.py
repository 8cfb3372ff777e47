"""Read a request body whole, but never more than the cap, and never encoded.

Content-Length over the cap is refused before reading; a chunked body is counted as
it arrives and refused the moment it crosses the cap, so nothing truncated is ever
checked. Compressed bodies are refused: the signature covers the bytes as sent and
Replicate does not compress, so decoding would only add a decompression-bomb risk.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from daemon import limits
from daemon.errors import ApiError


def check_declared(request: web.Request, max_bytes: int) -> None:
    """Refuse by the headers alone: any encoding (every line of it), or a size."""
    for line in request.headers.getall("Content-Encoding", []):
        if any(
            part.strip().lower() not in ("", "identity") for part in line.split(",")
        ):
            raise ApiError(
                415, "unsupported_encoding", "Content-Encoding is not supported"
            )
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise ApiError(413, "body_too_large", f"body is over {max_bytes} bytes")


async def read_capped(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, within the size cap and the read timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read(request, max_bytes)
    except TimeoutError:
        response = ApiError(408, "body_timeout", f"body not received in {timeout_s} s")
        raise response from None
    except (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError):
        raise ApiError(400, "incomplete_body", "the body ended early") from None


async def _read(request: web.Request, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        chunk = await request.content.read(limits.BODY_READ_CHUNK_BYTES)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "body_too_large", f"body is over {max_bytes} bytes")
