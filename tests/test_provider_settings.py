"""GET/PUT /api/cloud/providers/replicate: validated, stored in SQLite, in force for
the next request without a restart, and kept across restarts."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tests.fakes.replicate import training
from tests.helpers import WEBHOOK_PATH, signed_headers

PROVIDER = "/api/cloud/providers/replicate"


async def put(client: Any, body: Any) -> Any:
    return await client.put(PROVIDER, json=body)


async def post_webhook(client: Any, secret: str, job_id: str, **headers: str) -> Any:
    raw = json.dumps(training(job_id, "processing")).encode()
    return await client.post(
        WEBHOOK_PATH, data=raw, headers={**signed_headers(secret, raw), **headers}
    )


async def test_get_shows_the_configured_settings_and_the_webhook_url(daemon_client):
    client = await daemon_client(
        server__public_url="https://hooks.example.test/base/",
        webhook__allowed_ips=["34.82.0.0/16"],
        cost__limit_amount=25,
    )
    body = await (await client.get(PROVIDER)).json()
    settings = body["settings"]
    assert settings["public_url"] == "https://hooks.example.test/base"
    assert (
        body["webhook_url"] == "https://hooks.example.test/base/api/webhooks/replicate"
    )
    assert settings["webhook_allowed_ips"] == ["34.82.0.0/16"]
    assert settings["cost_limit"] == {
        "amount": 25.0,
        "period": "monthly",
        "action": "warn",
    }
    assert settings["prices_per_hour"]["L40S"] == 3.5
    assert settings["trainer_model"] == "simpletuner/advanced-trainer"
    assert settings["publish"] == {
        "hub_model_id": None,
        "s3_bucket": None,
        "s3_prefix": "",
    }
    assert body["overridden"] == []


async def test_get_warns_without_a_public_url_and_on_plain_http(daemon_client):
    client = await daemon_client()
    body = await (await client.get(PROVIDER)).json()
    assert body["webhook_url"] is None
    assert any("public_url is not set" in w for w in body["warnings"])
    body = await (await put(client, {"public_url": "http://hooks.example.test"})).json()
    assert any("is not https" in w for w in body["warnings"])


async def test_allowlist_change_applies_to_the_next_webhook_without_restart(
    daemon_client, secret
):
    client = await daemon_client()
    assert (
        await post_webhook(client, secret, "provideraaaaaaaaaaaaaaaaa1")
    ).status == 200

    answer = await put(
        client, {"webhook_allowed_ips": ["34.82.0.0/16", "35.185.0.0/16"]}
    )
    assert answer.status == 200, await answer.text()
    refused = await post_webhook(client, secret, "provideraaaaaaaaaaaaaaaaa2")
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "forbidden_ip"

    assert (await put(client, {"webhook_allowed_ips": None})).status == 200
    assert (
        await post_webhook(client, secret, "provideraaaaaaaaaaaaaaaaa3")
    ).status == 200


async def test_bad_cidr_is_refused_with_422_naming_it_and_nothing_changes(
    daemon_client,
):
    client = await daemon_client(webhook__allowed_ips=["127.0.0.1/32"])
    answer = await put(
        client, {"webhook_allowed_ips": ["34.82.0.0/16", "10.0.0.300/8"]}
    )
    assert answer.status == 422
    error = (await answer.json())["error"]
    assert error["code"] == "invalid_setting"
    assert error["field"] == "webhook_allowed_ips"
    assert "10.0.0.300/8" in error["message"]
    body = await (await client.get(PROVIDER)).json()
    assert body["settings"]["webhook_allowed_ips"] == ["127.0.0.1/32"]
    assert body["overridden"] == []


async def test_each_invalid_field_is_named_in_the_refusal(daemon_client):
    client = await daemon_client()
    cases = {
        "trusted_proxies": {"trusted_proxies": ["not-an-address"]},
        "public_url": {"public_url": "ftp://example.test"},
        "client_ip_header": {"client_ip_header": "X Forwarded"},
        "trainer_model": {"trainer_model": "no-slash"},
        "cost_limit.amount": {"cost_limit": {"amount": -1}},
        "cost_limit.period": {"cost_limit": {"period": "hourly"}},
        "cost_limit.action": {"cost_limit": {"action": "explode"}},
        "cost_limit.amountt": {"cost_limit": {"amountt": 3}},
        "prices_per_hour": {"prices_per_hour": {"H100": "cheap"}},
        "publish.s3_bucket": {"publish": {"s3_bucket": "Not_A_Bucket"}},
        "publish.hub_model_id": {"publish": {"hub_model_id": "nope"}},
        "hf_token": {"hf_token": "hf_secretvalue123"},
    }
    for field, body in cases.items():
        answer = await put(client, body)
        assert answer.status == 422, (field, await answer.text())
        error = (await answer.json())["error"]
        assert error["field"] == field, error
        assert "hf_secretvalue123" not in error["message"]


async def test_a_body_that_is_not_a_settings_object_is_400(daemon_client):
    client = await daemon_client()
    for raw in (b"{not json", b"[1, 2]", b"{}", b'"text"'):
        answer = await client.put(
            PROVIDER, data=raw, headers={"Content-Type": "application/json"}
        )
        assert answer.status == 400, raw
        assert (await answer.json())["error"]["code"] in ("invalid_json", "bad_request")


async def test_trusted_proxy_change_changes_who_the_admin_api_sees(daemon_client):
    client = await daemon_client()
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    assert (await client.get("/api/jobs", headers=relayed)).status == 200
    answer = await put(client, {"trusted_proxies": ["127.0.0.1/32"]})
    assert answer.status == 200
    # The peer is now a trusted proxy, so the client is 203.0.113.9: not loopback.
    assert (await client.get("/api/jobs", headers=relayed)).status == 403
    assert (await client.get("/api/jobs")).status == 200


async def test_cost_limit_change_shows_in_billing_at_once(daemon_client):
    client = await daemon_client()
    answer = await put(
        client, {"cost_limit": {"amount": 40, "period": "daily", "action": "block"}}
    )
    assert answer.status == 200
    billing = await (await client.get("/api/cloud/replicate/billing")).json()
    assert billing["limit"] == {"amount": 40.0, "action": "block"}
    assert billing["period"]["name"] == "daily"


async def test_null_resets_one_key_of_an_object_field(daemon_client):
    client = await daemon_client(cost__limit_amount=10, cost__limit_action="warn")
    await put(client, {"cost_limit": {"amount": 99, "action": "block"}})
    body = await (await put(client, {"cost_limit": {"amount": None}})).json()
    assert body["settings"]["cost_limit"]["amount"] == 10.0
    assert body["settings"]["cost_limit"]["action"] == "block"
    assert body["overridden"] == ["cost_limit.action"]


async def test_settings_persist_across_a_restart_and_stay_out_of_secrets(
    daemon_process, tmp_path
):
    proc = daemon_process()
    change = {
        "public_url": "https://hooks.example.test",
        "webhook_allowed_ips": ["34.82.0.0/16"],
        "publish": {"s3_bucket": "trained-models", "s3_prefix": "runs/"},
    }
    answer = proc.request("PUT", PROVIDER, json.dumps(change).encode())
    assert answer.status == 200, answer.body
    proc.stop()

    proc = daemon_process()
    body = json.loads(proc.request("GET", PROVIDER).body)
    assert body["settings"]["public_url"] == "https://hooks.example.test"
    assert body["settings"]["webhook_allowed_ips"] == ["34.82.0.0/16"]
    assert body["settings"]["publish"]["s3_prefix"] == "runs/"
    proc.stop()

    with sqlite3.connect(tmp_path / "data" / "webhookd.sqlite3") as conn:
        keys = {row[0] for row in conn.execute("SELECT key FROM provider_settings")}
    assert keys == {
        "server.public_url",
        "webhook.allowed_ips",
        "s3.bucket",
        "s3.prefix",
    }
