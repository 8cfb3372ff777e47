"""POST /api/cloud/replicate/submit against the fake Replicate API: the training is
created with the right webhook and inputs, the daemon follows it to the end by
webhooks (or by polling alone when they are lost), and the dataset, idempotency,
secrets and Replicate's refusals are handled as documented."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from daemon.replicate.submit import Submitter
from tests.fakes.hub import TOKEN as HF_TOKEN
from tests.helpers import eventually

SUBMIT = "/api/cloud/replicate/submit"
MODEL = "simpletuner/advanced-trainer"
DESTINATION = "alice/flux-lora"
CONFIG = {"--model_family": "flux", "--learning_rate": 1e-4, "--max_train_steps": 10}
DATALOADER = [{"id": "images", "type": "local", "instance_data_dir": "/data/images"}]
FAST = {"replicate__reconcile_interval_s": 0.1}


def request_body(**changes: Any) -> dict[str, Any]:
    body = {
        "config": CONFIG,
        "dataloader": DATALOADER,
        "destination": DESTINATION,
        "hardware": "L40S",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def make_dataset(folder: Path, outside: Path) -> Path:
    folder.mkdir()
    (folder / "a.png").write_bytes(os.urandom(2048))
    (folder / "a.txt").write_text("a photo of sks dog")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.jpg").write_bytes(os.urandom(4096))
    (folder / ".env").write_text("HF_TOKEN=hf_leak")
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("[core]")
    (folder / "server.key").write_text("-----BEGIN PRIVATE KEY-----")
    outside.write_text("not part of the dataset")
    (folder / "escape.txt").symlink_to(outside)
    (folder / "inside.txt").symlink_to(folder / "a.txt")
    return folder


async def start(daemon_client, make_settings, fake, *, env=None, **overrides):
    fake.add_versions(MODEL, 3)
    settings = make_settings(
        env={**fake.env(), "REPLICATE_WEBHOOK_SECRET": "", **(env or {})},
        **{**FAST, **overrides},
    )
    return await daemon_client(settings)


async def start_with_outputs(
    daemon_client, make_settings, fake, output_server, tmp_path
) -> Any:
    return await start(
        daemon_client,
        make_settings,
        fake,
        env=output_server.env(),
        server__outputs_dir=str(tmp_path / "outputs"),
    )


async def set_public_url(client: Any) -> str:
    base = str(client.make_url("/")).rstrip("/")
    answer = await client.put(
        "/api/cloud/providers/replicate", json={"public_url": base}
    )
    assert answer.status == 200, await answer.text()
    return base


async def job_status(client: Any, job_id: str) -> str:
    return (await (await client.get(f"/api/jobs/{job_id}")).json())["status"]


async def test_submitted_training_is_followed_by_webhooks_to_delivered_outputs(
    daemon_client, make_settings, fake_replicate, output_server, tmp_path
):
    weights = os.urandom(128 * 1024)
    url = output_server.add(weights)
    client = await start_with_outputs(
        daemon_client, make_settings, fake_replicate, output_server, tmp_path
    )
    base = await set_public_url(client)
    dataset = make_dataset(tmp_path / "dataset", tmp_path / "secret-outside.txt")

    answer = await client.post(SUBMIT, json=request_body(dataset=str(dataset)))
    assert answer.status == 201, await answer.text()
    body = await answer.json()
    job_id = body["job_id"]
    assert body["version"] == f"{0:064x}"  # "latest": the newest version
    assert body["webhook_url"] == base + "/api/webhooks/replicate"
    assert {s["path"]: s["reason"] for s in body["skipped"]} == {
        ".env": "hidden file",
        ".git": "hidden directory",
        "server.key": "key or certificate file",
        "escape.txt": "link leading outside the dataset",
    }

    (created,) = fake_replicate.created
    assert created["webhook"] == base + "/api/webhooks/replicate"
    assert created["webhook_events_filter"] == ["start", "output", "logs", "completed"]
    assert created["destination"] == DESTINATION
    assert json.loads(created["input"]["config_json"]) == CONFIG
    assert json.loads(created["input"]["dataloader_json"]) == DATALOADER
    (upload,) = fake_replicate.files.values()
    assert created["input"]["images"].endswith(
        "/files/" + next(iter(fake_replicate.files))
    )
    with zipfile.ZipFile(upload.path) as archive:
        assert sorted(archive.namelist()) == [
            "a.png",
            "a.txt",
            "inside.txt",
            "sub/b.jpg",
        ]
    assert await job_status(client, job_id) == "starting"

    assert await fake_replicate.advance(job_id, "start", status="processing") == 200
    logs = "step 1/10\nstep 2/10\n"
    assert await fake_replicate.advance(job_id, "logs", logs=logs) == 200
    output = {"version": f"{DESTINATION}:{'f' * 64}", "weights": url}
    status = await fake_replicate.advance(
        job_id,
        "completed",
        status="succeeded",
        output=output,
        metrics={"predict_time": 600.0},
        logs=logs + "done\n",
    )
    assert status == 200

    async def delivered() -> bool:
        answer = await client.get(f"/api/deliveries?job_id={job_id}")
        tasks = (await answer.json())["deliveries"]
        return bool(tasks) and tasks[0]["state"] == "succeeded"

    await eventually(delivered, "the local delivery")
    job = await (await client.get(f"/api/jobs/{job_id}")).json()
    assert job["status"] == "succeeded"
    assert job["cost"] == pytest.approx(600 * 3.5 / 3600, abs=1e-4)
    logs_answer = await (await client.get(f"/api/jobs/{job_id}/logs")).text()
    assert "done" in logs_answer
    saved = tmp_path / "outputs" / job_id / "weights"
    files = list(saved.parent.iterdir())
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == [
        hashlib.sha256(weights).hexdigest()
    ]
    assert not list((tmp_path / "data" / "uploads").glob("*"))  # temp zip removed


async def test_training_whose_webhooks_are_all_lost_is_followed_by_polling_alone(
    daemon_client, make_settings, fake_replicate, output_server, tmp_path
):
    weights = os.urandom(64 * 1024)
    url = output_server.add(weights)
    fake_replicate.drop_webhooks = True
    client = await start_with_outputs(
        daemon_client, make_settings, fake_replicate, output_server, tmp_path
    )
    await set_public_url(client)
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 201, await answer.text()
    job_id = (await answer.json())["job_id"]

    await fake_replicate.advance(job_id, "start", status="processing")

    async def processing() -> bool:
        return await job_status(client, job_id) == "processing"

    await eventually(processing, "processing by polling")
    output = {"version": f"{DESTINATION}:{'e' * 64}", "weights": url}
    await fake_replicate.advance(job_id, "completed", status="succeeded", output=output)

    async def delivered() -> bool:
        answer = await client.get(f"/api/deliveries?job_id={job_id}")
        tasks = (await answer.json())["deliveries"]
        return bool(tasks) and tasks[0]["state"] == "succeeded"

    await eventually(delivered, "outputs delivered after polling")
    assert fake_replicate.sent == []  # not one webhook reached the daemon


async def test_submit_without_public_url_sends_no_webhook_and_warns(
    daemon_client, make_settings, fake_replicate
):
    client = await start(daemon_client, make_settings, fake_replicate)
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 201
    body = await answer.json()
    assert body["webhook_url"] is None
    assert any("public_url is not set" in w for w in body["warnings"])
    (created,) = fake_replicate.created
    assert "webhook" not in created
    assert "webhook_events_filter" not in created


async def test_same_idempotency_key_returns_the_same_job_and_creates_one_training(
    daemon_client, make_settings, fake_replicate
):
    client = await start(daemon_client, make_settings, fake_replicate)
    body = request_body(idempotency_key="run-2026-12-04-a")
    first = await client.post(SUBMIT, json=body)
    again = await client.post(SUBMIT, json=body)
    assert first.status == 201
    assert again.status == 200
    assert (await again.json())["job_id"] == (await first.json())["job_id"]
    assert (await again.json())["replayed"] is True
    assert len(fake_replicate.created) == 1

    other = await client.post(
        SUBMIT, json={**body, "config": {**CONFIG, "--learning_rate": 2e-4}}
    )
    assert other.status == 422
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"
    assert len(fake_replicate.created) == 1


async def test_config_credentials_are_refused_and_hf_token_is_a_secret_input(
    daemon_client, make_settings, fake_replicate, tmp_path, caplog
):
    caplog.set_level("DEBUG")
    client = await start(
        daemon_client, make_settings, fake_replicate, env={"HF_TOKEN": HF_TOKEN}
    )
    leaky = {**CONFIG, "--hub_token": "hf_inconfig0123456789"}
    answer = await client.post(SUBMIT, json=request_body(config=leaky))
    assert answer.status == 422
    error = (await answer.json())["error"]
    assert error["field"] == "config.--hub_token"
    assert "hf_inconfig0123456789" not in error["message"]
    assert fake_replicate.created == []

    answer = await client.post(SUBMIT, json=request_body(hub_model_id="alice/lora"))
    assert answer.status == 201, await answer.text()
    (created,) = fake_replicate.created
    assert created["input"]["hf_token"] == HF_TOKEN
    assert created["input"]["hub_model_id"] == "alice/lora"
    assert HF_TOKEN not in created["input"]["config_json"]

    database = (tmp_path / "data" / "webhookd.sqlite3").read_bytes()
    for secret in (HF_TOKEN, fake_replicate.token, "hf_inconfig0123456789"):
        assert secret.encode() not in database
        assert secret not in caplog.text


async def test_each_bad_field_is_refused_with_422_naming_it(
    daemon_client, make_settings, fake_replicate, tmp_path
):
    client = await start(daemon_client, make_settings, fake_replicate)
    cases = {
        "config": request_body(config=[]),
        "dataloader": request_body(dataloader={}),
        "lycoris": request_body(lycoris="text"),
        "destination": request_body(destination="no-slash"),
        "hardware": request_body(hardware="TPU v9"),
        "version": request_body(version="not a version!"),
        "dataset": request_body(dataset="relative/path"),
        "max_train_steps": request_body(max_train_steps=0),
        "hub_model_id": request_body(hub_model_id="alice/lora"),  # no HF_TOKEN
        "idempotency_key": request_body(idempotency_key="has spaces"),
        "surprise": request_body(surprise=1),
    }
    for field, body in cases.items():
        answer = await client.post(SUBMIT, json=body)
        assert answer.status == 422, (field, await answer.text())
        assert (await answer.json())["error"]["field"] == field
    missing = tmp_path / "nowhere"
    answer = await client.post(SUBMIT, json=request_body(dataset=str(missing)))
    assert answer.status == 422
    assert "no such file or directory" in (await answer.json())["error"]["message"]
    bad = await client.post(SUBMIT, data=b"{oops", headers={"Content-Type": "x"})
    assert bad.status == 400
    assert fake_replicate.created == []


async def test_replicate_refusals_map_to_precise_statuses(
    daemon_client, make_settings, fake_replicate, tmp_path
):
    client = await start(daemon_client, make_settings, fake_replicate)
    fake_replicate.destinations = {"alice/other"}
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 422
    assert "destination does not exist" in (await answer.json())["error"]["message"]

    fake_replicate.destinations = None
    fake_replicate.fail("trainings_create", 402)
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 402
    billing = await (await client.get("/api/cloud/replicate/billing")).json()
    assert billing["last_insufficient_credit"]["detail"] == "fake: no credit left"

    fake_replicate.fail("trainings_create", 429, times=10, retry_after="0")
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 503

    with sqlite3.connect(tmp_path / "data" / "webhookd.sqlite3") as conn:
        states = [row[0] for row in conn.execute("SELECT state FROM submissions")]
    assert states == ["failed", "failed", "failed"]


async def test_unconfirmed_create_is_linked_later_by_reconciliation(
    daemon_client, make_settings, fake_replicate, aiohttp_client
):
    from daemon.appkeys import SUBMITTER

    client = await start(daemon_client, make_settings, fake_replicate)
    submitter: Submitter = client.app[SUBMITTER]
    submitter.orphan_after_s = 0.0
    fake_replicate.lose_create_answer = True
    answer = await client.post(SUBMIT, json=request_body(idempotency_key="lost-1"))
    assert answer.status == 502
    error = (await answer.json())["error"]
    assert error["code"] == "replicate_unconfirmed"
    (job_id,) = fake_replicate.trainings

    async def linked() -> bool:
        again = await client.post(SUBMIT, json=request_body(idempotency_key="lost-1"))
        return again.status == 200 and (await again.json())["job_id"] == job_id

    await eventually(linked, "the lost training linked to its submission")
    assert await job_status(client, job_id) == "starting"
    assert len(fake_replicate.created) == 1


async def test_missing_token_is_503_before_anything_is_recorded(
    daemon_client, make_settings, tmp_path
):
    client = await daemon_client(make_settings())
    answer = await client.post(SUBMIT, json=request_body())
    assert answer.status == 503
    assert (await answer.json())["error"]["message"] == "REPLICATE_API_TOKEN not set"
    with sqlite3.connect(tmp_path / "data" / "webhookd.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM submissions").fetchone() == (0,)
