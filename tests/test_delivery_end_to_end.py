"""The whole delivery path through the daemon: a succeeded job's output ends up on
the local disk, in S3 (moto) and in a Hub repository (local fake Hub), with the
right bytes everywhere, and the local copy can be removed once all have it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any

import boto3

from tests.fakes.hub import TOKEN
from tests.helpers import WEBHOOK_PATH, payload_json, signed_headers

BUCKET = "trained-models"
REPO = "alice/flux-lora"


async def wait_for_deliveries(client: Any, job_id: str, count: int) -> list[dict]:
    for _ in range(300):
        answer = await client.get(f"/api/deliveries?job_id={job_id}")
        tasks = (await answer.json())["deliveries"]
        if len(tasks) == count and all(t["finished_at"] for t in tasks):
            return tasks
        await asyncio.sleep(0.1)
    raise AssertionError(f"deliveries did not finish: {tasks}")


def succeeded_body(url: str) -> bytes:
    body = payload_json("training_succeeded.json")
    body["output"]["weights"] = url
    return json.dumps(body).encode()


async def post_succeeded(client: Any, secret: str, url: str) -> str:
    """Post a signed succeeded training whose weights are at `url`; its job id."""
    body = succeeded_body(url)
    response = await client.post(
        WEBHOOK_PATH, data=body, headers=signed_headers(secret, body)
    )
    assert response.status == 200, await response.text()
    return str((await response.json())["job_id"])


def bucket_in(endpoint: str) -> Any:
    """An S3 client for moto at `endpoint`, with BUCKET created."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    return s3


async def test_succeeded_job_reaches_disk_s3_and_hub_with_the_same_bytes(
    daemon_client, make_settings, secret, output_server, moto_s3, fake_hub, tmp_path
):
    weights = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(weights).hexdigest()
    url = output_server.add(weights)
    s3 = bucket_in(moto_s3)
    settings = make_settings(
        env={**output_server.env(), "HF_TOKEN": TOKEN},
        server__outputs_dir=str(tmp_path / "outputs"),
        delivery__backoff_base_s=0.05,
        s3__bucket=BUCKET,
        s3__endpoint_url=moto_s3,
        hub__model_id=REPO,
    )
    client = await daemon_client(settings)
    job_id = await post_succeeded(client, secret, url)
    tasks = await wait_for_deliveries(client, job_id, 3)

    assert {t["destination"]: t["state"] for t in tasks} == {
        "local": "succeeded",
        "s3": "succeeded",
        "hub": "succeeded",
    }
    local = tmp_path / "outputs" / job_id / "trained_model.tar"
    assert hashlib.sha256(local.read_bytes()).hexdigest() == digest
    stored = s3.get_object(Bucket=BUCKET, Key=f"{job_id}/trained_model.tar")
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == digest
    repo = fake_hub.repos[REPO]
    assert repo.private
    assert len(repo.commits) == 1
    assert job_id in repo.commits[0].message
    assert repo.files["trained_model.tar"].sha256 == digest
    job = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert job["files"][0]["sha256"] == digest


async def test_terminal_event_repeated_queues_each_destination_once(
    daemon_client, make_settings, secret, output_server, moto_s3, fake_hub, tmp_path
):
    url = output_server.add(b"weights" * 1000)
    bucket_in(moto_s3)
    settings = make_settings(
        env={**output_server.env(), "HF_TOKEN": TOKEN},
        server__outputs_dir=str(tmp_path / "outputs"),
        s3__bucket=BUCKET,
        s3__endpoint_url=moto_s3,
        hub__model_id=REPO,
    )
    client = await daemon_client(settings)
    for _ in range(3):  # retries of the terminal webhook arrive as new messages too
        job_id = await post_succeeded(client, secret, url)
    tasks = await wait_for_deliveries(client, job_id, 3)
    assert sorted(t["destination"] for t in tasks) == ["hub", "local", "s3"]
    assert len(fake_hub.repos[REPO].commits) == 1


async def test_local_copy_is_removed_only_after_every_publisher_succeeded(
    daemon_client, make_settings, secret, output_server, moto_s3, tmp_path
):
    url = output_server.add(b"model bytes" * 5000)
    bucket_in(moto_s3)
    settings = make_settings(
        env=output_server.env(),
        server__outputs_dir=str(tmp_path / "outputs"),
        s3__bucket=BUCKET,
        s3__endpoint_url=moto_s3,
        delivery__delete_local_after_publish=True,
    )
    client = await daemon_client(settings)
    job_id = await post_succeeded(client, secret, url)
    tasks = await wait_for_deliveries(client, job_id, 2)
    assert all(t["state"] == "succeeded" for t in tasks)
    for _ in range(50):
        if not (tmp_path / "outputs" / job_id).exists():
            break
        await asyncio.sleep(0.1)
    assert not (tmp_path / "outputs" / job_id).exists()


async def test_publishers_fail_with_the_local_copy_and_come_back_with_its_retry(
    daemon_client, make_settings, secret, output_server, moto_s3, tmp_path
):
    url = output_server.add(b"x" * 10)
    output_server.fail(url, times=1, status=403)
    bucket_in(moto_s3)
    settings = make_settings(
        env=output_server.env(),
        server__outputs_dir=str(tmp_path / "outputs"),
        s3__bucket=BUCKET,
        s3__endpoint_url=moto_s3,
    )
    client = await daemon_client(settings)
    job_id = await post_succeeded(client, secret, url)
    tasks = {t["destination"]: t for t in await wait_for_deliveries(client, job_id, 2)}
    assert tasks["local"]["state"] == "failed"
    assert tasks["s3"]["reason"] == "local_copy_failed"

    again = await client.post(f"/api/deliveries/{tasks['local']['id']}/retry")
    assert again.status == 200
    for _ in range(100):
        answer = await client.get(f"/api/deliveries?job_id={job_id}")
        states = {
            t["destination"]: t["state"] for t in (await answer.json())["deliveries"]
        }
        if states == {"local": "succeeded", "s3": "succeeded"}:
            break
        await asyncio.sleep(0.1)
    assert states == {"local": "succeeded", "s3": "succeeded"}


async def test_s3_target_set_through_provider_settings_applies_without_restart(
    daemon_client, make_settings, secret, output_server, moto_s3, tmp_path
):
    weights = os.urandom(64 * 1024)
    url = output_server.add(weights)
    s3 = bucket_in(moto_s3)
    settings = make_settings(
        env=output_server.env(),
        server__outputs_dir=str(tmp_path / "outputs"),
        delivery__backoff_base_s=0.05,
        s3__endpoint_url=moto_s3,  # the endpoint is configured, no bucket yet
    )
    client = await daemon_client(settings)
    change = {"publish": {"s3_bucket": BUCKET, "s3_prefix": "runs/"}}
    answer = await client.put("/api/cloud/providers/replicate", json=change)
    assert answer.status == 200, await answer.text()

    job_id = await post_succeeded(client, secret, url)
    tasks = await wait_for_deliveries(client, job_id, 2)

    assert {t["destination"]: t["state"] for t in tasks} == {
        "local": "succeeded",
        "s3": "succeeded",
    }
    stored = s3.get_object(Bucket=BUCKET, Key=f"runs/{job_id}/trained_model.tar")
    assert stored["Body"].read() == weights
