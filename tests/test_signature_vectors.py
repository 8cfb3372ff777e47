"""Every published signature vector, through the CLI and through the HTTP endpoint.

The vectors (../shared/reference/vectors/signature_vectors.json) pin the verifier's
clock with `now`. The CLI takes that clock as --now, so it sees each vector exactly
as published. The HTTP endpoint uses the real clock, so time-bound vectors are
re-signed relative to now with the vector's own secret, id and body: a `valid`
vector must then pass the signature check, an `invalid` one must still fail it, and
an `expired` one must fail on the clock by the same skew in the same direction.
"""

from __future__ import annotations

import base64
import math
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.receive.signature import decode_secret, sign
from tests.helpers import WEBHOOK_PATH, run_cli, signature_vectors

VECTORS = signature_vectors()
VERDICTS = ("valid", "invalid", "expired")


def _by_verdict(*verdicts: str) -> Any:
    chosen = [vector for vector in VECTORS if vector["expected"] in verdicts]
    return pytest.mark.parametrize(
        "vector", chosen, ids=[vector["name"] for vector in chosen]
    )


def _body(vector: dict[str, Any]) -> bytes:
    return base64.b64decode(vector["body_base64"])


def _settings_for(make_settings: Any, vector: dict[str, Any]) -> Any:
    return make_settings(
        env={"REPLICATE_WEBHOOK_SECRET": vector["secret"]},
        webhook__timestamp_tolerance_s=vector["tolerance_seconds"],
    )


def _error(document: dict[str, Any]) -> tuple[str, str]:
    assert set(document) == {"error"}, document
    assert set(document["error"]) == {"code", "message"}, document
    return document["error"]["code"], document["error"]["message"]


def test_vector_file_has_every_verdict_and_consistent_bodies():
    assert len(VECTORS) >= 10
    assert {vector["expected"] for vector in VECTORS} == set(VERDICTS)
    names = [vector["name"] for vector in VECTORS]
    assert len(names) == len(set(names)), "vector names must be unique test ids"
    for vector in VECTORS:
        assert _body(vector) == vector["body"].encode(), vector["name"]


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_cli_verify_signature_prints_the_vector_verdict(
    vector: dict[str, Any], tmp_path: Path
):
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(_body(vector))
    result = run_cli(
        "verify-signature",
        "--secret", vector["secret"],
        "--id", vector["id"],
        "--timestamp", vector["timestamp"],
        "--signature", vector["signature_header"],
        "--body-file", str(body_file),
        "--now", str(vector["now"]),
        "--tolerance", str(vector["tolerance_seconds"]),
    )  # fmt: skip
    assert result.stdout.startswith(vector["expected"] + ":"), (
        result.stdout,
        result.stderr,
    )
    assert "Traceback" not in result.stderr
    expected_exit = 0 if vector["expected"] == "valid" else 1
    assert result.returncode == expected_exit, (result.stdout, result.stderr)


@_by_verdict("valid")
async def test_http_valid_vector_resigned_now_passes_the_signature_check(
    vector: dict[str, Any], daemon_client: Any, make_settings: Any
):
    client = await daemon_client(_settings_for(make_settings, vector))
    key = decode_secret(vector["secret"])
    body = _body(vector)
    stamp = str(int(time.time()))
    old_entry = sign(key, vector["id"], vector["timestamp"], body)
    new_entry = sign(key, vector["id"], stamp, body)
    # Keep the vector's header shape (extra v1/v2 entries, order) and swap only the
    # entries that matched at the vector's own timestamp for today's signature.
    entries = vector["signature_header"].split(" ")
    assert old_entry in entries, "a valid vector carries its own v1 signature"
    header = " ".join(new_entry if entry == old_entry else entry for entry in entries)
    response = await client.post(
        WEBHOOK_PATH,
        data=body,
        headers={
            "webhook-id": vector["id"],
            "webhook-timestamp": stamp,
            "webhook-signature": header,
        },
    )
    # The signature passes; the body is not a Replicate job (no id/status).
    assert response.status == 422, await response.text()
    code, _ = _error(await response.json())
    assert code == "missing_fields"


@_by_verdict("valid")
async def test_http_valid_vector_as_published_is_authentic_but_stale(
    vector: dict[str, Any], daemon_client: Any, make_settings: Any
):
    client = await daemon_client(_settings_for(make_settings, vector))
    response = await client.post(
        WEBHOOK_PATH,
        data=_body(vector),
        headers={
            "webhook-id": vector["id"],
            "webhook-timestamp": vector["timestamp"],
            "webhook-signature": vector["signature_header"],
        },
    )
    assert response.status == 401
    code, _ = _error(await response.json())
    assert code == "stale_timestamp"


@_by_verdict("invalid")
@pytest.mark.parametrize("when", ["now", "published"])
async def test_http_invalid_vector_is_refused_as_invalid_signature(
    vector: dict[str, Any], when: str, daemon_client: Any, make_settings: Any
):
    # The signature is judged before the clock, so even at the vector's old
    # timestamp the verdict is invalid_signature, never stale_timestamp.
    client = await daemon_client(_settings_for(make_settings, vector))
    stamp = str(int(time.time())) if when == "now" else vector["timestamp"]
    response = await client.post(
        WEBHOOK_PATH,
        data=_body(vector),
        headers={
            "webhook-id": vector["id"],
            "webhook-timestamp": stamp,
            "webhook-signature": vector["signature_header"],
        },
    )
    assert response.status == 401
    code, message = _error(await response.json())
    assert code == "invalid_signature"
    assert vector["signature_header"] not in message


@_by_verdict("expired")
async def test_http_expired_vector_with_same_skew_from_now_is_refused_on_the_clock(
    vector: dict[str, Any], daemon_client: Any, make_settings: Any
):
    client = await daemon_client(_settings_for(make_settings, vector))
    skew = vector["now"] - int(vector["timestamp"])  # > 0: old, < 0: from the future
    assert abs(skew) > vector["tolerance_seconds"]
    clock = time.time()
    # Round away from the window so the request's own latency cannot bring the
    # timestamp back inside it.
    stamp = str(math.floor(clock) - skew if skew > 0 else math.ceil(clock) - skew)
    body = _body(vector)
    key = decode_secret(vector["secret"])
    response = await client.post(
        WEBHOOK_PATH,
        data=body,
        headers={
            "webhook-id": vector["id"],
            "webhook-timestamp": stamp,
            "webhook-signature": sign(key, vector["id"], stamp, body),
        },
    )
    assert response.status == 401
    code, _ = _error(await response.json())
    assert code == ("stale_timestamp" if skew > 0 else "future_timestamp")
