"""What a call to Replicate can end in, and the hints for a refused token."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.settings import API_TOKEN_ENV

_TOKEN_PREFIX = "r8_"


class ReplicateError(Exception):
    """A refused or failed call; `status` is None when no HTTP answer came."""

    def __init__(
        self,
        status: int | None,
        title: str | None,
        detail: str | None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.retry_after_s = retry_after_s
        super().__init__(detail or title or f"Replicate answered HTTP {status}")


class TokenMissing(ReplicateError):
    def __init__(self) -> None:
        super().__init__(None, None, f"{API_TOKEN_ENV} not set")


class InvalidToken(ReplicateError):
    def __init__(self, detail: str | None, hints: list[str]) -> None:
        super().__init__(401, "Invalid token", detail)
        self.hints = hints
        self.args = ("Invalid token" + (": " + "; ".join(hints) if hints else ""),)


@dataclass(frozen=True)
class CreditNotice:
    """The last 402 seen from any call, for the billing report."""

    at: float  # unix seconds
    detail: str


def token_hints(raw: str) -> list[str]:
    """What may be wrong with a refused token, judged from its text alone."""
    hints = []
    if raw != raw.strip():
        hints.append(
            f"{API_TOKEN_ENV} has leading or trailing white space or a newline; "
            "check that the whole token was copied"
        )
    if not raw.strip().startswith(_TOKEN_PREFIX):
        hints.append(
            f"the token does not start with {_TOKEN_PREFIX} as Replicate tokens "
            "normally do (older tokens may not)"
        )
    return hints
