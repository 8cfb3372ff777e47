"""/metrics through the real app on a loopback port, parsed as Prometheus reads it.

Each test sends real signed webhooks (or lets the real delivery workers run against
a loopback output server), scrapes /metrics and checks that the series moved by
exactly what happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import WEBHOOK_PATH, new_secret, payload_json, signed_headers

ADMIN_TOKEN = "metrics-admin-token-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def job_body(job_id: str, status: str = "starting", **fields: Any) -> bytes:
    return json.dumps({"id": job_id, "status": status, **fields}).encode()


def succeeded_body(job_id: str, url: str) -> bytes:
    body = payload_json("training_succeeded.json")
    body["id"] = job_id
    body["output"]["weights"] = url
    return json.dumps(body).encode()


async def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    answer = await client.get("/metrics", headers=headers)
    text = await answer.text()
    assert answer.status == 200, text
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def post(client: Any, secret: str, body: bytes, **kwargs: Any) -> Any:
    headers = signed_headers(secret, body, **kwargs)
    return await client.post(WEBHOOK_PATH, data=body, headers=headers)


async def wait_for(client: Any, name: str, expected: float, **labels: str) -> Samples:
    for _ in range(200):
        samples = await scrape(client)
        if value(samples, name, **labels) == expected:
            return samples
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}{labels} never reached {expected}: {samples}")


RECEIVED = "replicate_webhookd_webhooks_received_total"
DELIVERIES = "replicate_webhookd_deliveries_total"
QUEUE = "replicate_webhookd_delivery_queue_tasks"
OLDEST = "replicate_webhookd_delivery_queue_oldest_age_seconds"
LAST_VERIFIED = "replicate_webhookd_last_verified_webhook_age_seconds"
LATENCY_COUNT = "replicate_webhookd_http_request_duration_seconds_count"


async def test_webhook_outcomes_are_counted_by_outcome_and_reason(
    daemon_client, secret
):
    client = await daemon_client()
    body = job_body("metricsjob01")
    headers = signed_headers(secret, body)

    assert (await client.post(WEBHOOK_PATH, data=body, headers=headers)).status == 200
    assert (await client.post(WEBHOOK_PATH, data=body, headers=headers)).status == 200
    forged = await post(client, new_secret(), job_body("metricsjob02"))
    assert forged.status == 401
    stale = await post(client, secret, job_body("metricsjob03"), timestamp=1)
    assert stale.status == 401

    samples = await scrape(client)
    assert value(samples, RECEIVED, outcome="accepted", reason="created") == 1
    assert value(samples, RECEIVED, outcome="duplicate", reason="webhook_id_seen") == 1
    rejected = {"invalid_signature": 1, "stale_timestamp": 1}
    for reason, count in rejected.items():
        assert value(samples, RECEIVED, outcome="rejected", reason=reason) == count
    received = [key for key in samples if key[0] == RECEIVED]
    assert len(received) == 4, received


async def test_a_repeated_delivery_moves_only_the_duplicate_series(
    daemon_client, secret
):
    client = await daemon_client()
    body = job_body("metricsjob04")
    headers = signed_headers(secret, body)
    await client.post(WEBHOOK_PATH, data=body, headers=headers)
    before = await scrape(client)

    again = await client.post(WEBHOOK_PATH, data=body, headers=headers)

    assert (await again.json())["duplicate"] is True
    after = await scrape(client)
    assert value(after, RECEIVED, outcome="accepted", reason="created") == 1
    assert (
        value(before, RECEIVED, outcome="duplicate", reason="webhook_id_seen") is None
    )
    assert value(after, RECEIVED, outcome="duplicate", reason="webhook_id_seen") == 1


async def test_jobs_are_counted_by_status_at_scrape_time(daemon_client, secret):
    client = await daemon_client()
    empty = await scrape(client)
    for status in ("starting", "processing", "succeeded", "failed", "canceled"):
        assert value(empty, "replicate_webhookd_jobs", status=status) == 0

    await post(client, secret, job_body("metricsjob05", "processing"))
    await post(client, secret, job_body("metricsjob06", "processing"))
    await post(client, secret, job_body("metricsjob07", "failed"))

    samples = await scrape(client)
    assert value(samples, "replicate_webhookd_jobs", status="processing") == 2
    assert value(samples, "replicate_webhookd_jobs", status="failed") == 1
    assert value(samples, "replicate_webhookd_jobs", status="starting") == 0


async def test_last_verified_webhook_age_appears_only_after_a_good_signature(
    daemon_client, secret
):
    client = await daemon_client()
    await post(client, new_secret(), job_body("metricsjob08"))
    assert value(await scrape(client), LAST_VERIFIED) is None

    started = time.monotonic()
    await post(client, secret, job_body("metricsjob08"))
    await asyncio.sleep(0.3)

    age = value(await scrape(client), LAST_VERIFIED)
    assert age is not None
    assert 0.2 <= age <= time.monotonic() - started + 0.1


async def test_request_latency_is_labelled_by_route_template_not_raw_path(
    daemon_client,
):
    client = await daemon_client()
    for job_id in ("nosuchjob1", "nosuchjob2", "nosuchjob3"):
        assert (await client.get(f"/api/jobs/{job_id}")).status == 404
    assert (await client.get("/no/such/path/1")).status == 404
    assert (await client.get("/no/such/path/2")).status == 404
    assert (await client.request("PROPFIND", "/healthz")).status == 405

    samples = await scrape(client)
    assert value(samples, LATENCY_COUNT, route="/api/jobs/{job_id}", method="GET") == 3
    assert value(samples, LATENCY_COUNT, route="unmatched", method="GET") == 2
    assert value(samples, LATENCY_COUNT, route="unmatched", method="other") == 1
    routes = {
        dict(labels)["route"] for name, labels in samples if name == LATENCY_COUNT
    }
    assert not any("nosuch" in route for route in routes), routes


async def test_retried_delivery_shows_in_queue_depth_and_oldest_task_age(
    daemon_client, make_settings, secret, output_server, tmp_path
):
    url = output_server.add(b"weights")
    output_server.fail(url, times=1, status=503)
    settings = make_settings(
        env=output_server.env(),
        server__outputs_dir=str(tmp_path / "outputs"),
        delivery__backoff_base_s=600,  # the retry stays queued during the test
    )
    client = await daemon_client(settings)
    assert value(await scrape(client), OLDEST) == 0
    queued_at = time.time()

    await post(client, secret, succeeded_body("metricsjob09", url))

    samples = await wait_for(
        client, DELIVERIES, 1, destination="local", outcome="retried"
    )
    assert value(samples, QUEUE, destination="local", state="queued") == 1
    assert value(samples, QUEUE, destination="local", state="running") == 0
    oldest = value(samples, OLDEST)
    assert oldest is not None
    assert 0 < oldest <= time.time() - queued_at
    assert value(samples, DELIVERIES, destination="local", outcome="succeeded") is None


async def test_delivery_outcomes_are_counted_by_destination(
    daemon_client, make_settings, secret, output_server, tmp_path
):
    url = output_server.add(b"weights")
    output_server.fail(url, times=1, status=503)
    settings = make_settings(
        env=output_server.env(),
        server__outputs_dir=str(tmp_path / "outputs"),
        delivery__backoff_base_s=0.05,
    )
    client = await daemon_client(settings)

    await post(client, secret, succeeded_body("metricsjob10", url))
    blocked = "https://not-an-allowed-host.invalid/weights.tar"
    await post(client, secret, succeeded_body("metricsjob11", blocked))

    await wait_for(client, DELIVERIES, 1, destination="local", outcome="succeeded")
    samples = await wait_for(
        client, DELIVERIES, 1, destination="local", outcome="failed"
    )
    assert value(samples, DELIVERIES, destination="local", outcome="retried") == 1
    assert value(samples, QUEUE, destination="local", state="queued") == 0
    assert value(samples, OLDEST) == 0
    assert value(samples, "replicate_webhookd_jobs", status="succeeded") == 2


async def test_metrics_need_the_admin_token_when_one_is_set(daemon_client):
    client = await daemon_client(env={"REPLICATE_WEBHOOKD_ADMIN_TOKEN": ADMIN_TOKEN})

    bare = await client.get("/metrics")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})

    assert bare.status == 401
    assert (await bare.json())["error"]["code"] == "unauthorized"
    assert wrong.status == 401
    samples = await scrape(client, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert value(samples, "replicate_webhookd_jobs", status="succeeded") == 0


async def test_metrics_without_a_token_answer_loopback_clients_only(daemon_client):
    # The test client is 127.0.0.1, a trusted proxy relaying for an outside client.
    client = await daemon_client(webhook__trusted_proxies="127.0.0.1")

    outside = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    inside = await client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})

    assert outside.status == 403
    assert (await outside.json())["error"]["code"] == "forbidden"
    assert inside.status == 200


async def test_each_app_counts_into_its_own_registry(daemon_client, secret, tmp_path):
    first = await daemon_client()
    second = await daemon_client(server__data_dir=str(tmp_path / "second"))

    await post(first, secret, job_body("metricsjob12"))

    mine, theirs = await scrape(first), await scrape(second)
    assert value(mine, RECEIVED, outcome="accepted", reason="created") == 1
    assert value(theirs, RECEIVED, outcome="accepted", reason="created") is None
    assert value(theirs, "replicate_webhookd_jobs", status="starting") == 0
