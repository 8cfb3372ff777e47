"""What a submit asks for, checked, and its row in `submissions`.

A submission is `pending` from before Replicate is called until the answer is
recorded: `submitted` (with the job id) or `failed` (with the reason). A pending
row outliving its request means the daemon died or Replicate never confirmed;
reconciliation settles it. One idempotency key names one submission: asking
again with the same request returns it, with another request is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon import limits
from daemon.settings import Settings

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9]{1,128}$")
_KEY = re.compile("^[\\x21-\\x7e]{1," + str(limits.IDEMPOTENCY_KEY_MAX) + "}$")
# Configuration keys whose values are credentials: those belong in the trainer's
# secret inputs, which Replicate redacts, never in the stored configuration.
_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|api_?key|access_?key|private_?key)", re.I
)
_FIELDS = {
    "config",
    "dataloader",
    "lycoris",
    "model",
    "version",
    "destination",
    "hardware",
    "dataset",
    "max_train_steps",
    "hub_model_id",
    "idempotency_key",
}


class SubmitRefused(Exception):
    """A refusal with its HTTP status; `field` names the request field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass(frozen=True)
class SubmitRequest:
    config: dict[str, Any]
    dataloader: list[Any]
    lycoris: dict[str, Any] | None
    model: str
    version: str | None  # None: the newest at submit time
    destination: str
    hardware: str
    dataset: str | None  # absolute path on this machine
    max_train_steps: int | None
    hub_model_id: str | None

    def training_input(self, files_url: str | None) -> dict[str, Any]:
        """The trainer's input, secrets apart (see `secret_inputs`)."""
        found: dict[str, Any] = {
            "config_json": canonical(self.config),
            "dataloader_json": canonical(self.dataloader),
        }
        if self.lycoris is not None:
            found["lycoris_config"] = canonical(self.lycoris)
        if files_url is not None:
            found["images"] = files_url
        if self.max_train_steps is not None:
            found["max_train_steps"] = self.max_train_steps
        if self.hub_model_id is not None:
            found["hub_model_id"] = self.hub_model_id
        return found


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def parse_request(
    body: Any, settings: Settings
) -> tuple[SubmitRequest, str | None, str]:
    """The checked request, its idempotency key, and the fingerprint of the body
    as the client sent it (so that a retry matches whatever the defaults do)."""
    if not isinstance(body, dict):
        raise SubmitRefused(400, "bad_request", "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _invalid(unknown[0], "unknown field")
    config = _required_object(body, "config")
    dataloader = body.get("dataloader")
    if not isinstance(dataloader, list) or not dataloader:
        raise _invalid("dataloader", "must be a non-empty array of datasets")
    if not all(isinstance(entry, dict) for entry in dataloader):
        raise _invalid("dataloader", "every dataset must be an object")
    lycoris = body.get("lycoris")
    if lycoris is not None and not isinstance(lycoris, dict):
        raise _invalid("lycoris", "must be an object")
    for name in ("config", "dataloader", "lycoris"):
        _refuse_secrets(body.get(name), name)
    request = SubmitRequest(
        config=config,
        dataloader=dataloader,
        lycoris=lycoris,
        model=_model(body, "model", settings.replicate.trainer_model),
        version=_version(body.get("version")),
        destination=_destination(body, settings),
        hardware=_hardware(body.get("hardware"), settings),
        dataset=_dataset(body.get("dataset")),
        max_train_steps=_steps(body.get("max_train_steps")),
        hub_model_id=_hub_model(body.get("hub_model_id"), settings),
    )
    key = _idempotency_key(body.get("idempotency_key"))
    sent = {name: value for name, value in body.items() if name != "idempotency_key"}
    return request, key, hashlib.sha256(canonical(sent).encode()).hexdigest()


def _invalid(field: str, problem: str) -> SubmitRefused:
    return SubmitRefused(422, "invalid_request", f"{field}: {problem}", field)


def _required_object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict) or not value:
        raise _invalid(name, "must be a non-empty object")
    return value


def _refuse_secrets(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}"
            if _SECRET_KEY.search(str(key)) and isinstance(item, str) and item:
                raise _invalid(
                    inner,
                    "looks like a credential; credentials go only into the "
                    "trainer's secret inputs (hf_token comes from HF_TOKEN)",
                )
            _refuse_secrets(item, inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_secrets(item, f"{where}[{index}]")


def _model(body: dict[str, Any], name: str, default: str | None) -> str:
    value = body.get(name) or default
    if not isinstance(value, str) or not _MODEL.match(value):
        raise _invalid(name, f"not an owner/name model: {value!r}")
    return value


def _destination(body: dict[str, Any], settings: Settings) -> str:
    if not body.get("destination") and not settings.replicate.destination:
        raise _invalid(
            "destination",
            "required: the owner/model the training creates a version of "
            "(or set the provider setting `destination`)",
        )
    return _model(body, "destination", settings.replicate.destination)


def _version(value: Any) -> str | None:
    if value in (None, "", "latest"):
        return None
    if not isinstance(value, str) or not _VERSION.match(value):
        raise _invalid("version", f'"latest" or a version id, got {value!r}')
    return value


def _hardware(value: Any, settings: Settings) -> str:
    prices = dict(settings.cost.prices_per_hour)
    chosen = value or settings.cost.default_hardware
    if not isinstance(chosen, str) or chosen not in prices:
        raise _invalid("hardware", f"no price for {chosen!r}; known: {sorted(prices)}")
    return str(chosen)


def _dataset(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not Path(value).is_absolute():
        raise _invalid("dataset", f"must be an absolute path, got {value!r}")
    return value


def _steps(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid("max_train_steps", "must be a whole number")
    if not 1 <= value <= limits.MAX_TRAIN_STEPS:
        raise _invalid("max_train_steps", f"must be 1 to {limits.MAX_TRAIN_STEPS}")
    return value


def _hub_model(value: Any, settings: Settings) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _MODEL.match(value):
        raise _invalid("hub_model_id", f"not an owner/name repository: {value!r}")
    if settings.hub.token is None:
        raise _invalid("hub_model_id", "the trainer pushes with HF_TOKEN: set it")
    return value


def _idempotency_key(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _KEY.match(value):
        raise _invalid(
            "idempotency_key",
            f"1 to {limits.IDEMPOTENCY_KEY_MAX} visible ASCII characters",
        )
    return value


# --- rows -----------------------------------------------------------------


def _dicts(
    conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def find(conn: sqlite3.Connection, *, key: str) -> dict[str, Any] | None:
    found = _dicts(conn, "SELECT * FROM submissions WHERE idempotency_key = ?", (key,))
    return found[0] if found else None


def begin(
    conn: sqlite3.Connection, request: SubmitRequest, key: str | None, fingerprint: str
) -> dict[str, Any]:
    """A pending row for `request`: new, or the failed one under the same key
    taken up again. Another request's pending or submitted row under the same
    key raises SubmitRefused."""
    existing = find(conn, key=key) if key else None
    now = time.time()
    if existing is not None:
        check_replay(existing, fingerprint)
        if existing["state"] != "failed":
            raise _in_progress(existing)
        conn.execute(
            "UPDATE submissions SET state = 'pending', error = NULL, updated_at = ?"
            " WHERE id = ?",
            (now, existing["id"]),
        )
        return {**existing, "state": "pending", "error": None}
    row = {
        "id": "sub_" + secrets.token_hex(12),
        "idempotency_key": key,
        "fingerprint": fingerprint,
        "state": "pending",
        "model": request.model,
        "version": request.version,
        "destination": request.destination,
        "hardware": request.hardware,
        "request_json": canonical(asdict(request)),
        "created_at": now,
        "updated_at": now,
    }
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(
        f"INSERT INTO submissions ({columns}) VALUES ({marks})",  # noqa: S608
        tuple(row.values()),
    )
    return row


def check_replay(row: dict[str, Any], fingerprint: str) -> None:
    if row["fingerprint"] != fingerprint:
        raise SubmitRefused(
            422,
            "idempotency_key_reused",
            "idempotency_key: already used for a different request "
            f"(submission {row['id']})",
            "idempotency_key",
        )


def _in_progress(row: dict[str, Any]) -> SubmitRefused:
    return SubmitRefused(
        409,
        "submit_in_progress",
        f"submission {row['id']} with this idempotency_key is still in progress",
    )


def update(conn: sqlite3.Connection, submission_id: str, **values: Any) -> None:
    values["updated_at"] = time.time()
    assignments = ", ".join(f"{name} = ?" for name in values)
    conn.execute(
        f"UPDATE submissions SET {assignments} WHERE id = ?",  # noqa: S608
        (*values.values(), submission_id),
    )


def mark_submitted(
    conn: sqlite3.Connection, row: dict[str, Any], job_id: str, version: str
) -> None:
    update(conn, row["id"], state="submitted", job_id=job_id, version=version)
    conn.execute("UPDATE jobs SET hardware = ? WHERE id = ?", (row["hardware"], job_id))


def orphans(
    conn: sqlite3.Connection, before: float
) -> tuple[list[dict[str, Any]], set[str]]:
    """Pending rows last touched before `before`, and every job id already linked."""
    rows = _dicts(
        conn,
        "SELECT * FROM submissions WHERE state = 'pending' AND updated_at < ?"
        " ORDER BY created_at",
        (before,),
    )
    linked = conn.execute(
        "SELECT job_id FROM submissions WHERE job_id IS NOT NULL"
    ).fetchall()
    return rows, {row[0] for row in linked}
