"""SIGKILL in the middle of a stream never loses a delivery that was answered 200.

The real daemon process takes signed deliveries from several concurrent clients
(new jobs, then growing log snapshots for them) and is killed with SIGKILL while
they are still sending. After a restart on the same data directory every webhook-id
a client saw acknowledged is in the database, and the jobs are whole: no delivery
without its job, logs that match their recorded size and hash, and each job at the
furthest status its stored deliveries reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import aiohttp

from tests.helpers import WEBHOOK_PATH, DaemonProcess, signed_headers

CLIENTS = 8
SNAPSHOTS_PER_JOB = 4
KILL_AFTER_ACKS = 400
LOAD_LIMIT_S = 3.0
STATUS_RANK = {"starting": 0, "processing": 1}


def training_body(job_id: str, status: str, logs: str) -> bytes:
    return json.dumps(
        {
            "id": job_id,
            "model": "ostris/flux-dev-lora-trainer",
            "input": {"steps": 1000, "trigger_word": "TOK"},
            "logs": logs,
            "output": None,
            "error": None,
            "source": "api",
            "status": status,
            "created_at": "2025-03-04T10:15:02.118000Z",
            "urls": {"get": f"https://api.replicate.com/v1/trainings/{job_id}"},
        }
    ).encode()


async def send_until_cut(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    client_no: int,
    acked: dict[str, str],
    refused: Counter[int],
) -> str:
    """One client: jobs one after another, each a start then growing log snapshots.

    Returns how the stream ended; only a lost connection is expected.
    """
    for job_no in range(100_000):
        job_id = f"crash{client_no:02d}x{job_no:05d}"
        for step in range(SNAPSHOTS_PER_JOB + 1):
            status = "starting" if step == 0 else "processing"
            logs = "".join(f"step {n} loss 0.{n:04d}\n" for n in range(step * 25))
            body = training_body(job_id, status, logs)
            headers = signed_headers(secret, body)
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
            except (aiohttp.ClientError, OSError):
                return "connection lost"
            if response.status == 200:
                acked[headers["webhook-id"]] = job_id
            else:
                refused[response.status] += 1
    return "ran out of jobs"


async def stream_and_kill(
    proc: DaemonProcess, secret: str
) -> tuple[dict[str, str], Counter[int], list[str]]:
    acked: dict[str, str] = {}
    refused: Counter[int] = Counter()
    assert proc.process is not None
    url = proc.url + WEBHOOK_PATH
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [
            asyncio.create_task(send_until_cut(session, url, secret, n, acked, refused))
            for n in range(CLIENTS)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOAD_LIMIT_S
        while len(acked) < KILL_AFTER_ACKS and loop.time() < deadline:
            await asyncio.sleep(0.01)
        os.kill(proc.process.pid, signal.SIGKILL)
        endings = await asyncio.wait_for(asyncio.gather(*clients), timeout=15)
    assert proc.process.wait(timeout=10) == -signal.SIGKILL
    return acked, refused, endings


def stored_deliveries(database: Path) -> dict[str, str]:
    with _read_only(database) as conn:
        return dict(conn.execute("SELECT webhook_id, job_id FROM webhook_deliveries"))


def inconsistencies(database: Path) -> list[str]:
    """Every way the stored jobs disagree with their deliveries and log chunks."""
    problems = []
    with _read_only(database) as conn:
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("integrity_check failed")
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
        problems += [f"foreign key: {row}" for row in foreign]
        orphans = conn.execute(
            "SELECT d.webhook_id, d.job_id FROM webhook_deliveries d"
            " LEFT JOIN jobs j ON j.id = d.job_id WHERE j.id IS NULL"
        ).fetchall()
        problems += [f"delivery {w} has no job {j}" for w, j in orphans]
        jobs = conn.execute("SELECT id, status, logs_bytes, logs_sha256 FROM jobs")
        for job_id, status, logs_bytes, logs_sha in jobs.fetchall():
            problems += _job_problems(conn, job_id, status, logs_bytes, logs_sha)
    return problems


def _job_problems(
    conn: sqlite3.Connection, job_id: str, status: str, logs_bytes: int, sha: str
) -> list[str]:
    problems = []
    rows = conn.execute(
        "SELECT status FROM webhook_deliveries WHERE job_id = ?", (job_id,)
    )
    statuses = [row[0] for row in rows]
    if not statuses:
        problems.append(f"job {job_id} has no delivery")
    elif status != max(statuses, key=STATUS_RANK.__getitem__):
        problems.append(f"job {job_id} is {status}, deliveries say {statuses}")
    chunks = conn.execute(
        "SELECT start_byte, data FROM job_log_chunks WHERE job_id = ?"
        " ORDER BY start_byte",
        (job_id,),
    ).fetchall()
    position = 0
    for start, data in chunks:
        if start != position:
            problems.append(f"job {job_id}: log chunk at {start}, expected {position}")
        position = start + len(data)
    logs = b"".join(data for _, data in chunks)
    if len(logs) != logs_bytes:
        problems.append(
            f"job {job_id}: {len(logs)} log bytes stored, {logs_bytes} said"
        )
    elif logs and hashlib.sha256(logs).hexdigest() != sha:
        problems.append(f"job {job_id}: stored log does not match its sha256")
    return problems


def _read_only(database: Path) -> contextlib.closing[sqlite3.Connection]:
    uri = database.resolve().as_uri() + "?mode=ro"
    return contextlib.closing(sqlite3.connect(uri, uri=True))


async def api_history(proc: DaemonProcess, job_ids: set[str]) -> dict[str, set[str]]:
    """webhook-ids per job as the restarted daemon's API reports them."""
    found: dict[str, set[str]] = {}
    async with aiohttp.ClientSession() as session:
        for job_id in sorted(job_ids):
            async with session.get(f"{proc.url}/api/jobs/{job_id}") as response:
                if response.status == 200:
                    job = await response.json()
                    found[job_id] = {item["webhook_id"] for item in job["history"]}
    return found


async def test_sigkill_mid_stream_loses_no_acknowledged_delivery(
    daemon_process, secret, tmp_path
):
    proc = daemon_process()
    acked, refused, endings = await stream_and_kill(proc, secret)
    assert acked, f"no delivery was acknowledged before the kill (refused: {refused})"
    assert endings == ["connection lost"] * CLIENTS, (
        f"the kill did not cut every client mid-stream: {endings}"
    )

    restarted = daemon_process()
    database = tmp_path / "data" / "webhookd.sqlite3"
    stored = stored_deliveries(database)
    missing = set(acked) - set(stored)
    assert not missing, (
        f"{len(acked)} deliveries acknowledged with 200 (client side), only "
        f"{len(set(acked) & set(stored))} of them in the database after the restart "
        f"({len(stored)} stored in all); missing e.g. {sorted(missing)[:5]}"
    )
    assert len(stored) >= len(acked), (len(stored), len(acked))

    history = await api_history(restarted, set(acked.values()))
    lost_by_api = {
        msg_id
        for msg_id, job_id in acked.items()
        if msg_id not in history.get(job_id, set())
    }
    assert not lost_by_api, (
        f"{len(acked)} acknowledged, {len(acked) - len(lost_by_api)} in the API "
        f"history of their job; missing e.g. {sorted(lost_by_api)[:5]}"
    )
    assert inconsistencies(database) == []
    assert restarted.stop() == 0
