"""Reconciliation: jobs whose webhooks were lost still reach their final state, and a
succeeded one still gets its outputs delivered; polling is idempotent, optional,
and survives Replicate's errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tests.fakes.replicate import training
from tests.helpers import WEBHOOK_PATH, eventually, signed_headers

JOB = "medrnz3bm5dd6ultvad2tejrte"
FAST = {"replicate__reconcile_interval_s": 0.1}


async def post_processing_webhook(client: Any, secret: str, fake: Any) -> None:
    """The job starts as Replicate says; the fake keeps answering the same."""
    body = training(JOB, "processing")
    fake.trainings[JOB] = body
    raw = json.dumps(body).encode()
    answer = await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )
    assert answer.status == 200, await answer.text()


async def job_of(client: Any) -> dict[str, Any]:
    return await (await client.get(f"/api/jobs/{JOB}")).json()


async def test_job_whose_webhooks_were_lost_ends_succeeded_with_outputs_delivered(
    daemon_client,
    make_settings,
    secret,
    fake_replicate,
    output_server,
    tmp_path,
    caplog,
):
    caplog.set_level("DEBUG")
    weights = os.urandom(256 * 1024)
    url = output_server.add(weights)
    settings = make_settings(
        env={**fake_replicate.env(), **output_server.env()},
        server__outputs_dir=str(tmp_path / "outputs"),
        **FAST,
    )
    client = await daemon_client(settings)
    await post_processing_webhook(client, secret, fake_replicate)

    # Every later webhook is lost; only the API knows the job finished.
    fake_replicate.trainings[JOB] = training(JOB, "succeeded", output={"weights": url})

    async def delivered() -> list[dict[str, Any]]:
        answer = await client.get(f"/api/deliveries?job_id={JOB}")
        tasks = (await answer.json())["deliveries"]
        return [t for t in tasks if t["state"] == "succeeded"]

    tasks = await eventually(delivered, "the local delivery")
    assert [t["destination"] for t in tasks] == ["local"]
    job = await job_of(client)
    assert job["status"] == "succeeded"
    polls = [h for h in job["history"] if h["webhook_id"].startswith("poll:")]
    assert polls[-1]["status"] == "succeeded"
    assert polls[-1]["signature"] == "poll"
    local = tmp_path / "outputs" / JOB / "trained_model.tar"
    assert (
        hashlib.sha256(local.read_bytes()).digest() == hashlib.sha256(weights).digest()
    )
    assert f"job {JOB}: processing -> succeeded (reconciliation)" in caplog.text

    # The token is in no log line and nowhere in the database files.
    assert fake_replicate.token not in caplog.text
    for path in Path(settings.data_dir).iterdir():
        if path.is_file():
            assert fake_replicate.token.encode() not in path.read_bytes(), path


async def test_unchanged_poll_is_recorded_once(daemon_client, secret, fake_replicate):
    client = await daemon_client(env=fake_replicate.env(), **FAST)
    await post_processing_webhook(client, secret, fake_replicate)

    async def polled_thrice() -> bool:
        return len(fake_replicate.calls(f"/trainings/{JOB}")) >= 3

    await eventually(polled_thrice, "three polls")
    job = await job_of(client)
    polls = [h for h in job["history"] if h["webhook_id"].startswith("poll:")]
    assert len(polls) == 1
    assert job["status"] == "processing"


async def test_get_url_outside_the_api_base_is_not_polled_there(
    daemon_client, secret, fake_replicate
):
    # The stored urls.get points at api.replicate.com: the id is polled at the
    # configured base instead, so tests and proxies never reach the real API.
    client = await daemon_client(env=fake_replicate.env(), **FAST)
    await post_processing_webhook(client, secret, fake_replicate)
    assert "api.replicate.com" in fake_replicate.trainings[JOB]["urls"]["get"]

    async def polled() -> bool:
        return bool(fake_replicate.calls(f"/v1/trainings/{JOB}"))

    await eventually(polled, "a poll at the fake")


async def test_prediction_is_polled_when_no_training_has_the_id(
    daemon_client, secret, fake_replicate
):
    client = await daemon_client(env=fake_replicate.env(), **FAST)
    await post_processing_webhook(client, secret, fake_replicate)
    del fake_replicate.trainings[JOB]
    fake_replicate.predictions[JOB] = training(JOB, "failed", error="out of memory")

    async def failed() -> bool:
        return (await job_of(client))["status"] == "failed"

    await eventually(failed, "the failed status")
    assert fake_replicate.calls(f"/v1/predictions/{JOB}")


async def test_reconciliation_is_off_without_a_token(
    daemon_client, secret, fake_replicate, caplog
):
    caplog.set_level("INFO")
    client = await daemon_client(env={"REPLICATE_API_BASE": fake_replicate.url}, **FAST)
    await post_processing_webhook(client, secret, fake_replicate)
    await asyncio.sleep(0.5)
    assert fake_replicate.requests == []
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("reconciliation off: REPLICATE_API_TOKEN not set") == 1


async def test_failed_poll_is_logged_once_per_cycle_and_the_loop_goes_on(
    daemon_client, secret, fake_replicate, caplog
):
    caplog.set_level("WARNING")
    client = await daemon_client(env=fake_replicate.env(), **FAST)
    await post_processing_webhook(client, secret, fake_replicate)
    fake_replicate.fail("trainings", 402)  # not retried: one failed cycle
    fake_replicate.trainings[JOB] = training(JOB, "canceled")

    async def canceled() -> bool:
        return (await job_of(client))["status"] == "canceled"

    await eventually(canceled, "the canceled status")
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "daemon.replicate.reconcile"
    ]
    assert warnings == [
        f"reconciliation: 1 job(s) could not be polled (last: job {JOB}: "
        "fake: no credit left)"
    ]
