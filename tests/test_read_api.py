"""The JSON read API and the health checks, on the real app over a real database."""

from __future__ import annotations

import json
import random
import sqlite3
from typing import Any

import pytest

from tests.helpers import WEBHOOK_PATH, payload, payload_json, signed_headers

# (id, status, created_at): the newest first is the order the API must return.
JOBS = [
    ("job-e", "processing", "2025-03-05T09:00:00.5Z"),
    ("job-d", "failed", "2025-03-04T12:00:00.123456789Z"),
    ("job-c", "succeeded", "2025-03-04T12:00:00.12Z"),
    ("job-b", "failed", "2025-03-04T11:59:59.999999Z"),
    ("job-a", "succeeded", "2024-12-31T23:59:59Z"),
]


async def deliver(client: Any, secret: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    response = await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )
    assert response.status == 200, await response.text()


async def get_json(client: Any, path: str, status: int = 200) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    return body


async def client_with_jobs(daemon_client: Any, secret: str) -> Any:
    client = await daemon_client()
    shuffled = JOBS[:]
    random.Random(7).shuffle(shuffled)  # arrival order must not matter
    for job_id, status, created_at in shuffled:
        await deliver(
            client, secret, {"id": job_id, "status": status, "created_at": created_at}
        )
    return client


async def test_jobs_are_listed_newest_first_by_created_at(daemon_client, secret):
    client = await client_with_jobs(daemon_client, secret)
    page = await get_json(client, "/api/jobs")
    assert [job["id"] for job in page["jobs"]] == [job[0] for job in JOBS]
    assert page["total"] == len(JOBS)
    assert page["offset"] == 0
    assert page["next_offset"] is None
    assert [job["created_at"] for job in page["jobs"]] == [job[2] for job in JOBS]


async def test_empty_database_lists_no_jobs(daemon_client):
    client = await daemon_client()
    page = await get_json(client, "/api/jobs")
    assert page == {
        "jobs": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
        "next_offset": None,
        "period_spend": 0.0,
    }


@pytest.mark.parametrize("status", ["failed", "succeeded", "processing", "canceled"])
async def test_status_filter_lists_only_jobs_with_that_status(
    daemon_client, secret, status
):
    client = await client_with_jobs(daemon_client, secret)
    page = await get_json(client, f"/api/jobs?status={status}")
    expected = [job_id for job_id, job_status, _ in JOBS if job_status == status]
    assert [job["id"] for job in page["jobs"]] == expected
    assert page["total"] == len(expected)
    assert all(job["status"] == status for job in page["jobs"])


async def test_limit_and_offset_page_through_every_job_once(daemon_client, secret):
    client = await client_with_jobs(daemon_client, secret)
    seen: list[str] = []
    offsets = []
    offset: int | None = 0
    while offset is not None:
        page = await get_json(client, f"/api/jobs?limit=2&offset={offset}")
        assert page["total"] == len(JOBS)
        assert page["limit"] == 2
        assert page["offset"] == offset
        assert len(page["jobs"]) <= 2
        offsets.append(offset)
        seen += [job["id"] for job in page["jobs"]]
        offset = page["next_offset"]
    assert offsets == [0, 2, 4]
    assert seen == [job[0] for job in JOBS]


async def test_paging_with_status_filter_counts_only_matching_jobs(
    daemon_client, secret
):
    client = await client_with_jobs(daemon_client, secret)
    first = await get_json(client, "/api/jobs?status=failed&limit=1")
    assert [job["id"] for job in first["jobs"]] == ["job-d"]
    assert (first["total"], first["next_offset"]) == (2, 1)
    second = await get_json(client, "/api/jobs?status=failed&limit=1&offset=1")
    assert [job["id"] for job in second["jobs"]] == ["job-b"]
    assert second["next_offset"] is None


async def test_offset_past_the_end_is_an_empty_page(daemon_client, secret):
    client = await client_with_jobs(daemon_client, secret)
    page = await get_json(client, "/api/jobs?offset=50")
    assert page["jobs"] == []
    assert page["total"] == len(JOBS)
    assert page["next_offset"] is None


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=abc",
        "limit=2.5",
        "limit=%EF%BC%93",  # full-width 3: not an ASCII whole number
        "limit=%C2%B2",  # superscript 2: isdigit() but int() refuses it
        "offset=-3",
        "offset=x",
    ],
)
async def test_bad_limit_or_offset_is_400_invalid_parameter(daemon_client, query):
    client = await daemon_client()
    body = await get_json(client, f"/api/jobs?{query}", status=400)
    assert body["error"]["code"] == "invalid_parameter"
    assert query.split("=")[0] in body["error"]["message"]


async def test_job_detail_has_state_and_history(daemon_client, secret):
    client = await daemon_client()
    for name in ("training_starting.json", "training_succeeded.json"):
        body = payload(name)
        response = await client.post(
            WEBHOOK_PATH, data=body, headers=signed_headers(secret, body)
        )
        assert response.status == 200
    final = payload_json("training_succeeded.json")

    job = await get_json(client, f"/api/jobs/{final['id']}")

    assert job["id"] == final["id"]
    assert job["status"] == "succeeded"
    assert job["output"] == final["output"]
    assert job["urls"] == final["urls"]
    assert job["data_removed"] is False
    assert job["source"] == "api"
    assert job["logs_bytes"] == len(final["logs"].encode())
    assert "logs_sha256" not in job
    assert "created_ts" not in job
    assert [(h["kind"], h["status"]) for h in job["history"]] == [
        ("start", "starting"),
        ("completed", "succeeded"),
    ]


@pytest.mark.parametrize("suffix", ["", "/logs"])
async def test_unknown_job_is_404_job_not_found(daemon_client, secret, suffix):
    client = await daemon_client()
    await deliver(client, secret, {"id": "known", "status": "starting"})
    body = await get_json(client, f"/api/jobs/unknown-job{suffix}", status=404)
    assert set(body) == {"error"}
    assert body["error"]["code"] == "job_not_found"
    assert "unknown-job" in body["error"]["message"]


async def test_healthz_answers_200(daemon_client):
    client = await daemon_client()
    assert await get_json(client, "/healthz") == {"ok": True}


async def test_readyz_answers_200_after_a_committed_write(daemon_client, tmp_path):
    client = await daemon_client()
    body = await get_json(client, "/readyz")
    assert body == {"ok": True, "database": "writable", "migrations": "current"}
    database = tmp_path / "data" / "webhookd.sqlite3"
    with sqlite3.connect(database) as conn:
        probe = conn.execute(
            "SELECT value FROM daemon_state WHERE key = 'ready_probe'"
        ).fetchone()
    assert probe is not None
    assert float(probe[0]) > 0


async def test_unknown_route_has_the_json_error_shape(daemon_client):
    client = await daemon_client()
    body = await get_json(client, "/api/nothing-here", status=404)
    assert body["error"]["code"] == "not_found"
