"""Log output of `replicate-webhookd serve` as a real process: format, ids, secrets.

The daemon runs on a loopback port with its stderr in a file; the tests send real
signed (or deliberately mis-signed) webhooks, stop it, and read what it wrote.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    WEBHOOK_PATH,
    DaemonProcess,
    cli_env,
    new_secret,
    run_cli,
    signed_headers,
)

ADMIN_TOKEN = "log-admin-token-0123456789abcdef"
GENERATED_ID = re.compile(r"^[0-9a-f]{16}$")
JSON_KEYS = {"time", "level", "logger", "message"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def job_body(job_id: str) -> bytes:
    return json.dumps({"id": job_id, "status": "starting"}).encode()


async def send(
    proc: DaemonProcess, body: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    """POST a webhook; the answer's status and X-Request-Id."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(proc.url + WEBHOOK_PATH, data=body, headers=headers) as answer,
    ):
        return answer.status, answer.headers["X-Request-Id"]


def json_lines(proc: DaemonProcess) -> list[dict[str, Any]]:
    entries = []
    for line in proc.log_text().splitlines():
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        assert set(entry) >= JSON_KEYS, line
        assert ISO_UTC.match(entry["time"]), line
        entries.append(entry)
    return entries


@pytest.mark.parametrize("chosen_by", ["flag", "env", "toml"])
async def test_json_log_lines_parse_and_carry_the_request_id(
    daemon_process, secret, tmp_path, chosen_by
):
    settings: dict[str, Any] = {
        "flag": {"extra_args": ["--log-format", "json"]},
        "env": {"extra_env": {"REPLICATE_WEBHOOKD_LOG_FORMAT": "json"}},
        "toml": {"extra_args": ["--config", str(tmp_path / "c.toml")]},
    }[chosen_by]
    (tmp_path / "c.toml").write_text('[log]\nformat = "json"\n')
    proc = daemon_process(**settings)
    body = job_body("jsonlogjob01")
    headers = {**signed_headers(secret, body), "X-Request-Id": "trace-0001.a_b"}

    accepted = await send(proc, body, headers)
    refused = await send(proc, body, signed_headers(new_secret(), body))
    assert proc.stop() == 0

    assert accepted == (200, "trace-0001.a_b")
    assert refused[0] == 401
    assert GENERATED_ID.match(refused[1]), refused
    entries = json_lines(proc)
    by_message = {entry["message"]: entry for entry in entries}
    created = next(m for m in by_message if "jsonlogjob01: new -> starting" in m)
    assert by_message[created]["request_id"] == "trace-0001.a_b"
    assert by_message[created]["level"] == "INFO"
    assert by_message[created]["logger"] == "daemon.receive.handler"
    warning = next(m for m in by_message if m.startswith("webhook refused 401"))
    assert by_message[warning]["request_id"] == refused[1]
    listening = next(m for m in by_message if m.startswith("listening on"))
    assert "request_id" not in by_message[listening]


async def test_text_log_lines_tag_each_request_with_its_id(daemon_process, secret):
    proc = daemon_process()
    body = job_body("textlogjob01")
    headers = {**signed_headers(secret, body), "X-Request-Id": "text-trace-7"}

    assert await send(proc, body, headers) == (200, "text-trace-7")
    assert proc.stop() == 0

    lines = proc.log_text().splitlines()
    created = [line for line in lines if "textlogjob01: new -> starting" in line]
    assert len(created) == 1
    assert " daemon.receive.handler [req=text-trace-7]: job " in created[0]
    listening = [line for line in lines if "listening on" in line]
    assert listening
    assert "[req=" not in listening[0]


async def test_every_line_logged_during_one_request_carries_its_id(
    daemon_process, fake_replicate
):
    # No configured secret: the daemon fetches Replicate's. A delivery signed with
    # another secret makes it fetch again within the request, so that one request
    # logs the API call, the fetch and the refusal.
    proc = await asyncio.to_thread(
        daemon_process,
        secret="",
        extra_env={
            **fake_replicate.env(),
            "REPLICATE_WEBHOOKD_LOG_LEVEL": "DEBUG",
            "REPLICATE_WEBHOOKD_LOG_FORMAT": "json",
        },
    )
    body = job_body("onerequestjob01")
    headers = {**signed_headers(new_secret(), body), "X-Request-Id": "one-request"}

    assert await send(proc, body, headers) == (401, "one-request")
    assert await asyncio.to_thread(proc.stop) == 0

    tagged = [e["message"] for e in json_lines(proc) if e.get("request_id")]
    assert len(tagged) == 3, tagged
    assert tagged[0] == "replicate GET /v1/webhooks/default/secret: 200"
    assert tagged[1].startswith("signing secret: fetched, unchanged")
    assert tagged[2].startswith("webhook refused 401 invalid_signature")
    ids = {e["request_id"] for e in json_lines(proc) if e.get("request_id")}
    assert ids == {"one-request"}


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_secrets_never_reach_the_log_even_when_a_message_includes_them(
    daemon_process, secret, log_format
):
    bare_secret = secret.removeprefix("whsec_")
    proc = daemon_process(
        extra_env={
            "REPLICATE_WEBHOOKD_ADMIN_TOKEN": ADMIN_TOKEN,
            "REPLICATE_WEBHOOKD_LOG_LEVEL": "DEBUG",
        },
        extra_args=["--log-format", log_format],
    )
    body = job_body("secretlogjob01")
    # The refusal line quotes the webhook-id header and the request id: send the
    # secrets there, as a careless client (or an attacker probing) might.
    for smuggled in (ADMIN_TOKEN, secret, bare_secret):
        headers = signed_headers(new_secret(), body, msg_id=smuggled)
        headers["X-Request-Id"] = ADMIN_TOKEN
        assert await send(proc, body, headers) == (401, ADMIN_TOKEN)
    assert proc.stop() == 0

    text = proc.log_text()
    refusals = [line for line in text.splitlines() if "webhook refused" in line]
    assert len(refusals) == 3, text
    assert all("webhook-id=***" in line for line in refusals), refusals
    for value in (ADMIN_TOKEN, secret, bare_secret):
        assert value not in text


async def test_plain_request_ids_are_kept_and_others_replaced(daemon_client):
    client = await daemon_client()
    kept = ["abc", "A.b-c_9", "x" * 64]
    replaced = ["x" * 65, "has space", "semi;colon", "ünïcode", ""]

    for offered in kept:
        answer = await client.get("/healthz", headers={"X-Request-Id": offered})
        assert answer.headers["X-Request-Id"] == offered
    for offered in replaced:
        answer = await client.get("/healthz", headers={"X-Request-Id": offered})
        assert GENERATED_ID.match(answer.headers["X-Request-Id"]), offered


async def test_error_answers_carry_a_request_id_too(daemon_client):
    client = await daemon_client()

    missing = await client.get("/api/jobs/nosuchjob")
    unsigned = await client.post(WEBHOOK_PATH, data=b"{}")
    unknown = await client.get("/no/such/route")

    for answer in (missing, unsigned, unknown):
        assert answer.status in (401, 404)
        assert GENERATED_ID.match(answer.headers["X-Request-Id"])
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.mark.parametrize("where", ["env", "toml"])
def test_unknown_log_format_stops_serve_with_exit_code_2(tmp_path, secret, where):
    config = tmp_path / "c.toml"
    config.write_text('[log]\nformat = "xml"\n' if where == "toml" else "")
    env = cli_env(REPLICATE_WEBHOOK_SECRET=secret)
    if where == "env":
        env["REPLICATE_WEBHOOKD_LOG_FORMAT"] = "xml"

    done = run_cli(
        "serve", "--port", "0", "--data-dir", str(tmp_path), "--config", str(config),
        env=env,
    )  # fmt: skip

    assert done.returncode == 2
    assert "log.format: must be one of text, json, got 'xml'" in done.stderr
