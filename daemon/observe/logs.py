"""Logging, configured once: one stderr handler, text or JSON lines, secrets masked.

Every record handled gets the id of the request it was logged in (daemon.observe.
request_id): text lines show it as `[req=...]`, JSON lines as `request_id`. A JSON
line is one object with time, level, logger, message and, when present,
request_id and exception; it never spans two lines.

Secrets are kept out of logs by the Secret type first. The redactor is the second
line of defence: it knows the values of the configured secrets (and of a signing
secret fetched later) and masks them in the message, the traceback and the final
formatted line, whatever a log call tried to print.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from daemon.observe import request_id
from daemon.sensitive import MASK

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
MIN_SECRET_CHARS = 8  # shorter values would mask ordinary words
# Client libraries print request headers (credentials) at DEBUG: keep them quiet.
_NOISY_CLIENTS = (
    "botocore",
    "aiobotocore",
    "boto3",
    "urllib3",
    "httpx",
    "httpx2",
    "huggingface_hub",
    "hf_xet",
)


class Redactor(logging.Filter):
    """Masks known secret values in a record before any formatter sees it."""

    def __init__(self) -> None:
        super().__init__()
        self._values: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        found = set(self._values) | {v for v in values if len(v) >= MIN_SECRET_CHARS}
        # Longest first: a secret that contains another is masked whole.
        self._values = tuple(sorted(found, key=len, reverse=True))

    def mask(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._values:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not print its arguments
            message = f"unformattable log message {str(record.msg)!r}"
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


# The process has one log output, so it has one redactor; the daemon adds to it.
REDACTOR = Redactor()


def redact(values: Iterable[str]) -> None:
    """Mask these values in every log line from now on."""
    REDACTOR.add(values)


class RequestIdFilter(logging.Filter):
    """Adds the current request's id (or None) to the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.current.get()
        record.request_id = current
        record.request_tag = f" [req={current}]" if current else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None)
        if current:
            entry["request_id"] = current
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)  # ASCII-escaped: one physical line, always


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The daemon's stderr handler; the final line is masked once more."""

    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.mask(super().format(record))


def configure(level: str, log_format: str = "text") -> None:
    """Install the handler on the root logger, replacing one installed before."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(REDACTOR)
    handler.setFormatter(_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in _NOISY_CLIENTS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def use_format(log_format: str) -> None:
    """Switch the installed handler to text or JSON lines."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Handler):
            handler.setFormatter(_formatter(log_format))


def _formatter(log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {log_format!r}")
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
