"""Turn a verified webhook body into an Event: the facts one snapshot states.

A body is the whole prediction or training object. Only `id` and `status` are
required; every other field is optional and is dropped, not trusted, when it has the
wrong type. The kind of delivery (start, logs, output, completed, failed, canceled)
is not in the body and is derived from the status and the output.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daemon import limits
from daemon.sensitive import mask_secrets

ACTIVE_STATUSES = ("starting", "processing")  # anything else is terminal
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STATUS = re.compile(r"^[a-z_]+$")
_KIND_BY_STATUS = {
    "starting": "start",
    "succeeded": "completed",
    "failed": "failed",
    "canceled": "canceled",
}


class BodyError(ValueError):
    """The body is not a usable job snapshot; `status` is the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Event:
    job_id: str
    status: str
    kind: str
    fields: dict[str, Any]  # column name -> value, only the fields present
    logs: str | None
    output_rank: tuple[int, int]  # (items, serialised length): bigger is newer


def is_terminal(status: str) -> bool:
    return status not in ACTIVE_STATUSES


def status_rank(status: str) -> int:
    return ACTIVE_STATUSES.index(status) if status in ACTIVE_STATUSES else 2


def output_rank(output_json: str | None) -> tuple[int, int]:
    if output_json is None:
        return (0, 0)
    value = json.loads(output_json)
    items = len(value) if isinstance(value, list) else 1
    return (items, len(output_json))


def parse_body(raw: bytes) -> Event:
    """Decode and check a body; raises BodyError with the answer to give."""
    try:
        body = json.loads(
            raw.decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BodyError(400, "invalid_json", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BodyError(400, "invalid_body", "body is not a JSON object")
    job_id, status = body.get("id"), body.get("status")
    if not isinstance(job_id, str) or not isinstance(status, str):
        raise BodyError(422, "missing_fields", "body needs string 'id' and 'status'")
    if len(job_id) > limits.MAX_JOB_ID_CHARS or not _JOB_ID.fullmatch(job_id):
        raise BodyError(422, "invalid_id", "'id' must be letters, digits, - or _")
    if len(status) > limits.MAX_STATUS_CHARS or not _STATUS.fullmatch(status):
        raise BodyError(422, "invalid_status", "'status' must be lower-case letters")

    output = body.get("output")
    logs = body.get("logs")
    try:
        output_json = _dumps(output)
        fields = _fields(body, output_json)
    except RecursionError:
        raise BodyError(400, "invalid_body", "body is nested too deeply") from None
    return Event(
        job_id=job_id,
        status=status,
        kind=_kind(status, output),
        fields=fields,
        logs=logs if isinstance(logs, str) and logs else None,
        output_rank=output_rank(output_json),
    )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _kind(status: str, output: Any) -> str:
    if status == "processing":
        return "output" if output is not None else "logs"
    return _KIND_BY_STATUS.get(status, "completed")


def _fields(body: dict[str, Any], output_json: str | None) -> dict[str, Any]:
    metrics = body.get("metrics")
    metrics = metrics if isinstance(metrics, dict) else None
    predict_time = metrics.get("predict_time") if metrics else None
    created_at = _timestamp(body.get("created_at"))
    input_value = body.get("input")
    urls = body.get("urls")
    error = body.get("error")
    fields = {
        "model": _short_text(body.get("model")),
        "version": _short_text(body.get("version")),
        "input_json": json.dumps(mask_secrets(input_value))
        if isinstance(input_value, dict)
        else None,
        "output_json": output_json,
        "error": _storable(error) if isinstance(error, str) else _dumps(error),
        "metrics_json": json.dumps(metrics) if metrics else None,
        "predict_time_s": _seconds(predict_time),
        "created_at": created_at,
        "created_ts": epoch(created_at),
        "started_at": _timestamp(body.get("started_at")),
        "completed_at": _timestamp(body.get("completed_at")),
        "source": _short_text(body.get("source")),
        "urls_json": json.dumps(urls) if isinstance(urls, dict) else None,
        "data_removed": int(body["data_removed"])
        if isinstance(body.get("data_removed"), bool)
        else None,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _short_text(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 512:
        return _storable(value)
    return None


def _storable(text: str) -> str:
    """Text SQLite can store: lone surrogates (from \\udXXX escapes) become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _timestamp(value: Any) -> str | None:
    """Keep the original text (2 to 9 fractional digits) when it is a real time."""
    return value if epoch(value) is not None else None


def epoch(value: Any) -> float | None:
    """Unix seconds of an ISO 8601 time as Replicate writes it; None otherwise."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
