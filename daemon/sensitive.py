"""Secret values and the masking of secret-looking fields.

A `Secret` never shows its value in a repr, a str or a format string; code that
needs the value calls `reveal()`, which makes every use easy to find.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from typing import Any

MASK = "***"
# Keys in a job's input whose values are credentials (hf_token, s3_secret_key, ...).
_SECRET_KEY = re.compile(r"token|secret|key|password", re.IGNORECASE)


class Secret:
    """A string that stays hidden in logs, reprs and error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def mask_secrets(value: Any) -> Any:
    """Return `value` with the values of secret-looking keys replaced, recursively."""
    if isinstance(value, dict):
        return {
            key: MASK if _SECRET_KEY.search(str(key)) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    return value


def secret_values(value: Any) -> list[str]:
    """The revealed value of every Secret inside `value` (dataclasses, tuples).

    For the log redactor: a `whsec_` secret is listed with and without its prefix,
    so that either spelling is masked.
    """
    if isinstance(value, Secret):
        revealed = value.reveal().strip()
        bare = revealed.removeprefix("whsec_")
        return [revealed, bare] if bare != revealed else [revealed]
    if isinstance(value, tuple | list):
        return [found for item in value for found in secret_values(item)]
    if is_dataclass(value) and not isinstance(value, type):
        return [
            found
            for item in fields(value)
            for found in secret_values(getattr(value, item.name))
        ]
    return []
