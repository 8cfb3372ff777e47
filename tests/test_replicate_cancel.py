"""Cancelling a job: POST /api/jobs/{id}/cancel and `replicate-webhookd cancel`
against the fake Replicate API; Replicate's answer goes through the webhook state
machine, and nothing is sent or changed when the job cannot be cancelled."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.fakes.replicate import training
from tests.helpers import WEBHOOK_PATH, cli_env, run_cli, signed_headers

JOB = "c4nc3lm3bm5dd6ultvad2tejrt"


async def record(client: Any, secret: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    answer = await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )
    assert answer.status == 200, await answer.text()


async def running_job(daemon_client: Any, secret: str, fake: Any, **kwargs: Any) -> Any:
    """A daemon with JOB recorded as processing, and Replicate knowing it as a
    training."""
    client = await daemon_client(env=fake.env(), **kwargs)
    fake.trainings[JOB] = training(JOB, "processing")
    await record(client, secret, fake.trainings[JOB])
    return client


def cancel_calls(fake: Any) -> list[Any]:
    return [seen for seen in fake.requests if seen.path.endswith("/cancel")]


async def test_cancel_of_running_job_ends_canceled_and_history_shows_it(
    daemon_client, secret, fake_replicate, caplog
):
    caplog.set_level("INFO")
    client = await running_job(daemon_client, secret, fake_replicate)

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 200, await answer.text()
    job = await answer.json()
    assert job["id"] == JOB
    assert job["status"] == "canceled"
    # The start-up poll may land on either side of the cancel under load.
    (entry,) = [h for h in job["history"] if h["webhook_id"].startswith("cancel:")]
    assert entry["webhook_id"].startswith(f"cancel:{JOB}:")
    assert (entry["signature"], entry["status"]) == ("cancel", "canceled")
    assert [(s.method, s.path) for s in cancel_calls(fake_replicate)] == [
        ("POST", f"/v1/trainings/{JOB}/cancel")
    ]
    stored = await (await client.get(f"/api/jobs/{JOB}")).json()
    assert stored["status"] == "canceled"
    assert f"job {JOB}: processing -> canceled (cancel requested)" in caplog.text


async def test_cancel_of_finished_job_answers_409_and_sends_nothing(
    daemon_client, secret, fake_replicate
):
    client = await daemon_client(env=fake_replicate.env())
    await record(client, secret, training(JOB, "succeeded"))

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 409
    assert await answer.json() == {
        "error": {"code": "job_finished", "message": f"job {JOB} is already succeeded"}
    }
    assert cancel_calls(fake_replicate) == []


async def test_cancel_of_unknown_job_answers_404_and_sends_nothing(
    daemon_client, fake_replicate
):
    client = await daemon_client(env=fake_replicate.env())

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 404
    error = (await answer.json())["error"]
    assert error == {"code": "job_not_found", "message": f"no job with id {JOB!r}"}
    assert cancel_calls(fake_replicate) == []


async def test_cancel_goes_to_the_prediction_when_no_training_has_the_id(
    daemon_client, secret, fake_replicate
):
    client = await running_job(daemon_client, secret, fake_replicate)
    fake_replicate.predictions[JOB] = fake_replicate.trainings.pop(JOB)

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 200, await answer.text()
    assert (await answer.json())["status"] == "canceled"
    assert [s.path for s in cancel_calls(fake_replicate)] == [
        f"/v1/trainings/{JOB}/cancel",
        f"/v1/predictions/{JOB}/cancel",
    ]


async def test_cancel_unknown_to_replicate_answers_502_and_leaves_the_job_running(
    daemon_client, secret, fake_replicate
):
    client = await running_job(daemon_client, secret, fake_replicate)
    del fake_replicate.trainings[JOB]

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 502
    error = (await answer.json())["error"]
    assert error["code"] == "replicate_job_not_found"
    assert "no training or prediction" in error["message"]
    assert len(cancel_calls(fake_replicate)) == 2
    job = await (await client.get(f"/api/jobs/{JOB}")).json()
    assert job["status"] == "processing"
    assert not any(h["webhook_id"].startswith("cancel:") for h in job["history"])


async def test_cancel_with_refused_token_answers_401_with_hints(
    daemon_client, secret, fake_replicate
):
    client = await running_job(daemon_client, secret, fake_replicate)
    fake_replicate.token = "r8_" + "x" * 37  # the daemon's token is now refused

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 401
    error = (await answer.json())["error"]
    assert error["code"] == "replicate_invalid_token"
    assert error["message"].startswith("Invalid token")
    job = await (await client.get(f"/api/jobs/{JOB}")).json()
    assert job["status"] == "processing"


async def test_cancel_without_token_answers_503_and_sends_nothing(
    daemon_client, secret, fake_replicate
):
    client = await daemon_client(env={"REPLICATE_API_BASE": fake_replicate.url})
    await record(client, secret, training(JOB, "processing"))

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 503
    assert (await answer.json())["error"]["code"] == "replicate_token_missing"
    assert fake_replicate.requests == []


async def test_cancel_server_error_from_replicate_answers_502_unchanged(
    daemon_client, secret, fake_replicate
):
    client = await running_job(daemon_client, secret, fake_replicate)
    fake_replicate.fail("trainings_cancel", 500)

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 502
    assert (await answer.json())["error"]["code"] == "replicate_error"
    assert len(cancel_calls(fake_replicate)) == 1  # a POST is not retried on 5xx
    job = await (await client.get(f"/api/jobs/{JOB}")).json()
    assert job["status"] == "processing"


async def test_cancel_needs_the_admin_token_when_one_is_set(
    daemon_client, secret, fake_replicate
):
    env = {**fake_replicate.env(), "REPLICATE_WEBHOOKD_ADMIN_TOKEN": "a" * 32}
    client = await daemon_client(env=env)

    answer = await client.post(f"/api/jobs/{JOB}/cancel")

    assert answer.status == 401
    assert (await answer.json())["error"]["code"] == "unauthorized"
    assert fake_replicate.requests == []


# The CLI, as a real process on the database a running daemon uses.


async def test_cli_cancel_records_the_canceled_state_beside_a_running_daemon(
    daemon_client, secret, fake_replicate, tmp_path
):
    client = await running_job(daemon_client, secret, fake_replicate)
    env = cli_env(**fake_replicate.env())

    done = await asyncio.to_thread(
        run_cli, "cancel", JOB, "--data-dir", str(tmp_path / "data"), env=env
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"job {JOB}: processing -> canceled"
    job = await (await client.get(f"/api/jobs/{JOB}")).json()
    assert job["status"] == "canceled"
    assert job["history"][-1]["signature"] == "cancel"
    assert fake_replicate.token not in done.stdout + done.stderr


async def test_cli_cancel_of_finished_job_exits_1_and_sends_nothing(
    daemon_client, secret, fake_replicate, tmp_path
):
    client = await daemon_client(env=fake_replicate.env())
    await record(client, secret, training(JOB, "failed", error="out of memory"))
    env = cli_env(**fake_replicate.env())

    done = await asyncio.to_thread(
        run_cli, "cancel", JOB, "--data-dir", str(tmp_path / "data"), env=env
    )

    assert done.returncode == 1
    assert f"job {JOB} is already failed" in done.stderr
    assert cancel_calls(fake_replicate) == []
