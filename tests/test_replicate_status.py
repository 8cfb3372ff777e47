"""Replicate's public status page through GET /api/cloud/replicate/status and
`replicate-webhookd status`: the indicator when the page answers, "unknown" with
200 quickly when it is down, unreachable or malformed; never the API token."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from daemon.settings import ConfigError
from tests.fakes.replicate import status_page
from tests.helpers import cli_env, run_cli

ROUTE = "/api/cloud/replicate/status"


def closed_loopback_url() -> str:
    """A loopback port that nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_status_when_operational_says_so(daemon_client, fake_replicate):
    client = await daemon_client(env=fake_replicate.env())

    answer = await client.get(ROUTE)

    assert answer.status == 200
    assert await answer.json() == {
        "indicator": "none",
        "description": "All Systems Operational",
        "operational": True,
    }


async def test_status_during_an_outage_is_not_operational(
    daemon_client, fake_replicate
):
    fake_replicate.status_page = status_page("major", "Partial System Outage")
    client = await daemon_client(env=fake_replicate.env())

    answer = await client.get(ROUTE)

    assert answer.status == 200
    assert await answer.json() == {
        "indicator": "major",
        "description": "Partial System Outage",
        "operational": False,
    }


async def test_status_page_is_asked_without_the_api_token(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fake_replicate.env())

    await client.get(ROUTE)

    [seen] = fake_replicate.calls("/api/v2/status.json")
    assert seen.authorization is None


async def test_status_works_without_a_replicate_token(daemon_client, fake_replicate):
    env = {"REPLICATE_STATUS_URL": fake_replicate.status_url}
    client = await daemon_client(env=env)

    answer = await client.get(ROUTE)

    assert (await answer.json())["indicator"] == "none"


async def test_unreachable_status_page_answers_unknown_with_200_fast(
    daemon_client, fake_replicate
):
    env = {**fake_replicate.env(), "REPLICATE_STATUS_URL": closed_loopback_url()}
    client = await daemon_client(env=env)

    started = time.monotonic()
    answer = await client.get(ROUTE)
    elapsed_s = time.monotonic() - started

    assert answer.status == 200
    body = await answer.json()
    assert body["indicator"] == "unknown"
    assert body["operational"] is False
    assert body["description"].startswith("status page unreachable")
    assert elapsed_s < 3.0


async def test_status_page_server_error_answers_unknown_with_200(
    daemon_client, fake_replicate
):
    fake_replicate.status_http = 503
    client = await daemon_client(env=fake_replicate.env())

    answer = await client.get(ROUTE)

    assert answer.status == 200
    assert await answer.json() == {
        "indicator": "unknown",
        "description": "status page answered HTTP 503",
        "operational": False,
    }


@pytest.mark.parametrize(
    "page",
    [
        {"status": {"indicator": "catastrophic", "description": "?"}},
        {"status": "fine"},
        ["none"],
    ],
    ids=["unknown-indicator", "status-not-an-object", "not-an-object"],
)
async def test_malformed_status_page_answers_unknown_with_200(
    daemon_client, fake_replicate, page
):
    fake_replicate.status_page = page
    client = await daemon_client(env=fake_replicate.env())

    answer = await client.get(ROUTE)

    assert answer.status == 200
    assert (await answer.json())["indicator"] == "unknown"


# The CLI.


async def test_cli_status_prints_the_indicator_and_description(
    fake_replicate, tmp_path
):
    fake_replicate.status_page = status_page("minor")
    env = cli_env(**fake_replicate.env())

    done = await asyncio.to_thread(
        run_cli, "status", "--data-dir", str(tmp_path), env=env
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "minor: Minor Service Outage"


async def test_cli_status_when_unreachable_prints_unknown_and_exits_0(tmp_path):
    env = cli_env(REPLICATE_STATUS_URL=closed_loopback_url())

    done = await asyncio.to_thread(
        run_cli, "status", "--json", "--data-dir", str(tmp_path), env=env
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indicator"] == "unknown"


# Settings.


def test_status_url_defaults_to_replicates_status_page(make_settings):
    assert make_settings().replicate.status_url == "https://www.replicatestatus.com"


def test_status_url_must_be_an_http_url(make_settings):
    with pytest.raises(ConfigError, match=r"^replicate\.status_url: not an http"):
        make_settings(env={"REPLICATE_STATUS_URL": "file:///etc/passwd"})


def test_status_url_comes_from_the_config_file_without_trailing_slash(make_settings):
    toml = '[replicate]\nstatus_url = "http://127.0.0.1:9/"\n'
    assert make_settings(toml=toml).replicate.status_url == "http://127.0.0.1:9"
