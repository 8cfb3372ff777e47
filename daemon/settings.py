"""What the daemon's settings are: validated, immutable values, one class a section.

`daemon.config` builds them (defaults, TOML, environment, flags) and rebuilds them
when provider settings change; this module only describes them, with the names of
the environment variables they come from. A secret is held as a `Secret`, whose
repr is masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from daemon.receive.client_ip import IPNetwork
from daemon.receive.signature import decode_secret
from daemon.sensitive import Secret
from daemon.webhook_url import WEBHOOK_PATH

ENV_PREFIX = "REPLICATE_WEBHOOKD_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
SECRET_ENV = "REPLICATE_WEBHOOK_SECRET"
ADMIN_TOKEN_ENV = ENV_PREFIX + "ADMIN_TOKEN"
SECRET_KEY_ENV = ENV_PREFIX + "SECRET_KEY"
API_TOKEN_ENV = "REPLICATE_API_TOKEN"
API_BASE_ENV = "REPLICATE_API_BASE"
STATUS_URL_ENV = "REPLICATE_STATUS_URL"
HF_TOKEN_ENV = "HF_TOKEN"


@dataclass(frozen=True)
class DeliverySettings:
    allowed_hosts: tuple[str, ...]  # output hosts; their subdomains are allowed too
    ca_file: Path | None  # extra CA bundle for output downloads
    max_attempts: int
    backoff_base_s: float  # first retry after about this long, doubling each time
    lease_s: float
    max_file_bytes: int
    concurrency: int
    delete_local_after_publish: bool


@dataclass(frozen=True)
class HubSettings:
    model_id: str | None
    private: bool
    concurrency: int
    token: Secret | None  # HF_TOKEN

    @property
    def enabled(self) -> bool:
        return bool(self.model_id) and self.token is not None


@dataclass(frozen=True)
class S3Settings:
    bucket: str | None
    prefix: str  # put before every key_template expansion
    key_template: str
    endpoint_url: str | None  # MinIO, Backblaze B2, ...: path-style addressing
    region: str | None
    access_key_id: Secret | None  # else the usual AWS environment and files
    secret_access_key: Secret | None
    checksum: str  # "when_required" for stores that reject the newer checksums
    part_size_bytes: int
    concurrency: int

    @property
    def enabled(self) -> bool:
        return bool(self.bucket)


@dataclass(frozen=True)
class ReplicateSettings:
    api_base: str  # no trailing slash
    trainer_model: str  # owner/name
    destination: str | None  # owner/name: the model trainings create versions of
    reconcile_interval_s: float
    status_url: str  # the public status page, no trailing slash
    # REPLICATE_API_TOKEN as given, surrounding white space included, so that a
    # refused token can be explained; the client sends it stripped.
    token: Secret | None


@dataclass(frozen=True)
class CostSettings:
    prices_per_hour: tuple[tuple[str, float], ...]  # (hardware, USD per hour)
    default_hardware: str  # has a price; also the price of unknown hardware
    limit_amount: float  # USD per period; 0: no limit
    limit_period: str  # daily | weekly | monthly, calendar periods in time_zone
    limit_action: str  # warn | block
    time_zone: str  # IANA name

    def price_per_hour(self, hardware: str | None) -> float:
        """The hardware's price; unknown or missing hardware: the default's."""
        prices = dict(self.prices_per_hour)
        if hardware in prices:
            return prices[hardware]
        return prices[self.default_hardware]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class ConfigError(ValueError):
    """A setting is missing or invalid; str() is the one line to show the user."""

    @property
    def key(self) -> str:
        """The "section.key" the message opens with ("" when it names none)."""
        found = re.match(r"([a-z0-9_]+\.[a-z0-9_]+)[.:]", str(self))
        return found.group(1) if found else ""


@dataclass(frozen=True)
class Source:
    """What settings were built from, so that they can be rebuilt with changes."""

    values: Mapping[str, Mapping[str, Any]]  # section -> key -> raw value
    env: Mapping[str, str] = field(repr=False)  # may hold secrets
    require_secret: bool


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    outputs_dir: Path
    public_url: str | None  # no trailing slash
    allowed_ips: tuple[IPNetwork, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    client_ip_header: str
    timestamp_tolerance_s: int
    max_body_bytes: int
    body_timeout_s: float
    synchronous: str
    webhook_keys: tuple[Secret, ...]  # base64 text of each HMAC key
    admin_token: Secret | None
    delivery: DeliverySettings
    hub: HubSettings
    s3: S3Settings
    replicate: ReplicateSettings
    cost: CostSettings
    # Fernet key for the fetched signing secret at rest; None: <data_dir>/secret.key
    secret_key: Secret | None = None
    log_format: str = "text"  # or "json"
    source: Source | None = field(default=None, repr=False, compare=False)

    @property
    def webhook_url(self) -> str | None:
        if self.public_url is None:
            return None
        return self.public_url + WEBHOOK_PATH

    @property
    def database_path(self) -> Path:
        return self.data_dir / "webhookd.sqlite3"

    def hmac_keys(self) -> tuple[bytes, ...]:
        return tuple(decode_secret(key.reveal()) for key in self.webhook_keys)
