"""Build the delivery, hub, s3, replicate and cost sections from raw values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon import config_checks as checks
from daemon import limits
from daemon.sensitive import Secret
from daemon.settings import (
    API_BASE_ENV,
    API_TOKEN_ENV,
    HF_TOKEN_ENV,
    STATUS_URL_ENV,
    ConfigError,
    CostSettings,
    DeliverySettings,
    HubSettings,
    ReplicateSettings,
    S3Settings,
)

_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY_PREFIX = re.compile(r"^([A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]*)?$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def delivery(section: dict[str, Any]) -> DeliverySettings:
    hosts = section["allowed_hosts"]
    if isinstance(hosts, str):
        hosts = hosts.replace(",", " ").split()
    if not isinstance(hosts, list) or not all(
        isinstance(h, str) and _HOST.match(h) for h in hosts
    ):
        raise ConfigError(
            f"delivery.allowed_hosts: not a list of host names: {hosts!r}"
        )
    ca_file = section["ca_file"]
    if ca_file and not Path(str(ca_file)).expanduser().is_file():
        raise ConfigError(f"delivery.ca_file: no such file: {ca_file!r}")
    return DeliverySettings(
        allowed_hosts=tuple(h.lower() for h in hosts),
        ca_file=Path(str(ca_file)).expanduser() if ca_file else None,
        max_attempts=checks.integer(
            "delivery.max_attempts", section["max_attempts"], 1, 100
        ),
        backoff_base_s=checks.number(
            "delivery.backoff_base_s", section["backoff_base_s"], 0.01, 600
        ),
        lease_s=checks.number("delivery.lease_s", section["lease_s"], 1, 3600),
        max_file_bytes=checks.integer(
            "delivery.max_file_bytes", section["max_file_bytes"], 1, 1 << 50
        ),
        concurrency=checks.integer(
            "delivery.concurrency", section["concurrency"], 1, 32
        ),
        delete_local_after_publish=checks.flag(
            "delivery.delete_local_after_publish",
            section["delete_local_after_publish"],
        ),
    )


def hub(section: dict[str, Any], env: Mapping[str, str]) -> HubSettings:
    model_id = section["model_id"]
    if _set(model_id) and not (isinstance(model_id, str) and _REPO_ID.match(model_id)):
        raise ConfigError(f"hub.model_id: not an owner/name repository: {model_id!r}")
    token = env.get(HF_TOKEN_ENV, "").strip()
    return HubSettings(
        model_id=model_id or None,
        private=checks.flag("hub.private", section["private"]),
        concurrency=checks.integer("hub.concurrency", section["concurrency"], 1, 8),
        token=Secret(token) if token else None,
    )


def s3(section: dict[str, Any]) -> S3Settings:
    template = section["key_template"]
    if not isinstance(template, str) or "{name}" not in template:
        raise ConfigError(f"s3.key_template: must contain {{name}}: {template!r}")
    try:
        template.format(job_id="j", name="n")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"s3.key_template: only {{job_id}} and {{name}} may be used: {template!r}"
        ) from None
    checksum = section["checksum"]
    if checksum not in ("when_supported", "when_required"):
        raise ConfigError(
            f"s3.checksum: must be when_supported or when_required, got {checksum!r}"
        )
    endpoint = section["endpoint_url"]
    if endpoint and not (isinstance(endpoint, str) and endpoint.startswith("http")):
        raise ConfigError(f"s3.endpoint_url: not an http(s) URL: {endpoint!r}")
    key_id, secret_key = section["access_key_id"], section["secret_access_key"]
    if bool(key_id) != bool(secret_key):
        raise ConfigError("s3.access_key_id: set both keys or neither (value hidden)")
    prefix = section["prefix"]
    if not isinstance(prefix, str) or not _KEY_PREFIX.match(prefix):
        raise ConfigError(
            f"s3.prefix: letters, digits and !-_.*'()/ only, no leading '/': {prefix!r}"
        )
    bucket = section["bucket"]
    if _set(bucket) and not (isinstance(bucket, str) and _BUCKET.match(bucket)):
        raise ConfigError(
            "s3.bucket: 3 to 63 lower-case letters, digits, dots and hyphens: "
            f"{bucket!r}"
        )
    return S3Settings(
        bucket=bucket or None,
        prefix=prefix,
        key_template=template,
        endpoint_url=endpoint or None,
        region=str(section["region"]) or None,
        access_key_id=Secret(str(key_id)) if key_id else None,
        secret_access_key=Secret(str(secret_key)) if secret_key else None,
        checksum=checksum,
        part_size_bytes=checks.integer(
            "s3.part_size_bytes", section["part_size_bytes"], 5 << 20, 5 << 30
        ),
        concurrency=checks.integer("s3.concurrency", section["concurrency"], 1, 16),
    )


def replicate(section: dict[str, Any], env: Mapping[str, str]) -> ReplicateSettings:
    base = env.get(API_BASE_ENV, "").strip() or section["api_base"]
    if not isinstance(base, str) or not re.match(r"^https?://[^\s/?#]+", base):
        raise ConfigError(f"replicate.api_base: not an http(s) URL: {base!r}")
    model = section["trainer_model"]
    if not isinstance(model, str) or not _REPO_ID.match(model):
        raise ConfigError(f"replicate.trainer_model: not an owner/name: {model!r}")
    destination = section["destination"]
    valid = isinstance(destination, str) and _REPO_ID.match(destination)
    if _set(destination) and not valid:
        raise ConfigError(f"replicate.destination: not an owner/name: {destination!r}")
    status = env.get(STATUS_URL_ENV, "").strip() or section["status_url"]
    if not isinstance(status, str) or not re.match(r"^https?://[^\s/?#]+", status):
        raise ConfigError(f"replicate.status_url: not an http(s) URL: {status!r}")
    token = env.get(API_TOKEN_ENV, "")
    return ReplicateSettings(
        api_base=base.rstrip("/"),
        trainer_model=model,
        destination=destination or None,
        reconcile_interval_s=checks.number(
            "replicate.reconcile_interval_s",
            section["reconcile_interval_s"],
            0.05,
            86400,
        ),
        status_url=status.rstrip("/"),
        token=Secret(token) if token.strip() else None,
    )


def cost(section: dict[str, Any]) -> CostSettings:
    given = section["prices_per_hour"]
    if not isinstance(given, dict):
        raise ConfigError(f"cost.prices_per_hour: must be a table, got {given!r}")
    if len(given) > limits.MAX_PRICES:
        raise ConfigError(f"cost.prices_per_hour: over {limits.MAX_PRICES} entries")
    prices = dict(limits.HARDWARE_PRICES_PER_HOUR)
    for name, price in given.items():
        if len(name) > limits.MAX_HARDWARE_NAME:
            raise ConfigError(
                f"cost.prices_per_hour: a hardware name is over "
                f"{limits.MAX_HARDWARE_NAME} characters"
            )
        if not name.strip():
            raise ConfigError("cost.prices_per_hour: a hardware name is empty")
        prices[name.strip()] = checks.number(
            f"cost.prices_per_hour.{name}", price, 0, 1_000_000
        )
    default = checks.text("cost.default_hardware", section["default_hardware"])
    if default not in prices:
        raise ConfigError(
            f"cost.default_hardware: no price for {default!r} in cost.prices_per_hour"
        )
    period = section["limit_period"]
    if period not in limits.COST_PERIODS:
        raise ConfigError(
            f"cost.limit_period: must be one of {limits.COST_PERIODS}, got {period!r}"
        )
    action = section["limit_action"]
    if action not in limits.COST_ACTIONS:
        raise ConfigError(
            f"cost.limit_action: must be one of {limits.COST_ACTIONS}, got {action!r}"
        )
    zone = checks.text("cost.time_zone", section["time_zone"])
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"cost.time_zone: not an IANA time zone: {zone!r}") from None
    return CostSettings(
        prices_per_hour=tuple(sorted(prices.items())),
        default_hardware=default,
        limit_amount=checks.number(
            "cost.limit_amount", section["limit_amount"], 0, 1e9
        ),
        limit_period=period,
        limit_action=action,
        time_zone=zone,
    )


def _set(value: Any) -> bool:
    """Whether a value that may be left empty was given (False and 0 count, and
    are then refused for their type)."""
    return value not in ("", None)
