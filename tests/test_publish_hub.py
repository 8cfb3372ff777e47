"""The Hub publisher, with the real huggingface_hub client against a loopback Hub."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import traceback
from pathlib import Path

import pytest

from daemon.deliver.errors import DeliveryError, Permanent, Retryable
from daemon.deliver.hub import HubPublisher
from daemon.deliver.publish import LocalFile, PublishRequest
from daemon.sensitive import Secret
from daemon.settings import HubSettings
from tests.fakes.hub import READ_TOKEN, TOKEN, FakeHub, enable_xet

REPO = "alice/outputs"
BIG_BYTES = 15 * 1024 * 1024


def settings(token: str | None = TOKEN, *, private: bool = True) -> HubSettings:
    secret = Secret(token) if token is not None else None
    return HubSettings(model_id=REPO, private=private, concurrency=1, token=secret)


def job(folder: Path, job_id: str, contents: dict[str, bytes]) -> PublishRequest:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in contents.items():
        path = folder / name
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        files.append(LocalFile(name, path, len(data), digest))
    return PublishRequest(job_id, tuple(files), "alice/trainer", "v1hash")


def small_job(tmp_path: Path, job_id: str = "job1") -> PublishRequest:
    contents = {"config.json": b'{"rank": 16}\n', f"{job_id}.bin": os.urandom(2048)}
    return job(tmp_path / job_id, job_id, contents)


async def failure(publisher: HubPublisher, request: PublishRequest) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await publisher(request)
    return caught.value


async def test_missing_repo_is_created_private_and_gets_one_commit_of_all_files(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    contents = {
        "weights.safetensors": os.urandom(BIG_BYTES),
        "adapter.bin": os.urandom(4096),
        "config.json": b'{"rank": 16}\n',
    }
    request = job(tmp_path / "out", "r8x2k", contents)

    result = await HubPublisher(settings())(request)

    repo = fake_hub.repos[REPO]
    assert repo.private is True
    [commit] = repo.commits
    assert commit.message == "Add outputs of Replicate job r8x2k"
    assert "alice/trainer" in commit.description
    assert set(commit.files) == set(contents)
    for local in request.files:
        stored = commit.files[local.name]
        assert stored.data is not None
        assert hashlib.sha256(stored.data).hexdigest() == local.sha256 == stored.sha256
        assert stored.size == local.size
    assert commit.files["weights.safetensors"].lfs
    assert commit.files["adapter.bin"].lfs
    assert not commit.files["config.json"].lfs
    assert fake_hub.calls_to(REPO).count("commit") == 1
    assert [name for name, _ in fake_hub.calls].count("lfs_upload") == 2
    assert result == {
        "repo": REPO,
        "commit_url": f"{fake_hub.url}/{REPO}/commit/{commit.oid}",
        "commit_oid": commit.oid,
        "files": list(contents),
    }


async def test_repo_is_created_public_when_private_is_off(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    await HubPublisher(settings(private=False))(small_job(tmp_path))

    assert fake_hub.repos[REPO].private is False


async def test_existing_repo_is_reused_as_it_is(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    existing = fake_hub.add_repo(REPO, private=False)

    result = await HubPublisher(settings())(small_job(tmp_path))

    assert list(fake_hub.repos) == [REPO]
    assert fake_hub.repos[REPO] is existing
    assert existing.private is False
    assert [commit.oid for commit in existing.commits] == [result["commit_oid"]]


async def test_publishing_the_same_files_again_makes_no_second_commit(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    publisher = HubPublisher(settings())
    request = small_job(tmp_path)

    first = await publisher(request)
    second = await publisher(request)

    assert len(fake_hub.repos[REPO].commits) == 1
    assert second["commit_oid"] == first["commit_oid"]
    assert second["files"] == first["files"]


async def test_concurrent_publishes_to_one_repo_commit_one_after_the_other(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    publisher = HubPublisher(settings())
    # Slow preuploads: without the lock both jobs would be past it before a commit.
    fake_hub.fail("preupload", times=2, delay_s=0.3)

    results = await asyncio.gather(
        publisher(small_job(tmp_path, "job1")), publisher(small_job(tmp_path, "job2"))
    )

    steps = [s for s in fake_hub.calls_to(REPO) if s in ("preupload", "commit")]
    assert steps == ["preupload", "commit", "preupload", "commit"]
    commits = fake_hub.repos[REPO].commits
    assert {c.oid for c in commits} == {r["commit_oid"] for r in results}
    assert {c.message.rsplit(" ", 1)[1] for c in commits} == {"job1", "job2"}


async def test_rate_limit_is_retryable_after_the_servers_wait(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.fail("commit", 429, retry_after="17")

    error = await failure(HubPublisher(settings()), small_job(tmp_path))

    assert isinstance(error, Retryable)
    assert error.code == "http_429"
    assert error.retry_after_s == 17.0
    assert fake_hub.repos[REPO].commits == []


async def test_server_error_is_retryable(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.fail("create", 503)

    error = await failure(HubPublisher(settings()), small_job(tmp_path))

    assert isinstance(error, Retryable)
    assert error.code == "http_503"
    assert error.retry_after_s is None
    assert REPO not in fake_hub.repos


async def test_precondition_failed_on_commit_is_retryable(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.fail("commit", 412, message="A commit has happened since")

    error = await failure(HubPublisher(settings()), small_job(tmp_path))

    assert isinstance(error, Retryable)
    assert error.code == "http_412"
    assert "A commit has happened since" in error.message


async def test_single_server_error_during_upload_is_absorbed_by_the_client(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.fail("preupload", 503, retry_after="0")

    await HubPublisher(settings())(small_job(tmp_path))

    assert fake_hub.calls_to(REPO).count("preupload") == 2
    assert len(fake_hub.repos[REPO].commits) == 1


async def test_timeout_is_retryable_and_the_retry_does_not_commit_twice(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    publisher = HubPublisher(settings(), timeout_s=0.5)
    request = small_job(tmp_path)
    fake_hub.fail("commit", delay_s=1.5)  # the commit lands after the client gave up

    error = await failure(publisher, request)
    assert isinstance(error, Retryable)
    assert error.code == "hub_timeout"
    async with asyncio.timeout(5):
        while not fake_hub.repos[REPO].commits:
            await asyncio.sleep(0.05)

    result = await publisher(request)
    [commit] = fake_hub.repos[REPO].commits
    assert result["commit_oid"] == commit.oid


async def test_refused_connection_is_retryable(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    publisher = HubPublisher(settings(), endpoint=closed)

    error = await failure(publisher, small_job(tmp_path))

    assert isinstance(error, Retryable)
    assert error.code == "hub_unreachable"


async def test_rejected_token_is_permanent(fake_hub: FakeHub, tmp_path: Path) -> None:
    wrong = "hf_wrongToken9876543210abcdef"

    error = await failure(HubPublisher(settings(wrong)), small_job(tmp_path))

    assert isinstance(error, Permanent)
    assert error.code == "http_401"
    assert "HF_TOKEN was rejected" in error.message
    assert wrong not in error.message
    assert REPO not in fake_hub.repos


async def test_token_without_write_access_is_permanent(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    error = await failure(HubPublisher(settings(READ_TOKEN)), small_job(tmp_path))

    assert isinstance(error, Permanent)
    assert error.code == "http_403"
    assert "creating alice/outputs" in error.message


async def test_other_client_error_is_permanent_and_masks_an_echoed_token(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.fail("commit", 422, message=f"token {TOKEN} cannot commit this")

    error = await failure(HubPublisher(settings()), small_job(tmp_path))

    assert isinstance(error, Permanent)
    assert error.code == "http_422"
    assert "cannot commit this" in error.message
    assert TOKEN not in error.message


async def test_missing_token_is_permanent_without_calling_the_hub(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    error = await failure(HubPublisher(settings(None)), small_job(tmp_path))

    assert isinstance(error, Permanent)
    assert error.code == "hub_token_missing"
    assert "HF_TOKEN not set" in error.message
    assert fake_hub.calls == []


async def test_job_without_files_is_permanent_without_calling_the_hub(
    fake_hub: FakeHub,
) -> None:
    request = PublishRequest("empty", (), None, None)

    error = await failure(HubPublisher(settings()), request)

    assert isinstance(error, Permanent)
    assert error.code == "hub_no_files"
    assert fake_hub.calls == []


async def test_vanished_local_file_is_permanent(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    request = small_job(tmp_path)
    request.files[0].path.unlink()

    error = await failure(HubPublisher(settings()), request)

    assert isinstance(error, Permanent)
    assert error.code == "local_file"
    assert fake_hub.calls_to(REPO).count("commit") == 0


async def test_token_never_reaches_logs_reprs_or_errors(
    fake_hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    publisher = HubPublisher(settings())
    await publisher(small_job(tmp_path, "ok"))
    fake_hub.fail("commit", 429, retry_after="3")
    fake_hub.fail("preupload", 503, retry_after="0")

    error = await failure(publisher, small_job(tmp_path, "late"))

    shown = [record.getMessage() for record in caplog.records]
    shown += [repr(publisher), repr(settings()), str(error), repr(error)]
    shown += traceback.format_exception(error)
    assert caplog.records
    assert not [text for text in shown if TOKEN in text]


async def test_each_commit_logs_one_info_line_with_timing(
    fake_hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.deliver.hub")

    result = await HubPublisher(settings())(small_job(tmp_path, "j7"))

    lines = [r.getMessage() for r in caplog.records if r.name == "daemon.deliver.hub"]
    oid = result["commit_oid"][:12]
    pattern = rf"hub commit {oid} to {REPO}: job j7, 2 files, 2061 bytes, \d+\.\d\d s"
    assert len(lines) == 1
    assert re.fullmatch(pattern, lines[0])


async def test_default_xet_upload_path_completes_a_commit(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable_xet(monkeypatch)
    contents = {"weights.bin": os.urandom(2 * 1024 * 1024), "config.json": b"{}\n"}
    request = job(tmp_path / "xet", "xet1", contents)

    result = await HubPublisher(settings())(request)

    [commit] = fake_hub.repos[REPO].commits
    assert result["commit_oid"] == commit.oid
    weights = commit.files["weights.bin"]
    assert weights.lfs
    assert weights.sha256 == request.files[0].sha256
    assert weights.size == request.files[0].size
    assert commit.files["config.json"].data == b"{}\n"
    assert fake_hub.xorb_bytes > 0
    assert fake_hub.shards >= 1
    assert "lfs_batch" not in fake_hub.calls_to(REPO)
