"""JSON request bodies of the admin API, read under a cap and parsed strictly.

The body is read whole by the webhook's own reader (`read_capped`: refused past
`max_bytes` with 413, or when it arrives too slowly with 408). Parsing refuses,
with 400 and the reason: bytes that are not UTF-8 JSON, NaN and Infinity (not
JSON, and nothing downstream takes them), numbers too long to convert, and
nesting deeper than JSON_MAX_DEPTH.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from daemon import limits
from daemon.errors import ApiError
from daemon.receive.body import read_capped


async def read_json(request: web.Request, max_bytes: int) -> Any:
    if (request.content_length or 0) > max_bytes:
        raise ApiError(413, "body_too_large", f"body is over {max_bytes} bytes")
    return parse(await read_capped(request, max_bytes, limits.BODY_READ_TIMEOUT_S))


def parse(raw: bytes) -> Any:
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = f"the body is not usable JSON ({_why(exc)})"
        raise ApiError(400, "invalid_json", reason) from None
    if _depth(value) > limits.JSON_MAX_DEPTH:
        raise ApiError(
            400,
            "invalid_json",
            f"the body nests deeper than {limits.JSON_MAX_DEPTH} levels",
        )
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at byte {exc.pos}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc)[:120]


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limits.JSON_MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
