"""Commit, then answer: storage that cannot commit gets a 503, never a 200.

Through the real daemon process and its real SQLite file:
- another connection holding the write lock (`BEGIN IMMEDIATE`) makes a delivery
  answer 503 storage_unavailable with Retry-After within about a second, and
  /readyz answer 503; once the lock is released the same delivery, re-signed,
  is stored as new;
- a full disk, made by lowering the running daemon's RLIMIT_FSIZE so that a write
  past the current file sizes fails with EFBIG (root cannot bypass it, unlike a
  chmod), refuses the delivery the same way; every delivery answered 200 meanwhile
  is stored, and once there is room again the refused one is stored whole.
Nothing of a refused delivery is left behind: no job, no delivery, no log chunk.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import WEBHOOK_PATH, DaemonProcess, payload_json, signed_headers

Answer = tuple[int, dict[str, Any], dict[str, str]]


def job_body(job_id: str, logs: str | None = None) -> bytes:
    body = payload_json("training_processing_logs.json")
    body["id"] = job_id
    if logs is not None:
        body["logs"] = logs
    return json.dumps(body).encode()


async def post(proc: DaemonProcess, body: bytes, msg_id: str) -> Answer:
    headers = signed_headers(proc.secret, body, msg_id=msg_id)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proc.url + WEBHOOK_PATH, data=io.BytesIO(body), headers=headers
        ) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def get(proc: DaemonProcess, path: str) -> Answer:
    async with aiohttp.ClientSession() as session, session.get(proc.url + path) as r:
        return r.status, await r.json(), dict(r.headers)


def assert_refused_for_storage(answer: Answer) -> None:
    status, body, headers = answer
    assert status == 503, body
    assert body["error"]["code"] == "storage_unavailable", body
    assert int(headers["Retry-After"]) > 0, headers


def traces(database: Path, msg_id: str, job_id: str) -> dict[str, int]:
    """How many rows anything of this delivery left in each table."""
    conn = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return {
            table: conn.execute(
                f"SELECT count(*) FROM {table} WHERE {column} = ?",  # noqa: S608
                (value,),
            ).fetchone()[0]
            for table, column, value in (
                ("webhook_deliveries", "webhook_id", msg_id),
                ("jobs", "id", job_id),
                ("job_log_chunks", "job_id", job_id),
            )
        }
    finally:
        conn.close()


def integrity(database: Path) -> str:
    conn = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def test_write_lock_held_elsewhere_answers_503_fast_and_retry_is_stored(
    daemon_process, tmp_path
):
    proc = daemon_process()
    database = tmp_path / "data" / "webhookd.sqlite3"
    job_id, msg_id = "storagelockedjob000000001", "msg_storage_locked_1"
    body = job_body(job_id)

    blocker = sqlite3.connect(database, isolation_level=None, timeout=5)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        refused = await post(proc, body, msg_id)
        elapsed = time.monotonic() - started
        ready_status, ready, _ = await get(proc, "/readyz")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert_refused_for_storage(refused)
    assert elapsed < 1.5, f"the 503 took {elapsed:.2f} s"
    assert (ready_status, ready["error"]["code"]) == (503, "not_ready"), ready
    assert traces(database, msg_id, job_id) == {
        "webhook_deliveries": 0,
        "jobs": 0,
        "job_log_chunks": 0,
    }

    status, answer, _ = await post(proc, body, msg_id)  # re-signed, same webhook-id
    assert status == 200, answer
    assert (answer["duplicate"], answer["outcome"]) == (False, "created"), answer
    assert traces(database, msg_id, job_id) == {
        "webhook_deliveries": 1,
        "jobs": 1,
        "job_log_chunks": 1,
    }
    assert (await get(proc, "/readyz"))[0] == 200
    assert "database write failed" in proc.log_text()


def data_dir_high_water(data_dir: Path) -> int:
    return max(path.stat().st_size for path in data_dir.iterdir() if path.is_file())


async def test_disk_full_answers_503_keeps_nothing_and_every_200_is_stored(
    daemon_process, tmp_path
):
    proc = daemon_process()
    assert proc.process is not None
    data_dir = tmp_path / "data"
    database = data_dir / "webhookd.sqlite3"
    job_id, msg_id = "storagefulljob0000000001", "msg_storage_full_big"
    line = "flux_train_replicate:  10%|#         | 100/1000 [02:41<24:12]\n"
    logs = line * (1024 * 1024 // len(line))
    big = job_body(job_id, logs=logs)
    small = [
        (job_body(f"storagefullsmall{n:08d}"), f"msg_storage_full_{n}")
        for n in range(8)
    ]

    limits = resource.prlimit(proc.process.pid, resource.RLIMIT_FSIZE)
    room = data_dir_high_water(data_dir) + 64 * 1024  # far less than the big log
    resource.prlimit(proc.process.pid, resource.RLIMIT_FSIZE, (room, limits[1]))
    try:
        answers = await asyncio.gather(
            post(proc, big, msg_id), *(post(proc, b, m) for b, m in small)
        )
    finally:
        resource.prlimit(proc.process.pid, resource.RLIMIT_FSIZE, limits)

    assert_refused_for_storage(answers[0])
    assert traces(database, msg_id, job_id) == {
        "webhook_deliveries": 0,
        "jobs": 0,
        "job_log_chunks": 0,
    }
    for (status, answer, _), (_, small_id) in zip(answers[1:], small, strict=True):
        assert status in (200, 503), answer
        found = traces(database, small_id, answer.get("job_id", ""))
        stored = found["webhook_deliveries"]
        if status == 200:
            assert stored == 1, f"{small_id} was answered 200 but is not stored"

    status, answer, _ = await post(proc, big, msg_id)  # re-signed, same webhook-id
    assert status == 200, answer
    assert (answer["duplicate"], answer["outcome"]) == (False, "created"), answer
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{proc.url}/api/jobs/{job_id}/logs") as response,
    ):
        assert (await response.read()).decode() == logs
    assert integrity(database) == "ok"
    assert "database write failed" in proc.log_text()
