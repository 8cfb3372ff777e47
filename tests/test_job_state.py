"""The job state machine, driven through the real webhook endpoint.

Every delivery is a signed POST to the production app on a loopback port; the state
is read back through the JSON API and, where storage matters, from the SQLite file.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import WEBHOOK_PATH, payload, payload_json, signed_headers

JOB_ID = "k7m3x9q2v5rgc0cm4z1b8n6w2t"
SEQUENCE = (
    "training_starting.json",
    "training_processing_logs.json",
    "training_succeeded.json",
)
HISTORY_KEYS = {
    "webhook_id",
    "kind",
    "status",
    "received_at",
    "body_bytes",
    "signature",
    "outcome",
    "client_address",
}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


async def deliver(
    client: Any, secret: str, body: bytes | dict[str, Any], msg_id: str | None = None
) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else encode(body)
    headers = signed_headers(secret, raw, msg_id=msg_id)
    response = await client.post(WEBHOOK_PATH, data=raw, headers=headers)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def get_job(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def get_logs(client: Any, job_id: str, offset: int | None = None) -> bytes:
    query = "" if offset is None else f"?offset={offset}"
    response = await client.get(f"/api/jobs/{job_id}/logs{query}")
    assert response.status == 200, await response.text()
    data: bytes = await response.read()
    assert int(response.headers["X-Log-Bytes"]) >= len(data)
    return data


def processing(job_id: str, logs: str, **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "status": "processing", "logs": logs, **extra}


def database_bytes(data_dir: Path) -> bytes:
    found = [
        path.read_bytes()
        for path in sorted(data_dir.glob("webhookd.sqlite3*"))
        if not path.name.endswith("-shm")
    ]
    assert found, f"no database files in {data_dir}"
    return b"".join(found)


# --- ordering, duplicates and retries converge ---------------------------------


def _orders() -> list[Any]:
    params = [
        pytest.param(list(range(3)), id="in-order"),
        pytest.param([2, 1, 0], id="reversed"),
    ]
    for seed in (1, 2, 3, 5, 8, 13):
        order = list(range(3))
        random.Random(seed).shuffle(order)
        params.append(pytest.param(order, id=f"shuffled-seed{seed}"))
    return params


def _plan(order: list[int], duplicate: str, seed: int) -> list[tuple[str, str]]:
    """(payload name, webhook-id) pairs in the order they are sent."""
    sends = [(SEQUENCE[i], f"msg_{i}_first") for i in order]
    if duplicate == "same-webhook-id":
        sends += [(name, msg_id) for name, msg_id in sends]
    elif duplicate == "new-webhook-id":
        sends += [(name, msg_id.replace("first", "again")) for name, msg_id in sends]
    if duplicate != "none":
        random.Random(seed).shuffle(sends)
    return sends


@pytest.mark.parametrize("order", _orders())
@pytest.mark.parametrize("duplicate", ["none", "same-webhook-id", "new-webhook-id"])
async def test_any_delivery_order_and_duplication_ends_in_the_terminal_state(
    daemon_client, secret, tmp_path, order, duplicate
):
    client = await daemon_client()
    sends = _plan(order, duplicate, seed=sum(order) * 31 + len(duplicate))
    seen: set[str] = set()
    for name, msg_id in sends:
        answer = await deliver(client, secret, payload(name), msg_id=msg_id)
        assert answer["duplicate"] is (msg_id in seen)
        seen.add(msg_id)

    final = payload_json("training_succeeded.json")
    job = await get_job(client, JOB_ID)
    assert job["status"] == "succeeded"
    assert job["conflict_status"] is None
    assert job["output"] == final["output"]
    assert job["metrics"] == final["metrics"]
    assert job["predict_time_s"] == final["metrics"]["predict_time"]
    assert job["completed_at"] == final["completed_at"]
    assert job["started_at"] == final["started_at"]
    assert job["created_at"] == final["created_at"]
    assert job["input"] == final["input"]
    assert job["model"] == final["model"]
    assert job["error"] is None
    assert await get_logs(client, JOB_ID) == final["logs"].encode()
    assert job["logs_bytes"] == len(final["logs"].encode())
    assert sorted(item["webhook_id"] for item in job["history"]) == sorted(seen)


# --- terminal status is final ----------------------------------------------------


@pytest.mark.parametrize(
    ("first", "later"),
    [
        ("training_succeeded.json", "training_failed.json"),
        ("training_failed.json", "training_succeeded.json"),
        ("training_canceled.json", "training_succeeded.json"),
    ],
)
async def test_terminal_status_is_final_and_a_different_one_is_a_conflict(
    daemon_client, secret, first, later
):
    client = await daemon_client()
    original = payload_json(first)
    job_id = original["id"]
    conflicting = {**payload_json(later), "id": job_id}
    await deliver(client, secret, payload(first))
    before = await get_job(client, job_id)
    logs_before = await get_logs(client, job_id)

    answer = await deliver(client, secret, conflicting)

    assert answer["outcome"] == "conflict"
    assert answer["status"] == original["status"]
    job = await get_job(client, job_id)
    assert job["status"] == original["status"]
    assert job["conflict_status"] == conflicting["status"]
    assert [item["outcome"] for item in job["history"]] == ["created", "conflict"]
    assert job["history"][1]["status"] == conflicting["status"]
    # Nothing from the conflicting body is applied, not even to empty fields.
    for field in ("output", "error", "metrics", "completed_at", "started_at"):
        assert job[field] == before[field], field
    assert await get_logs(client, job_id) == logs_before


async def test_conflicting_terminal_body_fills_no_empty_field_or_log(
    daemon_client, secret
):
    client = await daemon_client()
    await deliver(client, secret, {"id": "bare1", "status": "succeeded"})
    failed = {**payload_json("training_failed.json"), "id": "bare1"}

    answer = await deliver(client, secret, failed)

    assert answer["outcome"] == "conflict"
    job = await get_job(client, "bare1")
    assert job["status"] == "succeeded"
    assert job["conflict_status"] == "failed"
    assert job["error"] is None
    assert job["completed_at"] is None
    assert job["logs_bytes"] == 0
    assert await get_logs(client, "bare1") == b""


async def test_first_conflict_status_is_kept_when_several_conflicts_arrive(
    daemon_client, secret
):
    client = await daemon_client()
    await deliver(client, secret, {"id": "multi", "status": "succeeded"})
    await deliver(client, secret, {"id": "multi", "status": "failed"})
    await deliver(client, secret, {"id": "multi", "status": "canceled"})
    job = await get_job(client, "multi")
    assert job["status"] == "succeeded"
    assert job["conflict_status"] == "failed"
    assert [item["outcome"] for item in job["history"]] == [
        "created",
        "conflict",
        "conflict",
    ]


async def test_same_terminal_status_again_is_not_a_conflict(daemon_client, secret):
    client = await daemon_client()
    body = payload_json("training_succeeded.json")
    await deliver(client, secret, body)
    answer = await deliver(client, secret, body)  # a new webhook-id, same facts
    assert answer["outcome"] == "ignored"
    assert answer["duplicate"] is False
    job = await get_job(client, JOB_ID)
    assert job["conflict_status"] is None
    assert [item["outcome"] for item in job["history"]] == ["created", "ignored"]


async def test_webhook_id_reused_with_other_bytes_is_refused_with_409(
    daemon_client, secret
):
    client = await daemon_client()
    await deliver(client, secret, payload("training_starting.json"), msg_id="msg_x")
    other = payload("training_succeeded.json")
    response = await client.post(
        WEBHOOK_PATH, data=other, headers=signed_headers(secret, other, msg_id="msg_x")
    )
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "webhook_id_conflict"
    assert (await get_job(client, JOB_ID))["status"] == "starting"


# --- snapshots only move forward ---------------------------------------------------


async def test_processing_snapshot_with_shorter_logs_is_ignored(daemon_client, secret):
    client = await daemon_client()
    long_logs = "step 1\nstep 2\nstep 3\n"
    await deliver(client, secret, processing("shorter", long_logs))

    answer = await deliver(client, secret, processing("shorter", "step 1\n"))

    assert answer["outcome"] == "ignored"
    assert await get_logs(client, "shorter") == long_logs.encode()
    job = await get_job(client, "shorter")
    assert job["logs_bytes"] == len(long_logs)
    assert job["history"][-1]["outcome"] == "ignored"


async def test_processing_snapshot_with_less_output_keeps_the_longer_output(
    daemon_client, secret
):
    client = await daemon_client()
    two = ["https://replicate.delivery/a.png", "https://replicate.delivery/b.png"]
    await deliver(client, secret, {"id": "outs", "status": "processing", "output": two})
    answer = await deliver(
        client, secret, {"id": "outs", "status": "processing", "output": two[:1]}
    )
    assert answer["outcome"] == "ignored"
    assert (await get_job(client, "outs"))["output"] == two


async def test_events_after_the_terminal_one_only_fill_missing_fields(
    daemon_client, secret
):
    client = await daemon_client()
    terminal = {
        "id": "fill",
        "status": "succeeded",
        "model": "acme/first-model",
        "output": {"weights": "https://replicate.delivery/w.tar"},
        "completed_at": "2025-03-04T10:43:06.902337Z",
    }
    await deliver(client, secret, terminal)
    late = processing(
        "fill",
        "late log line\n",
        model="acme/other-model",
        output={"weights": "https://replicate.delivery/other.tar", "extra": 1},
        started_at="2025-03-04T10:15:19.483105Z",
        completed_at="2030-01-01T00:00:00Z",
    )

    answer = await deliver(client, secret, late)

    assert answer["outcome"] == "filled"
    assert answer["status"] == "succeeded"
    job = await get_job(client, "fill")
    assert job["status"] == "succeeded"
    assert job["model"] == "acme/first-model"
    assert job["output"] == terminal["output"]
    assert job["completed_at"] == terminal["completed_at"]
    assert job["started_at"] == "2025-03-04T10:15:19.483105Z"
    assert await get_logs(client, "fill") == b"late log line\n"

    again = await deliver(client, secret, processing("fill", "late log line\nmore\n"))
    assert again["outcome"] == "ignored"
    assert await get_logs(client, "fill") == b"late log line\n"


async def test_unknown_status_aborted_is_terminal(daemon_client, secret):
    client = await daemon_client()
    answer = await deliver(client, secret, {"id": "abrt", "status": "aborted"})
    assert answer["outcome"] == "created"

    for status in ("processing", "starting"):
        later = await deliver(
            client, secret, processing("abrt", "x\n") | {"status": status}
        )
        assert later["status"] == "aborted"
    conflict = await deliver(client, secret, {"id": "abrt", "status": "succeeded"})

    assert conflict["outcome"] == "conflict"
    job = await get_job(client, "abrt")
    assert job["status"] == "aborted"
    assert job["conflict_status"] == "succeeded"
    assert job["history"][0]["kind"] == "completed"


@pytest.mark.parametrize(
    "name",
    [
        "training_starting.json",
        "training_processing_logs.json",
        "training_succeeded.json",
        "training_failed.json",
        "training_canceled.json",
        "real/prediction_processing_with_logs.json",
        "real/prediction_succeeded_file_output.json",
        "real/prediction_canceled.json",
    ],
)
async def test_job_is_created_on_first_sight_from_any_event(
    daemon_client, secret, name
):
    client = await daemon_client()
    body = payload_json(name)
    missing = await client.get(f"/api/jobs/{body['id']}")
    assert missing.status == 404

    answer = await deliver(client, secret, payload(name))

    assert answer["outcome"] == "created"
    job = await get_job(client, body["id"])
    assert job["status"] == body["status"]
    assert job["created_at"] == body["created_at"]
    assert [item["outcome"] for item in job["history"]] == ["created"]
    assert await get_logs(client, body["id"]) == (body.get("logs") or "").encode()


async def test_timestamps_with_2_and_9_fractional_digits_are_kept_verbatim(
    daemon_client, secret
):
    client = await daemon_client()
    stamps = {
        "created_at": "2023-11-16T11:46:32.23Z",
        "started_at": "2023-11-16T11:46:33.678378653Z",
        "completed_at": "2023-11-16T11:46:40.5Z",
    }
    await deliver(client, secret, {"id": "stamps", "status": "succeeded", **stamps})
    job = await get_job(client, "stamps")
    for name, text in stamps.items():
        assert job[name] == text


async def test_unparseable_timestamp_is_dropped_not_stored(daemon_client, secret):
    client = await daemon_client()
    await deliver(
        client,
        secret,
        {"id": "badtime", "status": "starting", "created_at": "yesterday-ish"},
    )
    assert (await get_job(client, "badtime"))["created_at"] is None


# --- secrets in inputs ---------------------------------------------------------------


async def test_secret_input_values_are_masked_in_api_and_absent_from_database(
    daemon_client, secret, tmp_path
):
    client = await daemon_client()
    hidden = {
        "hf_token": "hf_Qz8SecretTokenValue1",
        "s3_secret_key": "S3SecretKeyValue2xyz",
        "password": "PasswordValue3hunter2",
        "api_key": "ApiKeyValue4r8_abcdef",
    }
    body = payload_json("training_starting.json")
    body["input"] = {
        **body["input"],
        **hidden,
        "nested": {"HF_TOKEN": "NestedTokenValue5"},
        "trigger_word": "VisibleTriggerWord6",
    }
    await deliver(client, secret, body)

    job = await get_job(client, JOB_ID)
    for key in hidden:
        assert job["input"][key] == "***"
    assert job["input"]["nested"] == {"HF_TOKEN": "***"}
    assert job["input"]["trigger_word"] == "VisibleTriggerWord6"

    stored = database_bytes(tmp_path / "data")
    assert b"VisibleTriggerWord6" in stored  # the files read are the right ones
    for value in [*hidden.values(), "NestedTokenValue5"]:
        assert value.encode() not in stored, value


# --- history -------------------------------------------------------------------------


async def test_history_rows_carry_every_delivery_fact(daemon_client, secret):
    client = await daemon_client()
    before = time.time()
    sent = []
    for name, msg_id in (
        ("training_starting.json", "msg_hist_1"),
        ("training_processing_logs.json", "msg_hist_2"),
        ("training_succeeded.json", "msg_hist_3"),
        ("training_starting.json", "msg_hist_4"),
    ):
        body = payload(name)
        await deliver(client, secret, body, msg_id=msg_id)
        sent.append((msg_id, len(body)))
    after = time.time()

    history = (await get_job(client, JOB_ID))["history"]

    assert all(set(item) == HISTORY_KEYS for item in history)
    assert [(item["webhook_id"], item["body_bytes"]) for item in history] == sent
    assert [item["kind"] for item in history] == ["start", "logs", "completed", "start"]
    assert [item["status"] for item in history] == [
        "starting",
        "processing",
        "succeeded",
        "starting",
    ]
    assert [item["outcome"] for item in history] == [
        "created",
        "applied",
        "applied",
        "ignored",
    ]
    assert {item["signature"] for item in history} == {"v1 key 1"}
    assert {item["client_address"] for item in history} == {"127.0.0.1"}
    for item in history:
        received = datetime.fromisoformat(item["received_at"]).timestamp()
        assert before - 1 <= received <= after + 1


async def test_duplicate_webhook_id_adds_no_history_row(daemon_client, secret):
    client = await daemon_client()
    body = payload("training_starting.json")
    first = await deliver(client, secret, body, msg_id="msg_dup")
    second = await deliver(client, secret, body, msg_id="msg_dup")
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert second["outcome"] == "ignored"
    assert len((await get_job(client, JOB_ID))["history"]) == 1


# --- log storage ---------------------------------------------------------------------


async def test_200_growing_log_snapshots_store_the_last_one_once(
    daemon_client, secret, tmp_path
):
    client = await daemon_client()
    lines = [f"step {i:03d} loss=0.{i:04d} █\n" for i in range(200)]
    snapshots = ["".join(lines[: i + 1]) for i in range(200)]
    for text in snapshots:
        await deliver(client, secret, processing("grow", text))

    last = snapshots[-1].encode()
    response = await client.get("/api/jobs/grow/logs")
    assert await response.read() == last
    assert int(response.headers["X-Log-Bytes"]) == len(last)
    with sqlite3.connect(tmp_path / "data" / "webhookd.sqlite3") as conn:
        stored, chunks = conn.execute(
            "SELECT sum(length(data)), count(*) FROM job_log_chunks WHERE job_id = ?",
            ("grow",),
        ).fetchone()
    assert stored == len(last)  # appended, never rewritten
    assert chunks == 200


async def test_diverging_longer_log_snapshot_replaces_the_stored_log(
    daemon_client, secret
):
    client = await daemon_client()
    await deliver(client, secret, processing("diverge", "attempt 1: step 1\n"))
    await deliver(client, secret, processing("diverge", "attempt 1: step 1\nstep 2\n"))
    replaced = "attempt 2 restarted from scratch\n"
    await deliver(client, secret, processing("diverge", replaced))
    assert await get_logs(client, "diverge") == replaced.encode()

    grown = replaced + "attempt 2: step 1\n"
    await deliver(client, secret, processing("diverge", grown))
    assert await get_logs(client, "diverge") == grown.encode()
    job = await get_job(client, "diverge")
    assert job["logs_bytes"] == len(grown.encode())


async def test_logs_offset_returns_exactly_the_bytes_after_offset(
    daemon_client, secret
):
    client = await daemon_client()
    snapshots = ["first line é\n", "first line é\nsecond █ line\n"]
    snapshots.append(snapshots[-1] + "third line ✓ done\n")
    for text in snapshots:
        await deliver(client, secret, processing("offs", text))
    full = snapshots[-1].encode()
    boundaries = [len(text.encode()) for text in snapshots]

    for offset in sorted({0, 1, 11, 12, *boundaries, boundaries[0] + 3, len(full) - 1}):
        response = await client.get(f"/api/jobs/offs/logs?offset={offset}")
        assert response.status == 200
        assert await response.read() == full[offset:], offset
        assert response.headers["X-Log-Bytes"] == str(len(full))

    beyond = await client.get(f"/api/jobs/offs/logs?offset={len(full) + 10}")
    assert await beyond.read() == b""
    assert beyond.headers["X-Log-Bytes"] == str(len(full))


async def test_log_version_changes_only_when_the_log_is_replaced(daemon_client, secret):
    """A reader tailing from its offset must learn when the bytes before that
    offset were replaced, or it splices the new log onto the old one."""
    client = await daemon_client()

    async def version_and_next(offset: int) -> tuple[str, int]:
        response = await client.get(f"/api/jobs/vers/logs?offset={offset}")
        assert response.status == 200
        return response.headers["X-Log-Version"], int(response.headers["X-Next-Offset"])

    await deliver(client, secret, processing("vers", "attempt 1: step 1\n"))
    first, offset = await version_and_next(0)
    await deliver(client, secret, processing("vers", "attempt 1: step 1\nstep 2\n"))
    assert (await version_and_next(offset))[0] == first  # appended: same log

    replaced = "attempt 2 restarted from scratch\n"
    await deliver(client, secret, processing("vers", replaced))
    second, following = await version_and_next(offset)
    assert second != first
    assert following == len(replaced.encode())
    await deliver(client, secret, processing("vers", replaced + "step 1\n"))
    assert (await version_and_next(following))[0] == second


@pytest.mark.parametrize("offset", ["-1", "abc", "1.5"])
async def test_logs_offset_that_is_not_a_whole_number_is_400(
    daemon_client, secret, offset
):
    client = await daemon_client()
    await deliver(client, secret, processing("badoff", "x\n"))
    response = await client.get(f"/api/jobs/badoff/logs?offset={offset}")
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_parameter"
