"""Submit and provider settings under hostile input: nothing the client sends can
make the daemon upload its own files, fill the disk, answer 500 or leave a
submission stuck; each refusal is a precise 4xx."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from tests.test_submit import SUBMIT, request_body, start

PROVIDER = "/api/cloud/providers/replicate"


def submissions(tmp_path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(tmp_path / "data" / "webhookd.sqlite3") as conn:
        return conn.execute("SELECT state, error FROM submissions").fetchall()


async def post_raw(client: Any, path: str, raw: bytes, method: str = "POST") -> Any:
    return await client.request(
        method, path, data=raw, headers={"Content-Type": "application/json"}
    )


async def test_dataset_overlapping_the_daemons_own_folders_is_refused_unrecorded(
    daemon_client, make_settings, fake_replicate, tmp_path
):
    client = await start(daemon_client, make_settings, fake_replicate)
    for folder in (tmp_path / "data", tmp_path):  # the data dir, and a parent of it
        answer = await client.post(SUBMIT, json=request_body(dataset=str(folder)))
        assert answer.status == 422, await answer.text()
        error = (await answer.json())["error"]
        assert error["field"] == "dataset"
        assert "overlaps the daemon's own folder" in error["message"]
    assert submissions(tmp_path) == []
    assert fake_replicate.files == {}


async def test_archive_must_be_a_real_archive_file_not_a_link(
    daemon_client, make_settings, fake_replicate, tmp_path
):
    client = await start(daemon_client, make_settings, fake_replicate)
    secret = tmp_path / "secret.key"
    secret.write_bytes(os.urandom(64))
    link = tmp_path / "innocent.zip"
    link.symlink_to(secret)
    fake = tmp_path / "fake.tar.gz"
    fake.write_bytes(b"plain text, not gzip")
    fifo = tmp_path / "pipe.zip"
    os.mkfifo(fifo)
    expected = {
        link: "is a link",
        fake: "does not hold that kind of archive",
        fifo: "not a regular file",
    }
    for path, reason in expected.items():
        answer = await client.post(SUBMIT, json=request_body(dataset=str(path)))
        assert answer.status == 422, (path, await answer.text())
        assert reason in (await answer.json())["error"]["message"]
    assert fake_replicate.files == {}


async def test_real_archives_are_sent_byte_for_byte(
    daemon_client, make_settings, fake_replicate, tmp_path
):
    client = await start(daemon_client, make_settings, fake_replicate)
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        data = os.urandom(5000)
        info = tarfile.TarInfo("1.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    answer = await client.post(SUBMIT, json=request_body(dataset=str(archive)))
    assert answer.status == 201, await answer.text()
    (upload,) = fake_replicate.files.values()
    assert upload.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert upload.content_type == "application/x-tar"


async def test_link_loops_and_unreadable_folders_are_left_out_and_listed(
    daemon_client, make_settings, fake_replicate, tmp_path
):
    client = await start(daemon_client, make_settings, fake_replicate)
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "ok.png").write_bytes(b"png")
    (folder / "b").symlink_to(folder / "c")
    (folder / "c").symlink_to(folder / "b")
    locked = folder / "locked"
    locked.mkdir()
    (locked / "x.png").write_bytes(b"x")
    locked.chmod(0)
    try:
        answer = await client.post(SUBMIT, json=request_body(dataset=str(folder)))
    finally:
        locked.chmod(0o755)
    assert answer.status == 201, await answer.text()
    skipped = {s["path"]: s["reason"] for s in (await answer.json())["skipped"]}
    assert skipped["b"] == skipped["c"] == "broken link or a link loop"
    if os.geteuid() != 0:  # root reads a mode-0 folder anyway
        assert skipped["locked"] == "not readable"
    with zipfile.ZipFile(next(iter(fake_replicate.files.values())).path) as zf:
        assert "ok.png" in zf.namelist()


async def test_hostile_json_bodies_are_400_never_500(
    daemon_client, make_settings, fake_replicate, tmp_path
):
    client = await start(daemon_client, make_settings, fake_replicate)
    hostile = {
        "NaN": json.dumps(request_body()).replace(
            '"--learning_rate": 0.0001', '"x": NaN'
        ),
        "huge integer": '{"max_train_steps": 1' + "0" * 5000 + "}",
        "deep nesting": "[" * 30_000 + "]" * 30_000,
        "moderate nesting": '{"config": ' + "[" * 100 + "]" * 100 + "}",
        "not UTF-8": b"\xff\xfe{}".decode("latin-1"),
    }
    for path in (SUBMIT, PROVIDER):
        method = "POST" if path == SUBMIT else "PUT"
        for name, text in hostile.items():
            answer = await post_raw(client, path, text.encode("latin-1"), method)
            assert answer.status == 400, (path, name, await answer.text())
            assert (await answer.json())["error"]["code"] == "invalid_json"
    assert submissions(tmp_path) == []


async def test_large_valid_submit_body_is_read_whole(
    daemon_client, make_settings, fake_replicate
):
    client = await start(daemon_client, make_settings, fake_replicate)
    config = {f"--option_{n}": "x" * 100 for n in range(8000)}  # about 1 MB
    answer = await client.post(SUBMIT, json=request_body(config=config))
    assert answer.status == 201, await answer.text()
    (created,) = fake_replicate.created
    assert json.loads(created["input"]["config_json"]) == config


async def test_wrong_types_and_credentials_anywhere_in_the_request_are_422(
    daemon_client, make_settings, fake_replicate
):
    client = await start(daemon_client, make_settings, fake_replicate)
    cases = {
        "hardware": request_body(hardware=["L40S"]),
        "max_train_steps": request_body(max_train_steps=2**80),
        "dataloader": request_body(dataloader=[1]),
        "dataloader[0].aws_secret_access_key": request_body(
            dataloader=[{"id": "x", "aws_secret_access_key": "AKIAEXAMPLE"}]
        ),
        "lycoris.api_token": request_body(lycoris={"api_token": "tok_123"}),
    }
    for field, body in cases.items():
        answer = await client.post(SUBMIT, json=body)
        assert answer.status == 422, (field, await answer.text())
        assert (await answer.json())["error"]["field"] == field
    assert fake_replicate.created == []


async def test_idempotent_retry_still_matches_after_a_default_changes(
    daemon_client, make_settings, fake_replicate
):
    client = await start(
        daemon_client, make_settings, fake_replicate, replicate__destination="me/a"
    )
    body = request_body(destination=None, idempotency_key="same-request")
    first = await client.post(SUBMIT, json=body)
    assert first.status == 201, await first.text()
    assert (await client.put(PROVIDER, json={"destination": "me/b"})).status == 200
    again = await client.post(SUBMIT, json=body)
    assert again.status == 200, await again.text()
    assert (await again.json())["job_id"] == (await first.json())["job_id"]


async def test_provider_settings_refuse_wrong_types_and_oversized_values(
    daemon_client,
):
    client = await daemon_client()
    cases = {
        "destination": {"destination": False},
        "publish.s3_bucket": {"publish": {"s3_bucket": 0}},
        "publish.hub_model_id": {"publish": {"hub_model_id": False}},
        "webhook_allowed_ips": {"webhook_allowed_ips": ["10.0.0.1"] * 2000},
        "prices_per_hour": {"prices_per_hour": {f"gpu{n}": 1 for n in range(300)}},
        "public_url": {"public_url": "https://example.test/" + "a" * 3000},
    }
    for field, body in cases.items():
        answer = await client.put(PROVIDER, json=body)
        assert answer.status == 422, (field, await answer.text())
        assert (await answer.json())["error"]["field"] == field
    huge = {"webhook_allowed_ips": ["10.0.0.1"] * 10_000}
    answer = await client.put(PROVIDER, json=huge)
    assert answer.status == 413
    assert (await (await client.get(PROVIDER)).json())["overridden"] == []
