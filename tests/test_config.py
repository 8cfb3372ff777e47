"""Settings: validation through the real `serve` command, precedence, secrets."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.sensitive import Secret
from daemon.settings import ConfigError
from tests.helpers import WEBHOOK_PATH, cli_env, new_secret, run_cli, signed_headers

SECRET_ENV = "REPLICATE_WEBHOOK_SECRET"
BAD_SECRET = "whsec_Sup3r$ecret!NotBase64~Value"


def serve(
    tmp_path: Path,
    *,
    toml: str | None = None,
    args: tuple[str, ...] = (),
    port_flag: bool = True,
    **env: str,
):
    """Run `serve` to completion; it must refuse to start, so it returns quickly."""
    environ = {SECRET_ENV: new_secret(), **env}
    extra: list[str] = []
    if toml is not None:
        config = tmp_path / "config.toml"
        config.write_text(toml)
        extra += ["--config", str(config)]
    if port_flag:  # never the default port; left out when the port is under test
        extra += ["--port", "0"]
    return run_cli(
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        *extra,
        *args,
        env=cli_env(**{k: v for k, v in environ.items() if v is not None}),
        timeout=20,
    )


def refused_line(result) -> str:
    """The one stderr line of a configuration refusal (exit code 2)."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "listening" not in output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("replicate-webhookd: configuration error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("toml", "env", "args", "key", "value"),
    [
        pytest.param(
            '[webhook]\nallowed_ips = ["10.0.0.0/8", "not-a-cidr"]\n',
            {},
            (),
            "webhook.allowed_ips",
            "not-a-cidr",
            id="toml-unparseable-cidr",
        ),
        pytest.param(
            None,
            {"REPLICATE_WEBHOOKD_ALLOWED_IPS": "10.0.0.0/8, 300.1.2.0/24"},
            (),
            "webhook.allowed_ips",
            "300.1.2.0/24",
            id="env-unparseable-cidr",
        ),
        pytest.param(
            '[webhook]\nallowed_ips = ["192.168.1.7/24"]\n',
            {},
            (),
            "webhook.allowed_ips",
            "192.168.1.7/24",
            id="toml-cidr-with-host-bits",
        ),
        pytest.param(
            None,
            {"REPLICATE_WEBHOOKD_ALLOWED_IPS": "10.1.2.3/8"},
            (),
            "webhook.allowed_ips",
            "10.1.2.3/8",
            id="env-cidr-with-host-bits",
        ),
        pytest.param(
            '[webhook]\ntrusted_proxies = ["fd00::1/64"]\n',
            {},
            (),
            "webhook.trusted_proxies",
            "fd00::1/64",
            id="toml-proxy-cidr-with-host-bits",
        ),
        pytest.param(
            "[server]\nlisten_port = 9000\n",
            {},
            (),
            "server.listen_port",
            None,  # an unknown key's value is never echoed: it may be a secret
            id="unknown-toml-key",
        ),
        pytest.param(
            "[servre]\nport = 9000\n",
            {},
            (),
            "servre",
            None,
            id="unknown-toml-section",
        ),
        pytest.param(
            '[server]\nport = "eighty"\n',
            {},
            (),
            "server.port",
            "eighty",
            id="toml-port-not-a-number",
        ),
        pytest.param(
            None,
            {"REPLICATE_WEBHOOKD_PORT": "70000"},
            (),
            "server.port",
            "70000",
            id="env-port-out-of-range",
        ),
        pytest.param(
            None, {}, ("--port", "65536"), "server.port", "65536", id="flag-port"
        ),
    ],
)
def test_invalid_setting_exits_2_with_one_line_naming_key_and_value(
    tmp_path, toml, env, args, key, value
):
    port_flag = key != "server.port"
    line = refused_line(
        serve(tmp_path, toml=toml, args=args, port_flag=port_flag, **env)
    )
    assert key in line
    if value is not None:
        assert value in line
    assert not (tmp_path / "data").exists()  # refused before touching storage


def test_missing_secret_exits_2_and_says_how_to_provide_it(tmp_path):
    result = run_cli(
        "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", env=cli_env()
    )
    line = refused_line(result)
    assert SECRET_ENV in line
    assert f"{SECRET_ENV}=whsec_" in line
    assert "/v1/webhooks/default/secret" in line


@pytest.mark.parametrize(
    "raw",
    [BAD_SECRET, f"{new_secret()} {BAD_SECRET}", BAD_SECRET.removeprefix("whsec_")],
)
def test_malformed_secret_exits_2_without_echoing_the_secret(tmp_path, raw):
    line = refused_line(serve(tmp_path, **{SECRET_ENV: raw}))
    assert SECRET_ENV in line
    for entry in raw.split():
        assert entry.removeprefix("whsec_") not in line
    for fragment in ("Sup3r", "ecret!", "Base64~"):
        assert fragment not in line


def test_bare_base64_secret_without_prefix_is_accepted():
    key = b"0123456789abcdefghijklmn"
    bare = base64.b64encode(key).decode()
    settings = load_settings({SECRET_ENV: bare})
    assert settings.hmac_keys() == (key,)
    odd = b"odd-length-key!!!"  # 17 bytes: its base64 ends in padding
    unpadded = base64.b64encode(odd).decode().rstrip("=")
    assert load_settings({SECRET_ENV: unpadded}).hmac_keys() == (odd,)


@pytest.mark.parametrize("weak", ["whsec_AA", "changeme", "whsec_" + "QUJD" * 3])
def test_secret_shorter_than_16_bytes_is_refused_without_echoing_it(weak):
    with pytest.raises(ConfigError) as refused:
        load_settings({SECRET_ENV: weak})
    message = str(refused.value)
    assert SECRET_ENV in message
    assert weak not in message


async def test_daemon_accepts_deliveries_signed_with_a_bare_secret(
    daemon_client, tmp_path
):
    prefixed = new_secret()
    bare = prefixed.removeprefix("whsec_")
    client = await daemon_client(env={SECRET_ENV: bare})
    body = json.dumps({"id": "bare-secret-job", "status": "starting"}).encode()
    response = await client.post(
        WEBHOOK_PATH, data=body, headers=signed_headers(prefixed, body)
    )
    assert response.status == 200, await response.text()


def test_several_secrets_are_all_kept_for_rotation():
    old, new = new_secret(), new_secret()
    settings = load_settings({SECRET_ENV: f"{old}\n {new}"})
    assert [key.reveal() for key in settings.webhook_keys] == [old, new]


def test_precedence_is_defaults_then_toml_then_env_then_flags(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        "[server]\n"
        'host = "127.0.0.2"\n'
        "port = 8001\n"
        'data_dir = "/toml/data"\n'
        "[webhook]\n"
        'allowed_ips = ["10.0.0.0/8"]\n'
        "timestamp_tolerance_s = 60\n"
    )
    base = {SECRET_ENV: new_secret()}
    env = {
        **base,
        "REPLICATE_WEBHOOKD_PORT": "8002",
        "REPLICATE_WEBHOOKD_DATA_DIR": "/env/data",
        "REPLICATE_WEBHOOKD_ALLOWED_IPS": "192.168.0.0/16, 2001:db8::/32",
    }

    defaults = load_settings(base)
    from_toml = load_settings(base, config_path=str(config))
    from_env = load_settings(env, config_path=str(config))
    from_flags = load_settings(
        env,
        config_path=str(config),
        overrides={"server.port": 8003, "server.host": None},
    )

    assert (defaults.host, defaults.port, defaults.allowed_ips) == (
        "127.0.0.1",
        8080,
        (),
    )
    assert defaults.timestamp_tolerance_s == 300
    assert (from_toml.host, from_toml.port) == ("127.0.0.2", 8001)
    assert from_toml.data_dir == Path("/toml/data")
    assert from_toml.allowed_ips == (ipaddress.ip_network("10.0.0.0/8"),)
    assert from_toml.timestamp_tolerance_s == 60
    assert (from_env.host, from_env.port) == ("127.0.0.2", 8002)
    assert from_env.data_dir == Path("/env/data")
    assert from_env.allowed_ips == (
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert from_env.timestamp_tolerance_s == 60  # not set in env: TOML still holds
    assert from_flags.port == 8003
    assert from_flags.host == "127.0.0.2"  # a flag left unset overrides nothing
    assert from_flags.data_dir == Path("/env/data")


def test_config_path_can_come_from_the_environment(tmp_path):
    config = tmp_path / "other.toml"
    config.write_text("[server]\nport = 8111\n")
    env = {SECRET_ENV: new_secret(), "REPLICATE_WEBHOOKD_CONFIG": str(config)}
    assert load_settings(env).port == 8111


def test_config_error_never_contains_the_secret():
    with pytest.raises(ConfigError) as caught:
        load_settings({SECRET_ENV: BAD_SECRET})
    assert BAD_SECRET not in str(caught.value)
    assert "Sup3r" not in str(caught.value)


def test_secret_repr_str_and_format_never_show_the_value():
    value = "whsec_SuperSecretValue123"
    secret = Secret(value)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        f"{secret:>40}",
        "{}".format(secret),  # noqa: UP032 - str.format is tested too
        "%s %r" % (secret, secret),  # noqa: UP031 - the old operator is tested
        repr([secret]),
        repr({"key": secret}),
    ]
    for text in shown:
        assert "SuperSecret" not in text, text
        assert "***" in text
    assert secret.reveal() == value


def test_settings_repr_does_not_show_webhook_or_admin_secrets():
    secret = new_secret()
    admin = "AdminTokenValue-abc123"
    settings = load_settings(
        {SECRET_ENV: secret, "REPLICATE_WEBHOOKD_ADMIN_TOKEN": admin}
    )
    text = repr(settings)
    assert secret.removeprefix("whsec_") not in text
    assert admin not in text
    assert settings.admin_token is not None
    assert settings.admin_token.reveal() == admin


@pytest.mark.parametrize("key", ["server.data_dir", "server.outputs_dir"])
def test_state_folder_that_is_a_file_stops_serve_with_exit_2(tmp_path, key):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    section, name = key.split(".")
    config = tmp_path / "config.toml"
    config.write_text(f'[{section}]\n{name} = "{blocker}"\n')
    env = cli_env(REPLICATE_WEBHOOK_SECRET=new_secret())
    result = run_cli("serve", "--port", "0", "--config", str(config), env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "listening" not in result.stderr
