"""How a delivery attempt can fail, and whether trying again can help.

DeliveryError
├── Retryable      timeouts, connection resets, 429, 5xx, a truncated body,
│                  412 from the Hub: the task is queued again with backoff
│                  (Retry-After, when given, is honoured) until max_attempts
└── Permanent      other 4xx, a blocked host, the size cap, a full disk, bad
                   configuration: the task ends at once with its reason
SourceExpired      404/410 from the output URL: Replicate deleted the file; a
                   few attempts in case of a glitch, then `source_expired`
"""

from __future__ import annotations


class DeliveryError(Exception):
    retryable = False

    def __init__(self, code: str, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class Retryable(DeliveryError):
    retryable = True


class Permanent(DeliveryError):
    pass


class SourceExpired(Retryable):
    """Retried a bounded number of times, then final as `source_expired`."""


def from_status(
    status: int, what: str, retry_after: str | None = None
) -> DeliveryError:
    """Sort an HTTP status from `what` into the tree above."""
    wait = retry_after_s(retry_after)
    if status in (404, 410):
        return SourceExpired("source_expired", f"{what} answered {status}: gone")
    if status == 429 or status >= 500 or status == 408:
        return Retryable(
            f"http_{status}", f"{what} answered {status}", retry_after_s=wait
        )
    return Permanent(f"http_{status}", f"{what} answered {status}")


MAX_RETRY_AFTER_S = 3600  # a longer wait than this is the queue's backoff to choose


def retry_after_s(value: str | None) -> float | None:
    """Retry-After in delay-seconds, capped; an HTTP date is left to the backoff."""
    text = (value or "").strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text), MAX_RETRY_AFTER_S))
    return None
