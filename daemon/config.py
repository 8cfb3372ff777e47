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
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from daemon import config_checks as checks
from daemon import config_sections as sections
from daemon import limits
from daemon.receive.signature import decode_secret
from daemon.sensitive import Secret
from daemon.settings import (
    ADMIN_TOKEN_ENV,
    API_BASE_ENV,
    API_TOKEN_ENV,
    CONFIG_ENV,
    ENV_PREFIX,
    HF_TOKEN_ENV,
    SECRET_ENV,
    SECRET_KEY_ENV,
    STATUS_URL_ENV,
    ConfigError,
    Settings,
    Source,
)
from daemon.webhook_url import normalise_base, shown

SYNCHRONOUS_MODES = ("normal", "full")
LOG_FORMATS = ("text", "json")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")

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
    HF_TOKEN_ENV,
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
    header = checks.text("webhook.client_ip_header", webhook["client_ip_header"])
    if not _HEADER_NAME.match(header):
        raise ConfigError(f"webhook.client_ip_header: not a header name: {header!r}")
    synchronous = checks.text("database.synchronous", values["database"]["synchronous"])
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
        host=checks.text("server.host", server["host"]),
        port=checks.integer("server.port", server["port"], 0, 65535),
        data_dir=checks.path("server.data_dir", server["data_dir"]),
        outputs_dir=checks.path("server.outputs_dir", server["outputs_dir"]),
        public_url=_public_url(server["public_url"]),
        allowed_ips=checks.networks("webhook.allowed_ips", webhook["allowed_ips"]),
        trusted_proxies=checks.networks(
            "webhook.trusted_proxies", webhook["trusted_proxies"]
        ),
        client_ip_header=header,
        timestamp_tolerance_s=checks.integer(
            "webhook.timestamp_tolerance_s", webhook["timestamp_tolerance_s"], 1, 86400
        ),
        max_body_bytes=checks.integer(
            "webhook.max_body_bytes", webhook["max_body_bytes"], 1024, 1 << 30
        ),
        body_timeout_s=checks.number(
            "webhook.body_timeout_s", webhook["body_timeout_s"], 0.1, 3600
        ),
        synchronous=synchronous.lower(),
        # With an API token the secret can be fetched from Replicate instead.
        webhook_keys=_webhook_keys(
            env.get(SECRET_ENV, ""),
            require_secret and not env.get(API_TOKEN_ENV, "").strip(),
        ),
        admin_token=Secret(admin) if admin else None,
        delivery=sections.delivery(values["delivery"]),
        hub=sections.hub(values["hub"], env),
        s3=sections.s3(values["s3"]),
        replicate=sections.replicate(values["replicate"], env),
        cost=sections.cost(values["cost"]),
        secret_key=_fernet_key(env.get(SECRET_KEY_ENV, "")),
        log_format=checks.choice("log.format", values["log"]["format"], LOG_FORMATS),
        source=source,
    )


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
    if not isinstance(value, str) or len(value) > limits.MAX_URL_CHARS:
        raise ConfigError(
            f"server.public_url: must be a URL of at most {limits.MAX_URL_CHARS} "
            "characters (value hidden)"
        )
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
