"""Read a request body whole, but never more than the cap, and never encoded.

Content-Length over the cap is refused before reading; a chunked body is counted as
it arrives and refused the moment it crosses the cap, so nothing truncated is ever
checked. Compressed bodies are refused: the signature covers the bytes as sent and
Replicate does not compress, so decoding would only add a decompression-bomb risk.
"""

from __future__ import annotations

from aiohttp import web

from daemon import limits
from daemon.errors import ApiError


async def read_capped(request: web.Request, max_bytes: int) -> bytes:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(
            415, "unsupported_encoding", "Content-Encoding is not supported; send raw"
        )
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise ApiError(413, "body_too_large", f"body is over {max_bytes} bytes")

    body = bytearray()
    while True:
        chunk = await request.content.read(limits.BODY_READ_CHUNK_BYTES)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "body_too_large", f"body is over {max_bytes} bytes")
