"""Standard Webhooks verification, the symmetric `v1` (HMAC-SHA256) scheme.

The signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`; the key is the
base64 part of a `whsec_` secret. The header holds space-separated `version,base64`
entries: every `v1` entry is compared in constant time with every configured key
(several keys allow rotation) and entries of other versions are skipped. A forged or
malformed header is an `invalid` verdict, never an exception. The signature is
checked before the timestamp window, so `stale`/`future` verdicts mean the message
itself was authentic and only the clock disagrees.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from daemon import limits

SECRET_PREFIX = "whsec_"
_SIGNATURE_BYTES = 32  # HMAC-SHA256


class Verdict(StrEnum):
    VALID = "valid"
    INVALID = "invalid_signature"
    STALE = "stale_timestamp"
    FUTURE = "future_timestamp"


@dataclass(frozen=True)
class Verification:
    verdict: Verdict
    reason: str
    key_index: int | None = None  # which configured key matched, counted from 1

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VALID


def decode_secret(text: str) -> bytes:
    """Turn `whsec_<base64>` (or the bare base64) into HMAC key bytes.

    Raises ValueError with a reason that never contains the secret.
    """
    body = text.strip()
    if body.startswith(SECRET_PREFIX):
        body = body[len(SECRET_PREFIX) :]
    if not body:
        raise ValueError("empty secret")
    padded = body + "=" * (-len(body) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64 after the whsec_ prefix") from None
    if len(key) < limits.MIN_SECRET_BYTES:
        raise ValueError(
            f"key is {len(key)} bytes; a signing secret has at least "
            f"{limits.MIN_SECRET_BYTES}"
        )
    return key


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """Return the `v1,<base64>` signature entry for one message."""
    mac = hmac.new(key, _signed_content(msg_id, timestamp, body), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def verify(
    keys: Sequence[bytes],
    msg_id: str,
    timestamp: str,
    signature_header: str,
    body: bytes,
    *,
    now: float,
    tolerance_s: int = limits.TIMESTAMP_TOLERANCE_S,
) -> Verification:
    """Check one delivery's headers against the raw body."""
    problem = header_problem(msg_id, timestamp, signature_header)
    if problem:
        return Verification(Verdict.INVALID, problem)

    content = _signed_content(msg_id, timestamp, body)
    expected = [hmac.new(key, content, hashlib.sha256).digest() for key in keys]
    matched = _match(expected, _v1_signatures(signature_header))
    if matched is None:
        return Verification(Verdict.INVALID, "no v1 signature matches a known secret")

    skew = int(timestamp) - now
    if skew < -tolerance_s:
        reason = f"timestamp is {int(-skew)} s old (tolerance {tolerance_s} s)"
        return Verification(Verdict.STALE, reason, matched)
    if skew > tolerance_s:
        reason = f"timestamp is {int(skew)} s ahead (tolerance {tolerance_s} s)"
        return Verification(Verdict.FUTURE, reason, matched)
    return Verification(Verdict.VALID, "signature matches", matched)


def _signed_content(msg_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("ascii") + body


def header_problem(msg_id: str, timestamp: str, signature_header: str) -> str | None:
    """Why the three headers cannot carry a valid signature, or None."""
    if not msg_id or len(msg_id) > limits.MAX_WEBHOOK_ID_CHARS:
        return "webhook-id is empty or too long"
    if not (msg_id.isascii() and msg_id.isprintable()):
        return "webhook-id is not printable ASCII"
    if not (timestamp.isascii() and timestamp.isdigit()):
        return "webhook-timestamp is not a whole number of seconds"
    if len(timestamp) > limits.MAX_TIMESTAMP_DIGITS:
        return "webhook-timestamp is too long"
    if not signature_header.strip():
        return "webhook-signature is empty"
    if not signature_header.isascii():
        return "webhook-signature is not ASCII"
    if len(signature_header.split()) > limits.MAX_SIGNATURE_ENTRIES:
        return f"webhook-signature has over {limits.MAX_SIGNATURE_ENTRIES} entries"
    return None


def _v1_signatures(header: str) -> list[bytes]:
    """Decode every well-formed `v1,` entry; malformed entries are skipped."""
    found = []
    for entry in header.split():
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == _SIGNATURE_BYTES:
            found.append(raw)
    return found


def _match(expected: list[bytes], offered: list[bytes]) -> int | None:
    """Index (from 1) of the first key whose MAC is among the offered signatures.

    Every pair is compared so the time taken does not depend on which one matches.
    """
    matched = None
    for index, mac in enumerate(expected, start=1):
        for candidate in offered:
            if hmac.compare_digest(mac, candidate) and matched is None:
                matched = index
    return matched
