"""Every rule the webhook route enforces, one test per rule, through the real app.

Each refusal is checked for its status, the one JSON error shape and its stable
code, and for leaving nothing behind in the database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDict

from daemon.receive.signature import decode_secret, sign, verify
from tests.helpers import WEBHOOK_PATH, new_secret, payload, signed_headers

JOB_ID = "k7m3x9q2v5rgc0cm4z1b8n6w2t"  # the id in the training_*.json payloads
TOLERANCE_S = 300  # the default webhook.timestamp_tolerance_s
SMALL_CAP = 2048


def job_body(
    job_id: str = "rulejob01", status: str = "starting", **fields: Any
) -> bytes:
    return json.dumps({"id": job_id, "status": status, **fields}).encode()


def sized_job_body(size: int, job_id: str = "sizedjob01") -> bytes:
    """A valid job snapshot of exactly `size` bytes (padded in its logs)."""
    bare = job_body(job_id, logs="")
    body = job_body(job_id, logs="x" * (size - len(bare)))
    assert len(body) == size
    return body


def utf8_signature(secret: str, msg_id: str, stamp: str, body: bytes) -> str:
    """A v1 entry over UTF-8 header text, for headers the daemon must refuse."""
    content = f"{msg_id}.{stamp}.".encode() + body
    mac = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def error_of(document: Any) -> tuple[str, str]:
    assert isinstance(document, dict)
    assert set(document) == {"error"}, document
    error = document["error"]
    assert set(error) == {"code", "message"}, document
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error["code"], error["message"]


async def assert_refused(response: Any, status: int, code: str) -> str:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    got, message = error_of(json.loads(text))
    assert got == code, text
    return message


async def job_total(client: Any) -> int:
    response = await client.get("/api/jobs")
    assert response.status == 200
    total = (await response.json())["total"]
    assert isinstance(total, int)
    return total


async def get_job(client: Any, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/jobs/{job_id}")
    assert response.status == 200, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def deliver(client: Any, secret: str, body: bytes, **kwargs: Any) -> Any:
    return await client.post(
        WEBHOOK_PATH, data=body, headers=signed_headers(secret, body, **kwargs)
    )


async def accepted(response: Any) -> dict[str, Any]:
    assert response.status == 200, await response.text()
    document: dict[str, Any] = await response.json()
    assert document["ok"] is True
    return document


# Body size and encoding -----------------------------------------------------------


async def test_webhook_rejects_body_too_large_by_content_length(daemon_client, secret):
    client = await daemon_client(webhook__max_body_bytes=SMALL_CAP)
    # A correctly signed job at the cap, then extra bytes the signature also covers:
    # only the declared length can refuse it.
    body = sized_job_body(SMALL_CAP) + b" " * 1024
    response = await deliver(client, secret, body)
    await assert_refused(response, 413, "body_too_large")
    assert await job_total(client) == 0


async def raw_exchange(client: Any, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes to the daemon's loopback port; return status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status = int(head.split(" ", 2)[1])
            length = next(
                int(line.partition(":")[2])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            return status, await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_webhook_rejects_declared_content_length_without_reading_the_body(
    daemon_client, secret
):
    client = await daemon_client(webhook__max_body_bytes=SMALL_CAP)
    headers = signed_headers(secret, b"{}")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    # 100 MB announced, one byte sent: only a check of the declared length answers.
    request = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
        "Content-Length: 100000000\r\n\r\n{"
    ).encode()
    status, body = await raw_exchange(client, request)
    assert status == 413
    assert error_of(json.loads(body))[0] == "body_too_large"
    assert await job_total(client) == 0


async def test_webhook_accepts_body_exactly_at_max_body_bytes(daemon_client, secret):
    client = await daemon_client(webhook__max_body_bytes=SMALL_CAP)
    body = sized_job_body(SMALL_CAP)
    await accepted(await deliver(client, secret, body))
    chunked = sized_job_body(SMALL_CAP, job_id="sizedjob02")
    response = await client.post(
        WEBHOOK_PATH, data=_chunks(chunked), headers=signed_headers(secret, chunked)
    )
    await accepted(response)
    assert await job_total(client) == 2


async def _chunks(body: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_webhook_rejects_chunked_body_crossing_max_body_bytes(
    daemon_client, secret
):
    client = await daemon_client(webhook__max_body_bytes=SMALL_CAP)
    # The first SMALL_CAP bytes are a complete, correctly signed job: a reader that
    # truncated at the cap and went on to verify would accept it.
    prefix = sized_job_body(SMALL_CAP)
    headers = signed_headers(secret, prefix)
    response = await client.post(
        WEBHOOK_PATH, data=_chunks(prefix + b" " * 1024), headers=headers
    )
    assert "Content-Length" not in response.request_info.headers
    await assert_refused(response, 413, "body_too_large")
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
        ("identity, gzip", gzip.compress),
    ],
)
async def test_webhook_rejects_content_encoding(
    daemon_client, secret, encoding, encode
):
    client = await daemon_client()
    raw = job_body()
    sent = encode(raw)
    for signed in (raw, sent):  # signed as decoded or as sent: both refused
        headers = {**signed_headers(secret, signed), "Content-Encoding": encoding}
        response = await client.post(WEBHOOK_PATH, data=sent, headers=headers)
        await assert_refused(response, 415, "unsupported_encoding")
    assert await job_total(client) == 0


async def test_webhook_accepts_identity_content_encoding(daemon_client, secret):
    client = await daemon_client()
    body = job_body()
    headers = {**signed_headers(secret, body), "Content-Encoding": "identity"}
    await accepted(await client.post(WEBHOOK_PATH, data=body, headers=headers))


# Signature headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
async def test_webhook_rejects_duplicate_header_with_two_values(
    daemon_client, secret, name
):
    client = await daemon_client()
    body = job_body()
    good = signed_headers(secret, body)
    other = signed_headers(secret, body, timestamp=int(good["webhook-timestamp"]) - 1)
    other["webhook-id"] = good["webhook-id"] + "x"
    lines = CIMultiDict(good)
    lines.add(name, other[name])
    response = await client.post(WEBHOOK_PATH, data=body, headers=lines)
    message = await assert_refused(response, 400, "duplicate_header")
    assert name in message
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "name", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
async def test_webhook_accepts_header_repeated_with_the_same_value(
    daemon_client, secret, name
):
    client = await daemon_client()
    body = job_body()
    lines = CIMultiDict(signed_headers(secret, body))
    lines.add(name, lines[name])
    await accepted(await client.post(WEBHOOK_PATH, data=body, headers=lines))
    assert await job_total(client) == 1


@pytest.mark.parametrize(
    "name", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
async def test_webhook_rejects_missing_signature_header(daemon_client, secret, name):
    client = await daemon_client()
    body = job_body()
    headers = signed_headers(secret, body)
    del headers[name]
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    message = await assert_refused(response, 401, "invalid_signature")
    assert name in message
    assert await job_total(client) == 0


def _entry(secret: str, headers: dict[str, str], body: bytes) -> str:
    """The base64 part of the correct v1 signature for these headers."""
    stamp, msg_id = headers["webhook-timestamp"], headers["webhook-id"]
    return sign(decode_secret(secret), msg_id, stamp, body).partition(",")[2]


MALFORMED_SIGNATURES = {
    "no-version": "{sig}",
    "no-comma": "v1{sig}",
    "colon-separator": "v1:{sig}",
    "version-only": "v1",
    "empty-signature": "v1,",
    "comma-only": ",",
    "two-commas": "v1,{sig},",
    "upper-case-version": "V1,{sig}",
    "unpadded": "v1,{unpadded}",
    "trailing-garbage": "v1,{sig}AAAA",
    "whitespace-only": " ",
}


@pytest.mark.parametrize(
    "template", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys()
)
async def test_webhook_rejects_malformed_signature_header(
    daemon_client, secret, template
):
    client = await daemon_client()
    body = job_body()
    headers = signed_headers(secret, body)
    sig = _entry(secret, headers, body)
    headers["webhook-signature"] = template.format(sig=sig, unpadded=sig.rstrip("="))
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    await assert_refused(response, 401, "invalid_signature")
    assert await job_total(client) == 0


async def test_webhook_rejects_signature_made_with_a_wrong_secret(
    daemon_client, secret
):
    client = await daemon_client()
    body = job_body()
    response = await deliver(client, new_secret(), body)
    await assert_refused(response, 401, "invalid_signature")
    assert await job_total(client) == 0


async def test_webhook_rejects_signature_over_other_bytes(daemon_client, secret):
    client = await daemon_client()
    body = job_body()
    headers = signed_headers(secret, body)
    tampered = job_body(status="succeeded")
    response = await client.post(WEBHOOK_PATH, data=tampered, headers=headers)
    await assert_refused(response, 401, "invalid_signature")
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "header", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
async def test_webhook_rejects_non_ascii_header_value(daemon_client, secret, header):
    client = await daemon_client()
    body = job_body()
    msg_id, stamp = "msg_nonascii_é", str(int(time.time()))
    correct = sign(decode_secret(secret), "msg_ascii_1", stamp, body)
    headers = {
        "webhook-id": "msg_ascii_1",
        "webhook-timestamp": stamp,
        "webhook-signature": correct,
    }
    if header == "webhook-id":  # signed over the UTF-8 text, so only ASCII matters
        headers["webhook-id"] = msg_id
        headers["webhook-signature"] = utf8_signature(secret, msg_id, stamp, body)
    elif header == "webhook-timestamp":  # "²" is a digit to str.isdigit()
        stamp += "²"
        headers["webhook-timestamp"] = stamp
        sig = utf8_signature(secret, "msg_ascii_1", stamp, body)
        headers["webhook-signature"] = sig
    else:  # a correct entry beside a non-ASCII one
        headers["webhook-signature"] = correct + " v1,é"
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    await assert_refused(response, 401, "invalid_signature")
    assert await job_total(client) == 0


@pytest.mark.parametrize("header", [b"webhook-id", b"webhook-signature"])
async def test_webhook_rejects_header_bytes_that_are_not_utf8(
    daemon_client, secret, header
):
    client = await daemon_client()
    body = job_body()
    headers = signed_headers(secret, body)
    lines = [
        f"{name}: {value}".encode()
        for name, value in headers.items()
        if name != header.decode()
    ]
    lines.append(header + b": " + headers[header.decode()].encode() + b"\xff\xfe")
    request = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"".join(line + b"\r\n" for line in lines)
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    status, answer = await raw_exchange(client, request)
    assert status == 401
    assert error_of(json.loads(answer))[0] == "invalid_signature"
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "entry", ["v1,invalid_signature", "v1,!!!!", "v1,dGVzdA", "v1,====", "v1,a b"]
)
async def test_webhook_rejects_bad_base64_signature(daemon_client, secret, entry):
    client = await daemon_client()
    body = job_body()
    headers = {**signed_headers(secret, body), "webhook-signature": entry}
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    await assert_refused(response, 401, "invalid_signature")
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "template", ["v1a,{sig}", "v2,{sig}", "v1a,{sig} v2,{sig}", "v0,{sig}"]
)
async def test_webhook_rejects_correct_mac_under_a_version_other_than_v1(
    daemon_client, secret, template
):
    client = await daemon_client()
    body = job_body()
    headers = signed_headers(secret, body)
    headers["webhook-signature"] = template.format(sig=_entry(secret, headers, body))
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    await assert_refused(response, 401, "invalid_signature")
    assert await job_total(client) == 0


async def test_webhook_accepts_v1_entry_among_other_versions(daemon_client, secret):
    client = await daemon_client()
    body = job_body()
    headers = signed_headers(secret, body)
    sig = _entry(secret, headers, body)
    headers["webhook-signature"] = f"v1a,{sig} v2,AAAA v1,{sig}"
    await accepted(await client.post(WEBHOOK_PATH, data=body, headers=headers))


# Timestamp window -----------------------------------------------------------------


def _outside(direction: int) -> int:
    """One second past the window, rounded away from it so latency cannot help."""
    clock = time.time()
    if direction < 0:
        return math.floor(clock) - TOLERANCE_S - 1
    return math.ceil(clock) + TOLERANCE_S + 1


def _inside(direction: int) -> int:
    """At the edge of the window (future) or one second in (past, to absorb latency)."""
    clock = time.time()
    if direction < 0:
        return math.ceil(clock) - TOLERANCE_S + 1
    return math.floor(clock) + TOLERANCE_S


async def test_webhook_rejects_stale_timestamp(daemon_client, secret):
    client = await daemon_client()
    response = await deliver(client, secret, job_body(), timestamp=_outside(-1))
    message = await assert_refused(response, 401, "stale_timestamp")
    assert str(TOLERANCE_S) in message
    assert await job_total(client) == 0


async def test_webhook_rejects_future_timestamp(daemon_client, secret):
    client = await daemon_client()
    response = await deliver(client, secret, job_body(), timestamp=_outside(+1))
    message = await assert_refused(response, 401, "future_timestamp")
    assert str(TOLERANCE_S) in message
    assert await job_total(client) == 0


@pytest.mark.parametrize("direction", [-1, +1], ids=["past", "future"])
async def test_webhook_accepts_timestamp_just_inside_tolerance(
    daemon_client, secret, direction
):
    client = await daemon_client()
    body = job_body()
    await accepted(await deliver(client, secret, body, timestamp=_inside(direction)))
    assert await job_total(client) == 1


@pytest.mark.parametrize(
    ("offset", "verdict"),
    [
        (-TOLERANCE_S - 1, "stale_timestamp"),
        (-TOLERANCE_S, "valid"),
        (0, "valid"),
        (TOLERANCE_S, "valid"),
        (TOLERANCE_S + 1, "future_timestamp"),
    ],
)
def test_webhook_timestamp_window_is_inclusive_at_exactly_the_tolerance(
    secret, offset, verdict
):
    # The HTTP tests above need a second of slack; a pinned clock pins the edges.
    now = 1_700_000_000
    body = job_body()
    headers = signed_headers(secret, body, timestamp=now + offset)
    result = verify(
        [decode_secret(secret)],
        headers["webhook-id"],
        headers["webhook-timestamp"],
        headers["webhook-signature"],
        body,
        now=now,
        tolerance_s=TOLERANCE_S,
    )
    assert result.verdict.value == verdict
    assert result.ok is (verdict == "valid")


async def test_webhook_timestamp_window_follows_configured_tolerance(
    daemon_client, secret
):
    client = await daemon_client(webhook__timestamp_tolerance_s=30)
    stale = math.floor(time.time()) - 31
    response = await deliver(client, secret, job_body(), timestamp=stale)
    await assert_refused(response, 401, "stale_timestamp")
    fresh = math.ceil(time.time()) - 28
    await accepted(await deliver(client, secret, job_body(), timestamp=fresh))


NON_DIGIT_TIMESTAMPS = {
    "empty": "",
    "letters": "{now}abc",
    "negative": "-{now}",
    "plus-sign": "+{now}",
    "decimal": "{now}.0",
    "exponent": "1.6e9",
    "hex": "0x6037c5f2",
    "inner-space": "{now} 1",
    "too-many-digits": "0000000{now}",
    "arabic-indic-digits": "١٦١٤٢٦٥٣٣٠",
}


@pytest.mark.parametrize(
    "template", NON_DIGIT_TIMESTAMPS.values(), ids=NON_DIGIT_TIMESTAMPS.keys()
)
async def test_webhook_rejects_timestamp_that_is_not_whole_seconds(
    daemon_client, secret, template
):
    client = await daemon_client()
    body = job_body()
    stamp = template.format(now=int(time.time()))
    headers = {
        "webhook-id": "msg_timestamp_format",
        "webhook-timestamp": stamp,
        # Signed over the very text sent, so only its format can be at fault.
        "webhook-signature": utf8_signature(
            secret, "msg_timestamp_format", stamp, body
        ),
    }
    response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    await assert_refused(response, 401, "invalid_signature")
    assert await job_total(client) == 0


# Body shape -----------------------------------------------------------------------


INVALID_JSON = {
    "not-json": b"not json",
    "empty": b"",
    "truncated": b'{"id": "rulejob01", "status": "start',
    "not-utf8": b'{"id": "rulejob01", "status": "starting", "x": "\xff\xfe"}',
    "nan": b'{"id": "rulejob01", "status": "starting", "n": NaN}',
    "infinity": b'{"id": "rulejob01", "status": "starting", "n": -Infinity}',
    "float-overflow": b'{"id": "rulejob01", "status": "starting", "n": 1e999}',
}


@pytest.mark.parametrize("body", INVALID_JSON.values(), ids=INVALID_JSON.keys())
async def test_webhook_rejects_invalid_json(daemon_client, secret, body):
    client = await daemon_client()
    await assert_refused(await deliver(client, secret, body), 400, "invalid_json")
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "body", [b"[]", b'[{"id": "rulejob01", "status": "starting"}]', b'"x"', b"null"]
)
async def test_webhook_rejects_json_that_is_not_an_object(daemon_client, secret, body):
    client = await daemon_client()
    await assert_refused(await deliver(client, secret, body), 400, "invalid_body")
    assert await job_total(client) == 0


MISSING_FIELDS = {
    "no-id": {"status": "starting"},
    "no-status": {"id": "rulejob01"},
    "null-id": {"id": None, "status": "starting"},
    "numeric-id": {"id": 12345, "status": "starting"},
    "numeric-status": {"id": "rulejob01", "status": 1},
    "list-status": {"id": "rulejob01", "status": ["starting"]},
}


@pytest.mark.parametrize("doc", MISSING_FIELDS.values(), ids=MISSING_FIELDS.keys())
async def test_webhook_rejects_body_missing_string_id_or_status(
    daemon_client, secret, doc
):
    client = await daemon_client()
    response = await deliver(client, secret, json.dumps(doc).encode())
    await assert_refused(response, 422, "missing_fields")
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "job_id",
    ["../x", "a/b", "..", "x y", "", "abc\n", "é", "a%2Fb", "a" * 129],
    ids=[
        "dot-dot-slash",
        "slash",
        "dot-dot",
        "space",
        "empty",
        "trailing-newline",
        "non-ascii",
        "percent",
        "too-long",
    ],
)
async def test_webhook_rejects_path_like_or_odd_job_id(daemon_client, secret, job_id):
    client = await daemon_client()
    response = await deliver(client, secret, job_body(job_id))
    await assert_refused(response, 422, "invalid_id")
    assert await job_total(client) == 0


@pytest.mark.parametrize(
    "status", ["Succeeded", "", "succeeded\n", "in progress", "x" * 33]
)
async def test_webhook_rejects_status_that_is_not_lower_case_letters(
    daemon_client, secret, status
):
    client = await daemon_client()
    response = await deliver(client, secret, job_body(status=status))
    await assert_refused(response, 422, "invalid_status")
    assert await job_total(client) == 0


# Duplicates -----------------------------------------------------------------------


async def test_webhook_same_id_and_bytes_is_a_duplicate_that_changes_nothing(
    daemon_client, secret
):
    client = await daemon_client()
    starting, succeeded = (
        payload("training_starting.json"),
        payload("training_succeeded.json"),
    )
    first = signed_headers(secret, starting)
    await accepted(await client.post(WEBHOOK_PATH, data=starting, headers=first))
    await accepted(await deliver(client, secret, succeeded))
    before = await get_job(client, JOB_ID)
    assert before["status"] == "succeeded"
    assert len(before["history"]) == 2

    # A retry keeps webhook-id and bytes but is signed again at a later time.
    retry = signed_headers(
        secret, starting, msg_id=first["webhook-id"], timestamp=int(time.time()) + 1
    )
    assert retry["webhook-signature"] != first["webhook-signature"]
    for headers in (first, retry):
        response = await client.post(WEBHOOK_PATH, data=starting, headers=headers)
        document = await accepted(response)
        assert document["duplicate"] is True
        assert document["job_id"] == JOB_ID
        assert document["status"] == "succeeded"
    # Output delivery runs on its own schedule; the job's own record must not move.
    after = await get_job(client, JOB_ID)
    for document in (before, after):
        document.pop("deliveries")
    assert after == before
    assert await job_total(client) == 1


async def test_webhook_same_id_with_other_bytes_is_webhook_id_conflict(
    daemon_client, secret
):
    client = await daemon_client()
    starting = payload("training_starting.json")
    first = signed_headers(secret, starting)
    await accepted(await client.post(WEBHOOK_PATH, data=starting, headers=first))
    before = await get_job(client, JOB_ID)

    succeeded = payload("training_succeeded.json")
    response = await deliver(client, secret, succeeded, msg_id=first["webhook-id"])
    await assert_refused(response, 409, "webhook_id_conflict")
    # One byte of difference is enough.
    spaced = starting + b"\n"
    response = await deliver(client, secret, spaced, msg_id=first["webhook-id"])
    await assert_refused(response, 409, "webhook_id_conflict")
    assert await get_job(client, JOB_ID) == before


async def test_webhook_twenty_concurrent_identical_deliveries_record_one_row(
    daemon_client, secret
):
    client = await daemon_client()
    body = payload("training_starting.json")
    headers = signed_headers(secret, body)
    responses = await asyncio.gather(
        *(client.post(WEBHOOK_PATH, data=body, headers=headers) for _ in range(20))
    )
    documents = [await accepted(response) for response in responses]
    assert (
        sorted(document["duplicate"] for document in documents) == [False] + [True] * 19
    )
    job = await get_job(client, JOB_ID)
    assert len(job["history"]) == 1
    assert job["history"][0]["webhook_id"] == headers["webhook-id"]
    assert await job_total(client) == 1


# Secret rotation ------------------------------------------------------------------


@pytest.mark.parametrize("separator", [" ", "\n", "\t  "])
async def test_webhook_accepts_either_of_two_rotated_secrets(
    daemon_client, make_settings, separator
):
    old, new = new_secret(), new_secret()
    settings = make_settings(env={"REPLICATE_WEBHOOK_SECRET": f"{old}{separator}{new}"})
    client = await daemon_client(settings)
    await accepted(await deliver(client, old, job_body("rotated01")))
    await accepted(await deliver(client, new, job_body("rotated02")))
    response = await deliver(client, new_secret(), job_body("rotated03"))
    await assert_refused(response, 401, "invalid_signature")
    assert (await get_job(client, "rotated01"))["history"][0]["signature"] == (
        "v1 key 1"
    )
    assert (await get_job(client, "rotated02"))["history"][0]["signature"] == (
        "v1 key 2"
    )
    assert await job_total(client) == 2


async def test_webhook_accepts_header_whose_second_v1_entry_matches(
    daemon_client, secret
):
    client = await daemon_client()
    body = job_body()
    headers = signed_headers(secret, body)
    wrong = signed_headers(
        new_secret(),
        body,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
    )
    headers["webhook-signature"] = (
        f"{wrong['webhook-signature']} {headers['webhook-signature']}"
    )
    await accepted(await client.post(WEBHOOK_PATH, data=body, headers=headers))
    assert await job_total(client) == 1


# Nothing stored, nothing leaked ---------------------------------------------------


def _rejected_deliveries(secret: str) -> list[tuple[bytes, Any]]:
    """(body, headers) pairs, each carrying a real job, each refused for one rule."""
    body = job_body("neverstored")
    now = int(time.time())

    def headers(**changes: str) -> CIMultiDict[str]:
        base = signed_headers(secret, body)
        base.update(changes)
        return CIMultiDict(base)

    twice = headers()
    twice.add("webhook-id", "msg_other")
    gz = gzip.compress(body)
    return [
        (body, headers(**{"webhook-signature": "v1,AAAA"})),
        (body, CIMultiDict(signed_headers(new_secret(), body))),
        (body, CIMultiDict(signed_headers(secret, body, timestamp=now - 3600))),
        (body, CIMultiDict(signed_headers(secret, body, timestamp=now + 3600))),
        (body, twice),
        (gz, CIMultiDict({**signed_headers(secret, gz), "Content-Encoding": "gzip"})),
        (body + b" " * 4096, CIMultiDict(signed_headers(secret, body + b" " * 4096))),
        (job_body("../neverstored"), None),
    ]


async def test_webhook_stores_nothing_for_any_rejected_delivery(daemon_client, secret):
    client = await daemon_client(webhook__max_body_bytes=SMALL_CAP)
    for body, headers in _rejected_deliveries(secret):
        if headers is None:
            headers = signed_headers(secret, body)
        response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
        assert 400 <= response.status < 500, await response.text()
        error_of(await response.json())
    assert await job_total(client) == 0
    response = await client.get("/api/jobs/neverstored")
    await assert_refused(response, 404, "job_not_found")
    # The same daemon still records a good delivery: the refusals were the rules.
    await accepted(await deliver(client, secret, job_body("neverstored")))
    assert await job_total(client) == 1


async def test_webhook_never_logs_or_answers_with_the_secret_or_a_signature(
    daemon_client, make_settings, caplog
):
    caplog.set_level(logging.DEBUG)
    current, previous = new_secret(), new_secret()
    settings = make_settings(
        env={"REPLICATE_WEBHOOK_SECRET": f"{current} {previous}"},
        webhook__max_body_bytes=SMALL_CAP,
    )
    client = await daemon_client(settings)
    sent_signatures: list[str] = []
    answers: list[str] = []

    async def post(body: bytes, headers: Any) -> None:
        sent_signatures.extend(headers.getall("webhook-signature", []))
        response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
        answers.append(await response.text())

    for body, headers in _rejected_deliveries(current):
        await post(body, headers or CIMultiDict(signed_headers(current, body)))
    good = job_body("leakcheck")
    signed = CIMultiDict(signed_headers(previous, good))
    await post(good, signed)
    await post(good, signed)  # duplicate
    await post(job_body("leakcheck", status="failed"), signed)  # conflict
    assert json.loads(answers[-3])["ok"] is True

    secrets = [current, previous]
    secrets += [text.removeprefix("whsec_") for text in secrets]
    signatures = [
        part
        for header in sent_signatures
        for entry in header.split()
        if len(part := entry.partition(",")[2]) >= 8
    ]
    assert signatures
    logged = [record.getMessage() for record in caplog.records] + [caplog.text]
    assert any("webhook refused" in line for line in logged), "logging was captured"
    for needle in secrets + signatures:
        for text in logged + answers:
            assert needle not in text


# Routing --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api/nope", WEBHOOK_PATH + "/extra"])
async def test_unknown_route_answers_404_in_the_json_error_shape(daemon_client, path):
    client = await daemon_client()
    response = await client.get(path)
    await assert_refused(response, 404, "not_found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_webhook_path_with_another_method_answers_405_json(daemon_client, method):
    client = await daemon_client()
    response = await client.request(method, WEBHOOK_PATH)
    await assert_refused(response, 405, "method_not_allowed")
    assert "POST" in response.headers.get("Allow", "")
