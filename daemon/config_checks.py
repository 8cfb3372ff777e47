"""Checks for single configuration values, shared by every section.

Each takes the "section.key" it checks, so that a ConfigError names it; lists
may also be given as one string separated by commas or spaces (environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon import limits
from daemon.receive.client_ip import IPNetwork, parse_network
from daemon.settings import ConfigError


def choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
    return float(value)


def text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    return value.strip()


def integer(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
    return value


def path(key: str, value: Any) -> Path:
    return Path(text(key, value)).expanduser()


def networks(key: str, value: Any) -> tuple[IPNetwork, ...]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list of addresses or CIDRs, got {value!r}")
    if len(value) > limits.MAX_NETWORKS:
        raise ConfigError(f"{key}: over {limits.MAX_NETWORKS} entries")
    networks = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{key}: not an address or CIDR: {item!r}")
        try:
            networks.append(parse_network(item))
        except ValueError as exc:
            raise ConfigError(f"{key}: {item!r} is not a valid CIDR ({exc})") from None
    return tuple(networks)
