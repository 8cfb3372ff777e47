"""Settings: embedded defaults, then a TOML file, then the environment, then flags.

Everything is validated before the daemon listens. A bad value raises ConfigError,
whose message is one line naming the key and the offending value (never the value
of a secret); the command line turns it into exit code 2.

TOML keys:
    [server]   host, port, data_dir, outputs_dir, public_url (the https:// base
               URL the daemon is reached at from the internet: submitted trainings
               send their webhooks to <public_url>/api/webhooks/replicate)
    [webhook]  allowed_ips, trusted_proxies, client_ip_header,
               timestamp_tolerance_s, max_body_bytes, body_timeout_s
    [delivery] allowed_hosts, ca_file, max_attempts, lease_s, max_file_bytes,
               concurrency, delete_local_after_publish
    [hub]      model_id, private, concurrency
    [s3]       bucket, prefix, key_template, endpoint_url, region, access_key_id,
               secret_access_key, checksum, part_size_bytes, concurrency
    [replicate] api_base, trainer_model, destination (the default owner/model
               that trainings create versions of), reconcile_interval_s, status_url
    [cost]     prices_per_hour (a table: hardware name -> USD per hour, added to
               the defaults), default_hardware, limit_amount (0: no limit),
               limit_period (daily|weekly|monthly), limit_action (warn|block),
               time_zone (IANA name: where calendar periods begin)
    [database] synchronous ("normal": survives a crash of the process;
               "full": also survives power loss, at a lower delivery rate)
    [log]      format ("text", or "json": one JSON object per line)

Environment: REPLICATE_WEBHOOKD_CONFIG (the TOML path), REPLICATE_WEBHOOKD_HOST,
_PORT, _DATA_DIR, _OUTPUTS_DIR, _PUBLIC_URL, _ALLOWED_IPS, _TRUSTED_PROXIES,
_CLIENT_IP_HEADER, _OUTPUT_HOSTS (lists separated by commas or spaces), _LOG_FORMAT,
REPLICATE_WEBHOOK_SECRET (one or more `whsec_` secrets separated by white space),
REPLICATE_WEBHOOKD_ADMIN_TOKEN, REPLICATE_WEBHOOKD_SECRET_KEY (a Fernet key for the
fetched signing secret at rest),
HF_TOKEN, REPLICATE_API_BASE (overrides replicate.api_base), REPLICATE_STATUS_URL
(overrides replicate.status_url) and REPLICATE_API_TOKEN
(read from the environment only: never from a file, never stored).
"""

from __future__ import annotations

import binascii
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet

from daemon import limits
from daemon.receive.client_ip import IPNetwork, parse_network
from daemon.receive.signature import decode_secret
from daemon.sensitive import Secret
from daemon.webhook_url import WEBHOOK_PATH, normalise_base, shown

ENV_PREFIX = "REPLICATE_WEBHOOKD_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
SECRET_ENV = "REPLICATE_WEBHOOK_SECRET"
ADMIN_TOKEN_ENV = ENV_PREFIX + "ADMIN_TOKEN"
SECRET_KEY_ENV = ENV_PREFIX + "SECRET_KEY"
API_TOKEN_ENV = "REPLICATE_API_TOKEN"
API_BASE_ENV = "REPLICATE_API_BASE"
STATUS_URL_ENV = "REPLICATE_STATUS_URL"
SYNCHRONOUS_MODES = ("normal", "full")
LOG_FORMATS = ("text", "json")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY_PREFIX = re.compile(r"^([A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]*)?$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "host": limits.DEFAULT_HOST,
        "port": limits.DEFAULT_PORT,
        "data_dir": limits.DEFAULT_DATA_DIR,
        "outputs_dir": limits.DEFAULT_OUTPUTS_DIR,
        "public_url": "",
    },
    "webhook": {
        "allowed_ips": [],
        "trusted_proxies": [],
        "client_ip_header": limits.DEFAULT_CLIENT_IP_HEADER,
        "timestamp_tolerance_s": limits.TIMESTAMP_TOLERANCE_S,
        "max_body_bytes": limits.MAX_BODY_BYTES,
        "body_timeout_s": limits.BODY_READ_TIMEOUT_S,
    },
    "database": {"synchronous": "normal"},
    "log": {"format": "text"},
    "replicate": {
        "api_base": limits.REPLICATE_API_BASE,
        "trainer_model": limits.REPLICATE_TRAINER_MODEL,
        "destination": "",
        "reconcile_interval_s": limits.RECONCILE_INTERVAL_S,
        "status_url": limits.REPLICATE_STATUS_URL,
    },
    "cost": {
        "prices_per_hour": dict(limits.HARDWARE_PRICES_PER_HOUR),
        "default_hardware": limits.DEFAULT_HARDWARE,
        "limit_amount": 0,
        "limit_period": "monthly",
        "limit_action": "warn",
        "time_zone": "UTC",
    },
    "delivery": {
        "allowed_hosts": ["replicate.delivery"],
        "ca_file": "",
        "max_attempts": limits.DELIVERY_MAX_ATTEMPTS,
        "backoff_base_s": limits.DELIVERY_BACKOFF_BASE_S,
        "lease_s": limits.DELIVERY_LEASE_S,
        "max_file_bytes": limits.MAX_OUTPUT_FILE_BYTES,
        "concurrency": 2,
        "delete_local_after_publish": False,
    },
    "hub": {"model_id": "", "private": True, "concurrency": 1},
    "s3": {
        "bucket": "",
        "prefix": "",
        "key_template": "{job_id}/{name}",
        "endpoint_url": "",
        "region": "",
        "access_key_id": "",
        "secret_access_key": "",
        "checksum": "when_supported",
        "part_size_bytes": limits.S3_PART_BYTES,
        "concurrency": 2,
    },
}
_ENV_READ = (
    SECRET_ENV,
    ADMIN_TOKEN_ENV,
    SECRET_KEY_ENV,
    API_TOKEN_ENV,
    API_BASE_ENV,
    STATUS_URL_ENV,
    "HF_TOKEN",
)
_ENV_KEYS = {
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "DATA_DIR": ("server", "data_dir"),
    "OUTPUTS_DIR": ("server", "outputs_dir"),
    "PUBLIC_URL": ("server", "public_url"),
    "ALLOWED_IPS": ("webhook", "allowed_ips"),
    "TRUSTED_PROXIES": ("webhook", "trusted_proxies"),
    "CLIENT_IP_HEADER": ("webhook", "client_ip_header"),
    "OUTPUT_HOSTS": ("delivery", "allowed_hosts"),
    "OUTPUTS_CA_FILE": ("delivery", "ca_file"),
    "LOG_FORMAT": ("log", "format"),
}


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


def load_settings(
    env: Mapping[str, str],
    *,
    config_path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    require_secret: bool = True,
) -> Settings:
    """Build validated settings; `overrides` maps "section.key" to a flag's value."""
    values = {section: dict(keys) for section, keys in _DEFAULTS.items()}
    path = config_path or env.get(CONFIG_ENV)
    if path:
        _merge(values, _read_toml(Path(path)))
    for name, (section, key) in _ENV_KEYS.items():
        if env.get(ENV_PREFIX + name, "").strip():
            values[section][key] = env[ENV_PREFIX + name]
    for dotted, value in (overrides or {}).items():
        if value is not None:
            section, key = dotted.split(".")
            values[section][key] = value
    return _validate(values, env, require_secret)


def rebuild(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """`settings` as loaded, with `changes` ("section.key" -> value) on top."""
    if settings.source is None:
        raise ValueError("these settings were not built by load_settings")
    source = settings.source
    values = {section: dict(keys) for section, keys in source.values.items()}
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        values[section][key] = value
    return _validate(values, source.env, source.require_secret)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.expanduser().open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None


def _merge(values: dict[str, dict[str, Any]], loaded: dict[str, Any]) -> None:
    for section, keys in loaded.items():
        if section not in values:
            raise ConfigError(f"[{section}]: unknown section")
        if not isinstance(keys, dict):
            raise ConfigError(f"{section}: must be a table, got {keys!r}")
        for key, value in keys.items():
            if key not in values[section]:
                # The value is not shown: a misspelt key may well hold a secret.
                raise ConfigError(f"{section}.{key}: unknown key")
            values[section][key] = value


def _validate(
    values: dict[str, dict[str, Any]], env: Mapping[str, str], require_secret: bool
) -> Settings:
    server, webhook = values["server"], values["webhook"]
    header = _text("webhook.client_ip_header", webhook["client_ip_header"])
    if not _HEADER_NAME.match(header):
        raise ConfigError(f"webhook.client_ip_header: not a header name: {header!r}")
    synchronous = _text("database.synchronous", values["database"]["synchronous"])
    if synchronous.lower() not in SYNCHRONOUS_MODES:
        raise ConfigError(
            f"database.synchronous: must be one of {SYNCHRONOUS_MODES}, "
            f"got {synchronous!r}"
        )
    admin = env.get(ADMIN_TOKEN_ENV, "").strip()
    source = Source(
        values={section: dict(keys) for section, keys in values.items()},
        env={name: env[name] for name in _ENV_READ if name in env},
        require_secret=require_secret,
    )
    return Settings(
        host=_text("server.host", server["host"]),
        port=_integer("server.port", server["port"], 0, 65535),
        data_dir=_path("server.data_dir", server["data_dir"]),
        outputs_dir=_path("server.outputs_dir", server["outputs_dir"]),
        public_url=_public_url(server["public_url"]),
        allowed_ips=_networks("webhook.allowed_ips", webhook["allowed_ips"]),
        trusted_proxies=_networks(
            "webhook.trusted_proxies", webhook["trusted_proxies"]
        ),
        client_ip_header=header,
        timestamp_tolerance_s=_integer(
            "webhook.timestamp_tolerance_s", webhook["timestamp_tolerance_s"], 1, 86400
        ),
        max_body_bytes=_integer(
            "webhook.max_body_bytes", webhook["max_body_bytes"], 1024, 1 << 30
        ),
        body_timeout_s=_number(
            "webhook.body_timeout_s", webhook["body_timeout_s"], 0.1, 3600
        ),
        synchronous=synchronous.lower(),
        # With an API token the secret can be fetched from Replicate instead.
        webhook_keys=_webhook_keys(
            env.get(SECRET_ENV, ""),
            require_secret and not env.get(API_TOKEN_ENV, "").strip(),
        ),
        admin_token=Secret(admin) if admin else None,
        delivery=_delivery(values["delivery"]),
        hub=_hub(values["hub"], env),
        s3=_s3(values["s3"]),
        replicate=_replicate(values["replicate"], env),
        cost=_cost(values["cost"]),
        secret_key=_fernet_key(env.get(SECRET_KEY_ENV, "")),
        log_format=_choice("log.format", values["log"]["format"], LOG_FORMATS),
        source=source,
    )


def _delivery(section: dict[str, Any]) -> DeliverySettings:
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
        max_attempts=_integer("delivery.max_attempts", section["max_attempts"], 1, 100),
        backoff_base_s=_number(
            "delivery.backoff_base_s", section["backoff_base_s"], 0.01, 600
        ),
        lease_s=_number("delivery.lease_s", section["lease_s"], 1, 3600),
        max_file_bytes=_integer(
            "delivery.max_file_bytes", section["max_file_bytes"], 1, 1 << 50
        ),
        concurrency=_integer("delivery.concurrency", section["concurrency"], 1, 32),
        delete_local_after_publish=_flag(
            "delivery.delete_local_after_publish",
            section["delete_local_after_publish"],
        ),
    )


def _hub(section: dict[str, Any], env: Mapping[str, str]) -> HubSettings:
    model_id = section["model_id"]
    if model_id and (not isinstance(model_id, str) or not _REPO_ID.match(model_id)):
        raise ConfigError(f"hub.model_id: not an owner/name repository: {model_id!r}")
    token = env.get("HF_TOKEN", "").strip()
    return HubSettings(
        model_id=model_id or None,
        private=_flag("hub.private", section["private"]),
        concurrency=_integer("hub.concurrency", section["concurrency"], 1, 8),
        token=Secret(token) if token else None,
    )


def _s3(section: dict[str, Any]) -> S3Settings:
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
    if bucket and not (isinstance(bucket, str) and _BUCKET.match(bucket)):
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
        part_size_bytes=_integer(
            "s3.part_size_bytes", section["part_size_bytes"], 5 << 20, 5 << 30
        ),
        concurrency=_integer("s3.concurrency", section["concurrency"], 1, 16),
    )


def _replicate(section: dict[str, Any], env: Mapping[str, str]) -> ReplicateSettings:
    base = env.get(API_BASE_ENV, "").strip() or section["api_base"]
    if not isinstance(base, str) or not re.match(r"^https?://[^\s/?#]+", base):
        raise ConfigError(f"replicate.api_base: not an http(s) URL: {base!r}")
    model = section["trainer_model"]
    if not isinstance(model, str) or not _REPO_ID.match(model):
        raise ConfigError(f"replicate.trainer_model: not an owner/name: {model!r}")
    destination = section["destination"]
    valid = isinstance(destination, str) and _REPO_ID.match(destination)
    if destination and not valid:
        raise ConfigError(f"replicate.destination: not an owner/name: {destination!r}")
    status = env.get(STATUS_URL_ENV, "").strip() or section["status_url"]
    if not isinstance(status, str) or not re.match(r"^https?://[^\s/?#]+", status):
        raise ConfigError(f"replicate.status_url: not an http(s) URL: {status!r}")
    token = env.get(API_TOKEN_ENV, "")
    return ReplicateSettings(
        api_base=base.rstrip("/"),
        trainer_model=model,
        destination=destination or None,
        reconcile_interval_s=_number(
            "replicate.reconcile_interval_s",
            section["reconcile_interval_s"],
            0.05,
            86400,
        ),
        status_url=status.rstrip("/"),
        token=Secret(token) if token.strip() else None,
    )


def _cost(section: dict[str, Any]) -> CostSettings:
    given = section["prices_per_hour"]
    if not isinstance(given, dict):
        raise ConfigError(f"cost.prices_per_hour: must be a table, got {given!r}")
    prices = dict(limits.HARDWARE_PRICES_PER_HOUR)
    for name, price in given.items():
        if not name.strip():
            raise ConfigError("cost.prices_per_hour: a hardware name is empty")
        prices[name.strip()] = _number(
            f"cost.prices_per_hour.{name}", price, 0, 1_000_000
        )
    default = _text("cost.default_hardware", section["default_hardware"])
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
    zone = _text("cost.time_zone", section["time_zone"])
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"cost.time_zone: not an IANA time zone: {zone!r}") from None
    return CostSettings(
        prices_per_hour=tuple(sorted(prices.items())),
        default_hardware=default,
        limit_amount=_number("cost.limit_amount", section["limit_amount"], 0, 1e9),
        limit_period=period,
        limit_action=action,
        time_zone=zone,
    )


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
    return float(value)


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    return value.strip()


def _integer(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
    return value


def _path(key: str, value: Any) -> Path:
    return Path(_text(key, value)).expanduser()


def _networks(key: str, value: Any) -> tuple[IPNetwork, ...]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list of addresses or CIDRs, got {value!r}")
    networks = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{key}: not an address or CIDR: {item!r}")
        try:
            networks.append(parse_network(item))
        except ValueError as exc:
            raise ConfigError(f"{key}: {item!r} is not a valid CIDR ({exc})") from None
    return tuple(networks)


def _webhook_keys(raw: str, required: bool) -> tuple[Secret, ...]:
    entries = raw.split()
    if not entries and required:
        raise ConfigError(
            f"{SECRET_ENV}: not set; export your Replicate signing secret "
            f"({SECRET_ENV}=whsec_...), which the API returns at "
            f"GET /v1/webhooks/default/secret, or set {API_TOKEN_ENV} and the "
            "daemon fetches it"
        )
    keys = []
    for position, entry in enumerate(entries, start=1):
        try:
            decode_secret(entry)
        except ValueError as exc:
            raise ConfigError(
                f"{SECRET_ENV}: entry {position} of {len(entries)} is invalid ({exc})"
            ) from None
        keys.append(Secret(entry))
    return tuple(keys)


def _public_url(value: Any) -> str | None:
    if value in ("", None):
        return None
    try:
        return normalise_base(str(value))
    except ValueError as exc:
        raise ConfigError(f"server.public_url: {shown(str(value))} {exc}") from None


def _fernet_key(raw: str) -> Secret | None:
    if not raw.strip():
        return None
    try:
        Fernet(raw.strip())
    except (ValueError, binascii.Error):
        raise ConfigError(
            f"{SECRET_KEY_ENV}: not a Fernet key (32 bytes in url-safe base64; "
            "value hidden)"
        ) from None
    return Secret(raw.strip())
