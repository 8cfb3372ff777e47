"""Settings: embedded defaults, then a TOML file, then the environment, then flags.

Everything is validated before the daemon listens. A bad value raises ConfigError,
whose message is one line naming the key and the offending value (never the value
of a secret); the command line turns it into exit code 2.

TOML keys:
    [server]   host, port, data_dir, outputs_dir
    [webhook]  allowed_ips, trusted_proxies, client_ip_header,
               timestamp_tolerance_s, max_body_bytes
    [database] synchronous ("normal": survives a crash of the process;
               "full": also survives power loss, at a lower delivery rate)

Environment: REPLICATE_WEBHOOKD_CONFIG (the TOML path), REPLICATE_WEBHOOKD_HOST,
_PORT, _DATA_DIR, _OUTPUTS_DIR, _ALLOWED_IPS, _TRUSTED_PROXIES, _CLIENT_IP_HEADER
(lists separated by commas or spaces), REPLICATE_WEBHOOK_SECRET (one or more
`whsec_` secrets separated by white space) and REPLICATE_WEBHOOKD_ADMIN_TOKEN.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import limits
from daemon.receive.client_ip import IPNetwork, parse_network
from daemon.receive.signature import decode_secret
from daemon.sensitive import Secret

ENV_PREFIX = "REPLICATE_WEBHOOKD_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
SECRET_ENV = "REPLICATE_WEBHOOK_SECRET"
ADMIN_TOKEN_ENV = ENV_PREFIX + "ADMIN_TOKEN"
SYNCHRONOUS_MODES = ("normal", "full")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "host": limits.DEFAULT_HOST,
        "port": limits.DEFAULT_PORT,
        "data_dir": limits.DEFAULT_DATA_DIR,
        "outputs_dir": limits.DEFAULT_OUTPUTS_DIR,
    },
    "webhook": {
        "allowed_ips": [],
        "trusted_proxies": [],
        "client_ip_header": limits.DEFAULT_CLIENT_IP_HEADER,
        "timestamp_tolerance_s": limits.TIMESTAMP_TOLERANCE_S,
        "max_body_bytes": limits.MAX_BODY_BYTES,
    },
    "database": {"synchronous": "normal"},
}
_ENV_KEYS = {
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "DATA_DIR": ("server", "data_dir"),
    "OUTPUTS_DIR": ("server", "outputs_dir"),
    "ALLOWED_IPS": ("webhook", "allowed_ips"),
    "TRUSTED_PROXIES": ("webhook", "trusted_proxies"),
    "CLIENT_IP_HEADER": ("webhook", "client_ip_header"),
}


class ConfigError(ValueError):
    """A setting is missing or invalid; str() is the one line to show the user."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    outputs_dir: Path
    allowed_ips: tuple[IPNetwork, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    client_ip_header: str
    timestamp_tolerance_s: int
    max_body_bytes: int
    synchronous: str
    webhook_keys: tuple[Secret, ...]  # base64 text of each HMAC key
    admin_token: Secret | None

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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.expanduser().open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None


def _merge(values: dict[str, dict[str, Any]], loaded: dict[str, Any]) -> None:
    for section, keys in loaded.items():
        if section not in values:
            raise ConfigError(f"[{section}]: unknown section")
        if not isinstance(keys, dict):
            raise ConfigError(f"{section}: must be a table, got {keys!r}")
        for key, value in keys.items():
            if key not in values[section]:
                raise ConfigError(f"{section}.{key}: unknown key (value {value!r})")
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
    return Settings(
        host=_text("server.host", server["host"]),
        port=_integer("server.port", server["port"], 0, 65535),
        data_dir=_path("server.data_dir", server["data_dir"]),
        outputs_dir=_path("server.outputs_dir", server["outputs_dir"]),
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
        synchronous=synchronous.lower(),
        webhook_keys=_webhook_keys(env.get(SECRET_ENV, ""), require_secret),
        admin_token=Secret(admin) if admin else None,
    )


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    return value.strip()


def _integer(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
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
            "GET /v1/webhooks/default/secret"
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
