"""SIGTERM and SIGINT stop the daemon in order, through the real process.

The listening socket closes first, so new connections are refused; a request
already in flight (here a slow chunked upload, started before the signal and
finished after it) still gets its answer and is stored; the process exits 0 and
logs exactly one summary line whose counts are what the clients sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    WEBHOOK_PATH,
    DaemonProcess,
    new_secret,
    payload_json,
    signed_headers,
)

SUMMARY = re.compile(
    r"stopped after \d+ s: accepted=(\d+) duplicates=(\d+) rejected=(\d+)"
    r"(?: \(([^)]*)\))?$",
    re.MULTILINE,
)


def job_body(job_id: str, status: str = "processing") -> bytes:
    body = payload_json("training_processing_logs.json")
    body.update(id=job_id, status=status)
    return json.dumps(body).encode()


async def post(
    session: aiohttp.ClientSession, proc: DaemonProcess, body: bytes, headers: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(proc.url + WEBHOOK_PATH, data=body, headers=headers) as r:
        return r.status, await r.json()


async def send_mixed_traffic(
    proc: DaemonProcess, secret: str
) -> tuple[list[str], int, Counter[str]]:
    """Three new deliveries, one duplicate and six refusals for five reasons."""
    accepted: list[str] = []
    rejected: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        sent = []
        for n in range(3):
            body = job_body(f"lifecycle{n:017d}")
            headers = signed_headers(secret, body)
            status, answer = await post(session, proc, body, headers)
            assert (status, answer["duplicate"]) == (200, False), answer
            accepted.append(headers["webhook-id"])
            sent.append((body, headers))

        status, answer = await post(session, proc, *sent[0])
        assert (status, answer["duplicate"]) == (200, True), answer

        body = job_body("lifecyclerefused00000000")
        refusals = [
            (body, signed_headers(new_secret(), body)),
            (body, signed_headers(new_secret(), body)),
            (body, signed_headers(secret, body, timestamp=int(time.time()) - 3600)),
            (b"{not json", signed_headers(secret, b"{not json")),
            (
                b'{"status": "starting"}',
                signed_headers(secret, b'{"status": "starting"}'),
            ),
            (body, signed_headers(secret, body, msg_id=accepted[1])),
        ]
        for refused_body, headers in refusals:
            status, answer = await post(session, proc, refused_body, headers)
            assert status >= 400, answer
            rejected[answer["error"]["code"]] += 1
    assert rejected == {
        "invalid_signature": 2,
        "stale_timestamp": 1,
        "invalid_json": 1,
        "missing_fields": 1,
        "webhook_id_conflict": 1,
    }
    return accepted, 1, rejected


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def start_slow_upload(
    proc: DaemonProcess, secret: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, str]:
    """Send the headers and half of a chunked body; return what is left to send."""
    body = job_body("lifecycleslowupload0000000", status="starting")
    headers = signed_headers(secret, body)
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{proc.port}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    half = len(body) // 2
    writer.write(head + chunk(body[:half]))
    await writer.drain()
    return reader, writer, chunk(body[half:]) + b"0\r\n\r\n", headers["webhook-id"]


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the one answer on a connection the server closes."""
    try:
        raw = await asyncio.wait_for(reader.read(), timeout=15)
    except TimeoutError:
        raise AssertionError("no answer to the request in flight in 15 s") from None
    assert raw, "the connection was closed without an answer"
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def wait_for_log(proc: DaemonProcess, text: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{proc.log_text()}"
        await asyncio.sleep(0.02)


async def refuses_new_connections(port: int, timeout_s: float = 3) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        writer.close()
        await asyncio.sleep(0.02)
    return False


def stored_webhook_ids(database: Path) -> set[str]:
    conn = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return {
            row[0] for row in conn.execute("SELECT webhook_id FROM webhook_deliveries")
        }
    finally:
        conn.close()


def summary_counts(log: str) -> tuple[int, int, int, dict[str, int]]:
    found = SUMMARY.findall(log)
    assert len(found) == 1, f"expected one summary line, found {len(found)}:\n{log}"
    accepted, duplicates, rejected, reasons = found[0]
    by_code = {}
    for item in filter(None, reasons.split(", ")):
        code, _, n = item.partition("=")
        by_code[code] = int(n)
    return int(accepted), int(duplicates), int(rejected), by_code


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
async def test_stop_signal_finishes_upload_in_flight_refuses_new_and_logs_summary(
    daemon_process, secret, tmp_path, signum
):
    proc = daemon_process()
    assert proc.process is not None
    accepted, duplicates, rejected = await send_mixed_traffic(proc, secret)
    reader, writer, rest, slow_id = await start_slow_upload(proc, secret)
    try:
        await asyncio.sleep(0.3)  # the handler now waits for the rest of the body
        proc.process.send_signal(signum)
        await wait_for_log(proc, "stopping: no new connections")
        assert await refuses_new_connections(proc.port), "a new connection got in"
        assert proc.process.poll() is None, "the daemon left a request in flight"
        writer.write(rest)
        await writer.drain()
        status, answer = await read_answer(reader)
    finally:
        writer.close()
    assert status == 200, answer
    assert answer["duplicate"] is False, answer

    code = await asyncio.to_thread(proc.process.wait, 20)
    log = proc.log_text()
    assert code == 0, log
    assert log.count("stopped after") == 1, log
    assert summary_counts(log) == (
        len(accepted) + 1,
        duplicates,
        sum(rejected.values()),
        dict(rejected),
    ), log
    stored = stored_webhook_ids(tmp_path / "data" / "webhookd.sqlite3")
    assert stored == {*accepted, slow_id}
