"""The S3 publisher against moto's real S3 server (and a scripted one) on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import traceback
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import pytest
from aiohttp.test_utils import TestServer
from botocore.config import Config  # type: ignore[import-untyped]

from daemon import limits
from daemon.config import S3Settings
from daemon.deliver.errors import Permanent, Retryable
from daemon.deliver.publish import LocalFile, PublishRequest
from daemon.deliver.s3 import S3Publisher
from daemon.sensitive import Secret
from tests.fakes.s3 import TEST_KEY_ID, TEST_SECRET_KEY, ScriptedS3

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part, so a few MiB already make a multipart upload
BUCKET = "webhookd-outputs"
SETTINGS_KEY_ID = "AKIDFROMSETTINGS0001"
SETTINGS_SECRET = "settings-secret-access-key-value"
ServerFactory = Callable[..., Any]


def s3_settings(endpoint: str | None, **changes: Any) -> S3Settings:
    base = S3Settings(
        bucket=BUCKET,
        prefix="",
        key_template="{job_id}/{name}",
        endpoint_url=endpoint,
        region=None,
        access_key_id=None,
        secret_access_key=None,
        checksum="when_supported",
        part_size_bytes=PART,
        concurrency=2,
    )
    return replace(base, **changes)


def write_file(directory: Path, name: str, size: int) -> LocalFile:
    """A file of pseudo-random bytes, written and hashed one MiB at a time."""
    path = directory / name
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for offset in range(0, size, MiB):
            block = os.urandom(min(MiB, size - offset))
            digest.update(block)
            handle.write(block)
    return LocalFile(name=name, path=path, size=size, sha256=digest.hexdigest())


def request(*files: LocalFile, job_id: str = "job-abc123") -> PublishRequest:
    return PublishRequest(job_id=job_id, files=files, model=None, version=None)


@asynccontextmanager
async def inspector(endpoint: str) -> AsyncIterator[Any]:
    """The test's own client, for creating buckets and reading back objects."""
    config = Config(s3={"addressing_style": "path"})
    session = aioboto3.Session()
    async with session.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config
    ) as client:
        yield client


async def stored_sha256(client: Any, key: str) -> str:
    reply = await client.get_object(Bucket=BUCKET, Key=key)
    digest = hashlib.sha256()
    async for chunk in reply["Body"].iter_chunks(MiB):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
async def store(moto_s3: str) -> str:
    """moto's endpoint, with the test bucket created."""
    async with inspector(moto_s3) as client:
        await client.create_bucket(Bucket=BUCKET)
    return moto_s3


async def scripted_endpoint(aiohttp_server: ServerFactory, fake: ScriptedS3) -> str:
    server: TestServer = await aiohttp_server(fake.app())
    return f"http://127.0.0.1:{server.port}"


async def test_large_file_arrives_by_multipart_with_identical_bytes(
    store: str, tmp_path: Path
) -> None:
    weights = write_file(tmp_path, "weights.safetensors", 20 * MiB)

    result = await S3Publisher(s3_settings(store))(request(weights))

    key = "job-abc123/weights.safetensors"
    assert result == {"bucket": BUCKET, "keys": [key], "endpoint": store}
    async with inspector(store) as client:
        head = await client.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == 20 * MiB
        assert head["ETag"].strip('"').endswith("-4")  # four 5 MiB parts
        assert head["Metadata"] == {"sha256": weights.sha256}
        assert await stored_sha256(client, key) == weights.sha256


async def test_small_files_are_stored_whole_in_one_put(
    store: str, tmp_path: Path
) -> None:
    files = [write_file(tmp_path, "config.json", 1234), write_file(tmp_path, "e", 0)]

    result = await S3Publisher(s3_settings(store))(request(*files))

    assert result["keys"] == ["job-abc123/config.json", "job-abc123/e"]
    async with inspector(store) as client:
        for file, key in zip(files, result["keys"], strict=True):
            head = await client.head_object(Bucket=BUCKET, Key=key)
            assert head["ContentLength"] == file.size
            assert "-" not in head["ETag"]
            assert await stored_sha256(client, key) == file.sha256


async def test_key_template_places_objects_under_the_job(
    store: str, tmp_path: Path
) -> None:
    settings = s3_settings(store, key_template="runs/{job_id}/out/{name}")
    files = [write_file(tmp_path, "a.bin", 10), write_file(tmp_path, "b.bin", 20)]

    result = await S3Publisher(settings)(request(*files, job_id="r8abc"))

    expected = ["runs/r8abc/out/a.bin", "runs/r8abc/out/b.bin"]
    assert result["keys"] == expected
    async with inspector(store) as client:
        listing = await client.list_objects_v2(Bucket=BUCKET)
    assert sorted(item["Key"] for item in listing["Contents"]) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("config.json", "application/json"),
        ("weights.safetensors", "application/octet-stream"),
        ("lora.tar.gz", "application/gzip"),
        ("README.md", "text/markdown"),
    ],
)
async def test_content_type_is_guessed_from_the_file_name(
    store: str, tmp_path: Path, name: str, expected: str
) -> None:
    file = write_file(tmp_path, name, 100)

    result = await S3Publisher(s3_settings(store))(request(file))

    async with inspector(store) as client:
        head = await client.head_object(Bucket=BUCKET, Key=result["keys"][0])
    assert head["ContentType"] == expected


async def test_custom_endpoint_host_uses_path_style_addressing(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A shared AWS config asking for virtual hosts must not move the bucket into
    # the host name; only "localhost" may be resolved here, and to 127.0.0.1.
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[default]\ns3 =\n    addressing_style = virtual\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    resolved: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(str(host))
        if host != "localhost":
            raise socket.gaierror(socket.EAI_NONAME, f"test resolves no {host}")
        return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    endpoint = store.replace("127.0.0.1", "localhost")
    file = write_file(tmp_path, "weights.bin", 7 * MiB)

    result = await S3Publisher(s3_settings(endpoint))(request(file))

    assert set(resolved) == {"localhost"}
    async with inspector(store) as client:
        assert await stored_sha256(client, result["keys"][0]) == file.sha256


@pytest.mark.parametrize("size", [1000, 12 * MiB])
async def test_checksum_when_required_stores_the_bytes_without_a_checksum(
    store: str, tmp_path: Path, size: int
) -> None:
    file = write_file(tmp_path, "weights.bin", size)

    settings = s3_settings(store, checksum="when_required")
    result = await S3Publisher(settings)(request(file))

    async with inspector(store) as client:
        key = result["keys"][0]
        head = await client.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        assert not [name for name in head if name.startswith("Checksum")]
        assert await stored_sha256(client, key) == file.sha256


async def test_checksum_when_supported_sends_a_crc32(
    store: str, tmp_path: Path
) -> None:
    file = write_file(tmp_path, "config.json", 1000)

    result = await S3Publisher(s3_settings(store))(request(file))

    async with inspector(store) as client:
        key = result["keys"][0]
        head = await client.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert "ChecksumCRC32" in head


async def test_publishing_twice_overwrites_the_same_keys(
    store: str, tmp_path: Path
) -> None:
    files = [write_file(tmp_path, "big.bin", 11 * MiB), write_file(tmp_path, "s", 9)]
    publisher = S3Publisher(s3_settings(store))

    first = await publisher(request(*files))
    second = await publisher(request(*files))

    assert first == second
    async with inspector(store) as client:
        listing = await client.list_objects_v2(Bucket=BUCKET)
        assert sorted(item["Key"] for item in listing["Contents"]) == first["keys"]
        uploads = await client.list_multipart_uploads(Bucket=BUCKET)
        assert not uploads.get("Uploads")
        for file, key in zip(files, first["keys"], strict=True):
            assert await stored_sha256(client, key) == file.sha256


async def test_missing_bucket_is_permanent(moto_s3: str, tmp_path: Path) -> None:
    file = write_file(tmp_path, "weights.bin", 100)

    with pytest.raises(Permanent) as failure:
        await S3Publisher(s3_settings(moto_s3))(request(file))

    assert failure.value.code == "s3_NoSuchBucket"
    assert "bucket does not exist" in failure.value.message
    assert BUCKET in failure.value.message


async def test_failed_multipart_upload_is_aborted(store: str, tmp_path: Path) -> None:
    # The file shrank after it was recorded: the upload must not be completed.
    actual = write_file(tmp_path, "weights.bin", 11 * MiB)
    recorded = replace(actual, size=12 * MiB)

    with pytest.raises(Permanent) as failure:
        await S3Publisher(s3_settings(store))(request(recorded))

    assert failure.value.code == "local_file"
    async with inspector(store) as client:
        uploads = await client.list_multipart_uploads(Bucket=BUCKET)
        listing = await client.list_objects_v2(Bucket=BUCKET)
    assert not uploads.get("Uploads")
    assert not listing.get("Contents")


async def test_missing_local_file_is_permanent(store: str, tmp_path: Path) -> None:
    gone = LocalFile(name="gone.bin", path=tmp_path / "gone.bin", size=5, sha256="0")

    with pytest.raises(Permanent) as failure:
        await S3Publisher(s3_settings(store))(request(gone))

    assert failure.value.code == "local_file"


async def test_upload_memory_is_bounded_by_the_parts_in_flight(
    moto_s3_process: str, tmp_path: Path
) -> None:
    # moto runs in another process here, so only the publisher's memory is traced.
    async with inspector(moto_s3_process) as client:
        await client.create_bucket(Bucket=BUCKET)
    file = write_file(tmp_path, "weights.bin", 50 * MiB)
    publisher = S3Publisher(s3_settings(moto_s3_process))
    # The first call loads botocore's service models (~10 MiB, once per publisher).
    await publisher(request(write_file(tmp_path, "warm-up.txt", 10), job_id="warm"))

    tracemalloc.start()
    try:
        result = await publisher(request(file))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # botocore holds about two copies of each part in flight; the file never counts.
    bound = (2 * limits.S3_PARTS_IN_FLIGHT + 1) * PART
    assert peak < bound, f"peak {peak / MiB:.1f} MiB for a 50 MiB file"
    async with inspector(moto_s3_process) as client:
        assert await stored_sha256(client, result["keys"][0]) == file.sha256


async def test_unreachable_endpoint_is_retryable(
    s3_environment: None, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    file = write_file(tmp_path, "weights.bin", 100)

    with pytest.raises(Retryable) as failure:
        await S3Publisher(s3_settings(f"http://127.0.0.1:{port}"))(request(file))

    assert failure.value.code == "s3_connection"


async def test_slow_down_is_retryable(
    s3_environment: None, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    fake = ScriptedS3(status=503, code="SlowDown")
    endpoint = await scripted_endpoint(aiohttp_server, fake)
    file = write_file(tmp_path, "weights.bin", 100)

    with pytest.raises(Retryable) as failure:
        await S3Publisher(s3_settings(endpoint))(request(file))

    assert failure.value.code == "s3_SlowDown"
    assert len(fake.requests) == 3  # botocore's own tries, then the queue's turn


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("AccessDenied", "access denied"),
        ("InvalidAccessKeyId", "does not know this access key id"),
        ("SignatureDoesNotMatch", "secret access key does not match"),
    ],
)
async def test_refused_credentials_are_permanent_and_stay_unnamed(
    s3_environment: None,
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    code: str,
    hint: str,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="daemon")
    fake = ScriptedS3(status=403, code=code)
    endpoint = await scripted_endpoint(aiohttp_server, fake)
    settings = s3_settings(
        endpoint,
        access_key_id=Secret(SETTINGS_KEY_ID),
        secret_access_key=Secret(SETTINGS_SECRET),
    )
    file = write_file(tmp_path, "weights.bin", 100)

    with pytest.raises(Permanent) as failure:
        await S3Publisher(settings)(request(file))

    assert failure.value.code == f"s3_{code}"
    assert hint in failure.value.message
    assert len(fake.requests) == 1
    shown = [record.getMessage() for record in caplog.records]
    shown += [repr(failure.value), "".join(traceback.format_exception(failure.value))]
    for secret in (SETTINGS_KEY_ID, SETTINGS_SECRET):
        assert not [text for text in shown if secret in text]


async def test_object_shorter_than_the_file_is_retryable(
    s3_environment: None, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    fake = ScriptedS3(head_length=99)
    endpoint = await scripted_endpoint(aiohttp_server, fake)
    file = write_file(tmp_path, "weights.bin", 100)

    with pytest.raises(Retryable) as failure:
        await S3Publisher(s3_settings(endpoint))(request(file))

    assert failure.value.code == "s3_incomplete"
    assert [method for method, _, _ in fake.requests] == ["PUT", "HEAD"]


async def test_settings_credentials_sign_requests_instead_of_environment(
    s3_environment: None, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    fake = ScriptedS3(head_length=100)
    endpoint = await scripted_endpoint(aiohttp_server, fake)
    settings = s3_settings(
        endpoint,
        access_key_id=Secret(SETTINGS_KEY_ID),
        secret_access_key=Secret(SETTINGS_SECRET),
    )
    file = write_file(tmp_path, "weights.bin", 100)

    await S3Publisher(settings)(request(file))
    await S3Publisher(s3_settings(endpoint))(request(file))

    signed = [headers["Authorization"] for _, _, headers in fake.requests]
    assert all(f"Credential={SETTINGS_KEY_ID}/" in line for line in signed[:2])
    assert all(f"Credential={TEST_KEY_ID}/" in line for line in signed[2:])
    assert len(signed) == 4


async def test_credentials_never_appear_in_logs_errors_or_reprs(
    moto_s3: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="daemon")
    settings = s3_settings(
        moto_s3,
        access_key_id=Secret(SETTINGS_KEY_ID),
        secret_access_key=Secret(SETTINGS_SECRET),
    )
    publisher = S3Publisher(settings)
    file = write_file(tmp_path, "weights.bin", 100)

    with pytest.raises(Permanent) as failure:  # no bucket yet
        await publisher(request(file))
    async with inspector(moto_s3) as client:
        await client.create_bucket(Bucket=BUCKET)
    await publisher(request(file))

    shown = [record.getMessage() for record in caplog.records]
    shown += [str(failure.value), repr(failure.value), repr(publisher)]
    for secret in (SETTINGS_KEY_ID, SETTINGS_SECRET, TEST_KEY_ID, TEST_SECRET_KEY):
        assert not [text for text in shown if secret in text]


async def test_each_object_logs_one_info_line_with_size_and_time(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.deliver.s3")
    files = [write_file(tmp_path, "big.bin", 6 * MiB), write_file(tmp_path, "a", 5)]

    await S3Publisher(s3_settings(store))(request(*files))

    lines = [r.getMessage() for r in caplog.records if r.name == "daemon.deliver.s3"]
    assert len(lines) == 2
    assert lines[0].startswith(f"s3 put s3://{BUCKET}/job-abc123/big.bin: ")
    assert f"{6 * MiB} bytes, parts=2, " in lines[0]
    assert lines[1].startswith(f"s3 put s3://{BUCKET}/job-abc123/a: 5 bytes, parts=1")


def test_publisher_without_a_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket"):
        S3Publisher(s3_settings("http://127.0.0.1:9", bucket=None))


def test_repr_names_bucket_and_endpoint_but_no_keys() -> None:
    settings = s3_settings(
        None,
        access_key_id=Secret(SETTINGS_KEY_ID),
        secret_access_key=Secret(SETTINGS_SECRET),
    )

    shown = repr(S3Publisher(settings))

    assert shown == f"S3Publisher(bucket={BUCKET!r}, endpoint='aws')"


async def test_many_files_publish_concurrently_without_interference(
    store: str, tmp_path: Path
) -> None:
    publisher = S3Publisher(s3_settings(store))
    jobs = [
        request(write_file(tmp_path, f"w{n}.bin", 6 * MiB), job_id=f"job-{n}")
        for n in range(3)
    ]

    results = await asyncio.gather(*(publisher(job) for job in jobs))

    async with inspector(store) as client:
        for job, result in zip(jobs, results, strict=True):
            key = result["keys"][0]
            assert await stored_sha256(client, key) == job.files[0].sha256
