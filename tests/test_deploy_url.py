"""`replicate-webhookd url [BASE]` through the real console entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli_env, run_cli

WEBHOOK = "/api/webhooks/replicate"


@pytest.mark.parametrize(
    ("base", "printed"),
    [
        ("https://abc123.ngrok.app", "https://abc123.ngrok.app" + WEBHOOK),
        ("https://abc123.ngrok.app/", "https://abc123.ngrok.app" + WEBHOOK),
        ("https://hooks.example.com:8443", "https://hooks.example.com:8443" + WEBHOOK),
        ("https://example.com/replicate/", "https://example.com/replicate" + WEBHOOK),
        ("HTTPS://[2001:db8::1]", "https://[2001:db8::1]" + WEBHOOK),
        ("https://example.com" + WEBHOOK, "https://example.com" + WEBHOOK),
    ],
)
def test_url_prints_the_webhook_url_for_a_base_given_on_the_command_line(
    base: str, printed: str
) -> None:
    result = run_cli("url", base)
    assert (result.returncode, result.stdout, result.stderr) == (0, printed + "\n", "")


def test_url_uses_the_public_url_from_the_environment() -> None:
    env = cli_env(REPLICATE_WEBHOOKD_PUBLIC_URL="https://tunnel.example.com")
    result = run_cli("url", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"https://tunnel.example.com{WEBHOOK}\n"


def test_url_uses_server_public_url_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[server]\npublic_url = "https://hooks.example.org"\n')
    result = run_cli("url", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"https://hooks.example.org{WEBHOOK}\n"


def test_url_on_the_command_line_wins_over_the_configured_one() -> None:
    env = cli_env(REPLICATE_WEBHOOKD_PUBLIC_URL="https://configured.example.com")
    result = run_cli("url", "https://given.example.com", env=env)
    assert result.stdout == f"https://given.example.com{WEBHOOK}\n"


def test_url_warns_on_stderr_when_the_base_is_not_https() -> None:
    result = run_cli("url", "http://hooks.example.com")
    assert result.returncode == 0
    assert result.stdout == f"http://hooks.example.com{WEBHOOK}\n"  # stdout stays clean
    assert "warning" in result.stderr
    assert "not https" in result.stderr


def test_url_without_any_base_exits_2_saying_how_to_give_one() -> None:
    result = run_cli("url")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "REPLICATE_WEBHOOKD_PUBLIC_URL" in result.stderr
    assert "server.public_url" in result.stderr


@pytest.mark.parametrize(
    ("base", "reason"),
    [
        ("ftp://hooks.example.com", "https://"),
        ("hooks.example.com", "https://"),
        ("https://", "host"),
        ("https://hooks.example.com?x=1", "query"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://hooks.example.com:99999", "port"),
        ("https://hooks example.com", "spaces"),
        ("https://bad_host!.example.com", "host"),
    ],
)
def test_url_exits_2_on_a_malformed_base(base: str, reason: str) -> None:
    result = run_cli("url", base)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert reason in result.stderr


def test_url_never_echoes_credentials_in_a_base() -> None:
    result = run_cli("url", "https://user:hunter2-secret@hooks.example.com")
    assert result.returncode == 2
    assert "hunter2-secret" not in result.stderr
    assert "credentials" in result.stderr


def test_malformed_public_url_setting_is_a_configuration_error_naming_the_key() -> None:
    env = cli_env(REPLICATE_WEBHOOKD_PUBLIC_URL="tunnel.example.com")
    result = run_cli("url", env=env)
    assert result.returncode == 2
    assert "server.public_url" in result.stderr
