"""A request id for every request: on its log lines and in its X-Request-Id answer.

An id the client (or a proxy in front) sends in X-Request-Id is kept when it is
short and plain; anything else is replaced by a fresh one, so a header cannot
smuggle line breaks or escapes into the log. The id lives in a context variable
for the length of the request: the logging filter in daemon.logs reads it there.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from aiohttp import web

from daemon.errors import Handler

HEADER = "X-Request-Id"
_ACCEPTED = re.compile(r"[A-Za-z0-9._-]{1,64}")

current: ContextVar[str | None] = ContextVar("request_id", default=None)


def choose(offered: str | None) -> str:
    """The client's id when it is plain enough to log, else a new random one."""
    if offered is not None and _ACCEPTED.fullmatch(offered):
        return offered
    return secrets.token_hex(8)


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    request_id = choose(request.headers.get(HEADER))
    token = current.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and the like pass through here
        exc.headers[HEADER] = request_id
        raise
    finally:
        current.reset(token)
    if not response.prepared:  # a streamed answer has sent its headers already
        response.headers[HEADER] = request_id
    return response
