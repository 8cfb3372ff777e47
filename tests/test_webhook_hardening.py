"""Hostile input a forger can send without the secret: it must cost little and
never reach a 500, and text it smuggles in must be stored safely."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from tests.helpers import WEBHOOK_PATH, signed_headers


def body_of(**fields: Any) -> bytes:
    return json.dumps({"id": "hardened01", "status": "failed", **fields}).encode()


async def raw_exchange(port: int, request: bytes, wait_s: float = 5.0) -> bytes:
    """Send raw bytes on a loopback socket; return what comes back in time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), wait_s)
    finally:
        writer.close()


async def test_unsigned_request_is_refused_before_its_body_is_read(daemon_client):
    client = await daemon_client()
    # Headers promise 1 MiB that never comes; without signature headers the answer
    # must come at once instead of waiting for (and buffering) the body.
    head = (
        b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
    )
    answer = await raw_exchange(client.port, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"invalid_signature" in answer


async def test_a_second_content_encoding_line_is_refused(daemon_client, secret):
    client = await daemon_client()
    body = body_of(error="x")
    headers = [
        *signed_headers(secret, body).items(),
        ("Content-Encoding", "identity"),
        ("Content-Encoding", "gzip"),
    ]
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_encoding"


async def test_signature_header_with_too_many_entries_is_refused(daemon_client, secret):
    client = await daemon_client()
    body = body_of(error="x")
    headers = signed_headers(secret, body)
    junk = " ".join(f"v1,{'A' * 43}=" for _ in range(20))
    headers["webhook-signature"] = junk + " " + headers["webhook-signature"]
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    assert response.status == 401
    assert "entries" in (await response.json())["error"]["message"]


async def test_body_slower_than_body_timeout_gets_408(daemon_client, secret):
    client = await daemon_client(webhook__body_timeout_s=0.5)
    body = body_of(error="slow")
    signed = signed_headers(secret, body)
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in signed.items())
        + "\r\n"
    ).encode()
    answer = await raw_exchange(client.port, head + body[:10], wait_s=5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer


async def test_lone_surrogates_in_text_fields_are_stored_replaced(
    daemon_client, secret
):
    client = await daemon_client()
    body = (
        b'{"id": "hardened01", "status": "failed", "error": "boom \\ud800",'
        b' "model": "acme/\\udc80trainer", "logs": "line \\udfff\\n"}'
    )
    response = await client.post(
        WEBHOOK_PATH, data=body, headers=signed_headers(secret, body)
    )
    assert response.status == 200, await response.text()
    job = await (await client.get("/api/jobs/hardened01")).json()
    assert job["error"] == "boom \ufffd"
    assert job["model"] == "acme/\ufffdtrainer"
    logs = await (await client.get("/api/jobs/hardened01/logs")).text()
    assert logs.startswith("line ")


async def test_out_of_range_predict_time_is_dropped_not_a_500(daemon_client, secret):
    client = await daemon_client()
    body = (
        b'{"id": "hardened01", "status": "failed", "metrics": {"predict_time": 1'
        + (b"0" * 400)
        + b"}}"
    )
    response = await client.post(
        WEBHOOK_PATH, data=body, headers=signed_headers(secret, body)
    )
    assert response.status == 200, await response.text()
    job = await (await client.get("/api/jobs/hardened01")).json()
    assert job["predict_time_s"] is None


async def test_deeply_nested_input_is_a_400_not_a_500(daemon_client, secret):
    client = await daemon_client()
    nested: Any = "leaf"
    for _ in range(900):
        nested = {"a": nested}
    body = json.dumps({"id": "hardened01", "status": "failed", "input": nested})
    raw = body.encode()
    response = await client.post(
        WEBHOOK_PATH, data=raw, headers=signed_headers(secret, raw)
    )
    assert response.status == 400, await response.text()
    code = (await response.json())["error"]["code"]
    assert code in ("invalid_body", "invalid_json")


async def test_huge_numeric_query_parameter_is_a_400(daemon_client):
    client = await daemon_client()
    for path in ("/api/jobs?limit=" + "9" * 5000, "/api/jobs?offset=" + "1" * 5000):
        response = await client.get(path)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_parameter"


async def test_client_vanishing_mid_body_logs_no_traceback(
    daemon_client, secret, caplog
):
    client = await daemon_client()
    body = body_of(error="x" * 5000)
    signed = signed_headers(secret, body)
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in signed.items())
        + "\r\n"
    ).encode()
    caplog.set_level(logging.INFO)
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(head + body[:100])
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (await (await client.get("/api/jobs")).json())["total"] == 0
